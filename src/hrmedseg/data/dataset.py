"""Dataset folders: discovery, splits, validation, and the torch ``Dataset``.

Two layouts are understood:

- ``images/`` + ``masks/`` with files matched by stem, and an optional ``split.json``
  (``{"train": [...], "val": [...], "test": [...]}`` of stems) and ``instances/`` (instance maps,
  0 = background and one value per object, which prompted evaluation scores object by object);
- the authors' layout: ``image_1024/`` + ``mask_1024/`` and ``<name>_data_split.json`` with
  ``train`` / ``valid`` / ``test`` lists.

Optional physical pixel spacing (for distances in mm) comes from ``spacing.json``
(``{stem: s}`` or ``{stem: [row, col]}``) or from a ``meta.json`` whose ``items.<stem>`` carry
``pixel_size_mm`` (the layout of the example data sets).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import InputNotFoundError
from .io import (
    IMAGE_SUFFIXES,
    DataError,
    current_pixel_limit,
    is_lossy,
    pixel_limit,
    raise_for_problems,
    read_image,
    read_mask,
)
from .transforms import AugmentConfig, augment, build_augmentation, image_to_tensor, mask_to_tensor, normalize

SPLITS = ("train", "val", "test")


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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable JSON ({err})") from None


def read_split(
    path: Path, known: Iterable[str], authors: bool = False, what: str = "image"
) -> dict[str, list[str]]:
    """A split file's train/val/test lists of stems, every stem among ``known`` (else a
    :class:`DataError` naming the first ten, with no ``what``)."""
    split = _read_split(path, authors)
    unknown = sorted({s for stems in split.values() for s in stems} - set(known))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DataError(f"{path}: {len(unknown)} stem(s) with no {what}: {shown}")
    return split


def read_split_file(path: str | Path, known: Iterable[str], what: str = "image") -> dict[str, list[str]]:
    """:func:`read_split` of a split file the user names (e.g. a training run's ``split.json``)
    in place of the dataset's own; a missing file is named as such."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: split file not found")
    return read_split(path, known, what=what)


def _read_split(path: Path, authors: bool) -> dict[str, list[str]]:
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a split must be an object of lists of stems")
    rename = {"valid": "val"} if authors else {}
    not_lists = sorted(k for k, v in raw.items() if not isinstance(v, list))
    if not_lists:
        raise DataError(f"{path}: split(s) {not_lists} must each be a list of stems")
    split = {rename.get(k, k): [Path(str(s)).stem if authors else str(s) for s in v] for k, v in raw.items()}
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise DataError(f"{path}: unknown split name(s) {unknown}; expected {list(SPLITS)}")
    # A case in two splits would, e.g., put a training case into the test score.
    seen: dict[str, str] = {}
    shared = []
    for name, stems in split.items():
        for stem in dict.fromkeys(stems):
            if stem in seen:
                shared.append(f"{stem} ({seen[stem]} and {name})")
            seen.setdefault(stem, name)
    if shared:
        shown = ", ".join(shared[:10]) + (f" and {len(shared) - 10} more" if len(shared) > 10 else "")
        raise DataError(f"{path}: {len(shared)} case(s) in more than one split: {shown}")
    return split


def _read_spacing(root: Path) -> dict[str, tuple[float, float]]:
    if (root / "spacing.json").is_file():
        raw = _read_json(root / "spacing.json")
        return {
            k: (float(v), float(v)) if np.isscalar(v) else (float(v[0]), float(v[1])) for k, v in raw.items()
        }
    if (root / "meta.json").is_file():
        items = _read_json(root / "meta.json").get("items", {})
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


def make_split(
    stems: Iterable[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict:
    """A deterministic random train/val/test split (70/10/20 by default) of the given stems."""
    stems = sorted(stems)
    random.Random(seed).shuffle(stems)
    n_train = round(fractions[0] * len(stems))
    n_val = round(fractions[1] * len(stems))
    if len(stems) >= 3:  # every part gets at least one case
        n_train = min(max(n_train, 1), len(stems) - 2)
        n_val = min(max(n_val, 1), len(stems) - n_train - 1)
    return {
        "train": stems[:n_train],
        "val": stems[n_train : n_train + n_val],
        "test": stems[n_train + n_val :],
    }


def cross_validation_split(
    split: dict[str, list[str]],
    folds: int,
    fold: int,
    *,
    seed: int,
    group: Callable[[str], str] = lambda stem: stem,
) -> dict[str, list[str]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation over ``split``'s train and val cases:
    their groups (``group(stem)``; the scan of a volume's slice, so a scan stays in one fold) are
    shuffled with ``seed`` and dealt into ``folds`` parts; part ``fold`` validates, the rest
    trains. The test cases stay as they are. The same seed gives every fold the same partition."""
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(
            f"cross-validation needs folds >= 2 and 0 <= fold < folds, got fold {fold} of {folds}"
        )
    pool = [*split.get("train", []), *split.get("val", [])]
    groups = sorted({group(stem) for stem in pool})
    if len(groups) < folds:
        raise DataError(f"{folds} folds need at least {folds} cases to validate on; there are {len(groups)}")
    random.Random(seed).shuffle(groups)
    held_out = set(groups[fold::folds])
    return {
        "train": sorted(s for s in pool if group(s) not in held_out),
        "val": sorted(s for s in pool if group(s) in held_out),
        "test": list(split.get("test", [])),
    }


def lossy_index_mask(path: Path, num_classes: int) -> str:
    """The problem of a multi-class mask stored in a lossy format."""
    return (f"{path}: a JPEG mask cannot hold class indices (compression changes them; "
            f"num_classes={num_classes}); save index masks as PNG, TIFF or BMP")  # fmt: skip


def sample_problems(sample: Sample, num_classes: int) -> list[str]:
    """What is wrong with one image/mask pair, each problem naming its file (empty: usable).

    Checks: readable and complete files, mask size equal to image size, and (multi-class) a
    lossless mask format and mask values below ``num_classes``. Decodes both files.
    """
    if sample.mask is not None and num_classes > 1 and is_lossy(sample.mask):
        return [lossy_index_mask(sample.mask, num_classes)]
    try:
        image_hw = read_image(sample.image).shape[:2]
        mask = None if sample.mask is None else read_mask(sample.mask)
    except DataError as err:
        return [str(err)]
    problems = []
    if mask is not None and mask.shape != image_hw:
        problems.append(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{image_hw[1]}x{image_hw[0]} (W x H)")  # fmt: skip
    if (
        mask is not None
        and num_classes > 1
        and (mask.max(initial=0) >= num_classes or mask.min(initial=0) < 0)
    ):
        bad = sorted(int(v) for v in np.unique(mask) if v < 0 or v >= num_classes)
        problems.append(
            f"{sample.mask}: mask values {bad[:8]} outside 0..{num_classes - 1} (num_classes={num_classes})"
        )
    return problems


def check_samples(samples: list[Sample], num_classes: int) -> None:
    """Decode every image and mask once; raise :class:`DataError` listing each bad file."""
    problems = [problem for sample in samples for problem in sample_problems(sample, num_classes)]
    raise_for_problems(problems, f"{len(problems)} problem(s) in the data")


def _sample_seed(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


SAMPLINGS = ("resize", "window", "whole")


def random_window(
    image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], fill: Sequence[float], foreground: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``size`` window of a (3, H, W) image in [0, 1] and its (H, W) mask, drawn from
    torch's global RNG.

    A side shorter than the window is padded on both sides, the image with ``fill`` (the pixel
    mean, which normalises to 0 like the zero padding of tiled prediction) and the mask with 0.
    With probability ``foreground`` the window is placed to contain a random foreground pixel
    (nnU-Net's oversampling, for small objects in large images); otherwise anywhere.
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = max(size[0] - height, 0), max(size[1] - width, 0)
    if pad_h or pad_w:
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        channels = zip(image, fill, strict=True)
        image = torch.stack([F.pad(channel, padding, value=value) for channel, value in channels])
        mask = F.pad(mask, padding)
        height, width = image.shape[-2:]
    top = int(torch.randint(height - size[0] + 1, ()))
    left = int(torch.randint(width - size[1] + 1, ()))
    if foreground and torch.rand(()) < foreground:
        pixels = mask.nonzero()
        if len(pixels):
            y, x = pixels[int(torch.randint(len(pixels), ()))].tolist()
            top = int(torch.randint(max(y - size[0] + 1, 0), min(y, height - size[0]) + 1, ()))
            left = int(torch.randint(max(x - size[1] + 1, 0), min(x, width - size[1]) + 1, ()))
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    return image[(slice(None), *window)], mask[window]


class SegmentationDataset(Dataset):
    """Image/mask pairs, preprocessed to the model input (and augmented when training).

    Each item is ``{"image": (3, H, W) float normalised, "mask": (H, W) int64, "index": int}``.
    ``sampling`` says how an image becomes that item (see ``ModelConfig.input_scale``):

    - ``"resize"``: the whole image resized to ``size``;
    - ``"window"``: a random ``size`` window at the image's own resolution (see
      :func:`random_window`; ``foreground`` is its oversampling probability);
    - ``"whole"``: the whole image at its own resolution (items differ in size: batch 1).

    Binary data (``num_classes == 1``) maps any non-zero mask value to 1. Windows and augmentation
    are seeded per (seed, epoch, index), so a resumed run sees exactly the same data as an
    uninterrupted one, whatever the number of workers.
    """

    def __init__(
        self,
        samples: list[Sample],
        size: tuple[int, int],
        *,
        num_classes: int,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        augmentation: AugmentConfig | None = None,
        seed: int = 0,
        sampling: str = "resize",
        foreground: float = 0.0,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if augmentation and sampling == "whole":
            raise ValueError("whole-image items (validation) are not augmented")
        self.samples = samples
        self.size = tuple(size)
        self.num_classes = num_classes
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.transform = build_augmentation(augmentation, self.size) if augmentation else None
        self.seed = seed
        self.sampling, self.foreground = sampling, foreground
        self.epoch = 0
        self.max_pixels = current_pixel_limit()  # loader workers may not inherit the caller's

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        sample = self.samples[index]
        with pixel_limit(self.max_pixels):
            image, mask = read_image(sample.image), read_mask(sample.mask)
        scaled_to = self.size if self.sampling == "resize" else image.shape[:2]
        image, mask = image_to_tensor(image, scaled_to), mask_to_tensor(mask, scaled_to)
        if self.num_classes == 1:
            mask = (mask > 0).long()
        if self.transform is not None or self.sampling == "window":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
                if self.sampling == "window":
                    image, mask = random_window(image, mask, self.size, self.pixel_mean, self.foreground)
                if self.transform is not None:
                    image, mask = augment(self.transform, image, mask)
        return {"image": normalize(image, self.pixel_mean, self.pixel_std), "mask": mask, "index": index}
