"""Dataset folders: finding the image/mask pairs of a folder, with its split and pixel spacing.

Two layouts are understood:

- ``images/`` + ``masks/`` with files matched by stem, and an optional ``split.json``
  (``{"train": [...], "val": [...], "test": [...]}`` of stems) and ``instances/`` (instance maps,
  0 = background and one value per object, which prompted evaluation scores object by object);
- the authors' layout: ``image_1024/`` + ``mask_1024/`` and ``<name>_data_split.json`` with
  ``train`` / ``valid`` / ``test`` lists.

Optional physical pixel spacing (for distances in mm) comes from ``spacing.json``
(``{stem: s}`` or ``{stem: [row, col]}``) or from a ``meta.json`` whose ``items.<stem>`` carry
``pixel_size_mm`` (the layout of the example data sets). Imports no PyTorch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .io import (
    IMAGE_SUFFIXES,
    DataError,
    raise_for_problems,
)
from .splits import read_json, read_split


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    mask: Path | None
    instances: Path | None = None  # its instance map in ``instances/``, where the folder has one


@dataclass
class DatasetIndex:
    """What a dataset folder holds: image/mask pairs by stem, its split and pixel spacing."""

    root: Path
    layout: str
    samples: dict[str, Sample]
    split: dict[str, list[str]] | None = None
    split_file: Path | None = None
    spacing: dict[str, tuple[float, float]] = field(default_factory=dict)

    def subset(self, stems: Iterable[str]) -> list[Sample]:
        stems = list(stems)
        missing = [s for s in stems if s not in self.samples]
        if missing:
            raise DataError(f"{self.root}: {len(missing)} case(s) of the split are not in the folder: "
                            + ", ".join(missing[:10]))  # fmt: skip
        return [self.samples[s] for s in stems]


def _files_by_stem(folder: Path) -> tuple[dict[str, Path], list[str]]:
    files: dict[str, Path] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_symlink() and not path.exists():  # kept as its stem's file: its partner matches
            problems.append(f"{path}: a broken symbolic link (to {os.readlink(path)})")
        elif not path.is_file():
            continue
        if path.stem in files:
            problems.append(f"{path}: another file with stem '{path.stem}' exists ({files[path.stem].name})")
        files[path.stem] = path
    return files, problems


def _spacing_value(value: object, where: str) -> tuple[float, float]:
    """A pixel spacing given as one number or [row, col], each finite and positive."""
    pair = [value, value] if isinstance(value, int | float) and not isinstance(value, bool) else value
    valid = (
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
        and all(math.isfinite(v) and v > 0 for v in pair)
    )
    if not valid:
        raise DataError(f"{where}: a spacing must be a positive number or [row, col] of them, got {value!r}")
    return float(pair[0]), float(pair[1])


def _read_spacing(root: Path) -> dict[str, tuple[float, float]]:
    """Pixel spacing per stem from ``spacing.json`` or ``meta.json`` (formats in the module
    docstring); a file of another shape is refused by name."""
    if (root / "spacing.json").is_file():
        path = root / "spacing.json"
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise DataError(f'{path}: expected {{"<stem>": spacing, ...}}, got a JSON {type(raw).__name__}')
        return {stem: _spacing_value(v, f"{path}: {stem}") for stem, v in raw.items()}
    if (root / "meta.json").is_file():
        path = root / "meta.json"
        meta = read_json(path)
        items = meta.get("items", {}) if isinstance(meta, dict) else None
        if not isinstance(items, dict):
            raise DataError(f'{path}: expected {{"items": {{"<stem>": {{...}}}}}}')
        return {
            stem: _spacing_value(v["pixel_size_mm"], f"{path}: items.{stem}.pixel_size_mm")
            for stem, v in items.items()
            if isinstance(v, dict) and "pixel_size_mm" in v
        }
    return {}


def find_dataset(root: str | Path, require_masks: bool = True) -> DatasetIndex:
    """Index a dataset folder. Raises :class:`DataError` naming every unmatched file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / "images").is_dir():
        layout, image_dir, mask_dir = "folder", root / "images", root / "masks"
        split_file = root / "split.json" if (root / "split.json").is_file() else None
    elif (root / "image_1024").is_dir():
        layout, image_dir, mask_dir = "authors", root / "image_1024", root / "mask_1024"
        candidates = sorted(root.glob("*data_split.json"))
        split_file = candidates[0] if candidates else None
    else:
        raise DataError(f"{root}: expected images/ and masks/ (or the authors' image_1024/ and mask_1024/)")

    images, problems = _files_by_stem(image_dir)
    if not images:
        problems.append(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks: dict[str, Path] = {}
    if mask_dir.is_dir():
        masks, mask_problems = _files_by_stem(mask_dir)
        problems += mask_problems
    elif require_masks:
        problems.append(f"{mask_dir}: mask folder not found")
    if require_masks:
        problems += [
            f"{images[s]}: no mask with stem '{s}' in {mask_dir}" for s in sorted(set(images) - set(masks))
        ]
        problems += [
            f"{masks[s]}: no image with stem '{s}' in {image_dir}" for s in sorted(set(masks) - set(images))
        ]
    raise_for_problems(problems, f"problems in dataset {root}")

    instance_dir = root / "instances"
    instances = _files_by_stem(instance_dir)[0] if layout == "folder" and instance_dir.is_dir() else {}
    samples = {s: Sample(s, p, masks.get(s), instances.get(s)) for s, p in images.items()}
    index = DatasetIndex(root, layout, samples, spacing=_read_spacing(root))
    if split_file is not None:
        index.split = read_split(split_file, samples, authors=layout == "authors")
        index.split_file = split_file
    return index
