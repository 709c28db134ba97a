"""Data: reading image/mask folders, splits, validation, preprocessing and augmentation.

Names load on first use: ``hrmedseg.data.io`` (image I/O) works without PyTorch, the rest needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    **dict.fromkeys(
        (
            "DatasetIndex",
            "Sample",
            "SegmentationDataset",
            "check_samples",
            "find_dataset",
            "make_split",
            "sample_problems",
        ),
        ".dataset",
    ),  # fmt: skip
    **dict.fromkeys(("read_image", "read_mask", "write_mask"), ".io"),
    "DataError": "..errors",
    **dict.fromkeys(("IMAGENET_MEAN", "IMAGENET_STD", "AugmentConfig"), ".transforms"),
}

__all__ = [
    "AugmentConfig",
    "DataError",
    "DatasetIndex",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Sample",
    "SegmentationDataset",
    "check_samples",
    "find_dataset",
    "make_split",
    "read_image",
    "read_mask",
    "sample_problems",
    "write_mask",
]  # the keys of _EXPORTS (a test checks)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hrmedseg.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from ..errors import DataError
    from .dataset import (
        DatasetIndex,
        Sample,
        SegmentationDataset,
        check_samples,
        find_dataset,
        make_split,
        sample_problems,
    )
    from .io import read_image, read_mask, write_mask
    from .transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig
