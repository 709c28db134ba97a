"""Checking image/mask pairs before they are used: each problem names its file. Imports no
PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .folders import Sample
from .io import (
    DataError,
    is_lossy,
    raise_for_problems,
    read_image,
    read_mask,
)
from .prompts import object_labels


def lossy_index_mask(path: Path, num_classes: int) -> str:
    """The problem of a multi-class mask stored in a lossy format."""
    return (f"{path}: a JPEG mask cannot hold class indices (compression changes them; "
            f"num_classes={num_classes}); save index masks as PNG, TIFF or BMP")  # fmt: skip


def sample_problems(sample: Sample, num_classes: int, *, objects: bool = False) -> list[str]:
    """What is wrong with one image/mask pair, each problem naming its file (empty: usable).

    Checks: readable and complete files, mask size equal to image size, and (multi-class) a
    lossless mask format and mask values below ``num_classes``; with ``objects`` (prompted
    training), an instance map of the mask's size and foreground. Decodes the files.
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
    if objects and mask is not None and sample.instances is not None and not problems:
        try:
            object_labels(mask, sample)
        except DataError as err:
            problems.append(str(err))
    return problems


def check_samples(samples: list[Sample], num_classes: int, *, objects: bool = False) -> None:
    """Decode every image and mask once (``objects``: and instance map); raise :class:`DataError`
    listing each bad file."""
    problems = [p for sample in samples for p in sample_problems(sample, num_classes, objects=objects)]
    raise_for_problems(problems, f"{len(problems)} problem(s) in the data")
