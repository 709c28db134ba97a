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

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            problems.append(f"{path}: another file with stem '{path.stem}' exists ({files[path.stem].name})")
        files[path.stem] = path
    return files, problems


def _read_spacing(root: Path) -> dict[str, tuple[float, float]]:
    if (root / "spacing.json").is_file():
        raw = read_json(root / "spacing.json")
        return {
            k: (float(v), float(v)) if np.isscalar(v) else (float(v[0]), float(v[1])) for k, v in raw.items()
        }
    if (root / "meta.json").is_file():
        items = read_json(root / "meta.json").get("items", {})
        return {
            k: (float(v["pixel_size_mm"]),) * 2
            for k, v in items.items()
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
