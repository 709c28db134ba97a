"""Data: dataset folders (``folders``), splits (``splits``), checks of image/mask pairs
(``checks``), image I/O (``io``), preprocessing and augmentation (``transforms``) and the torch
``Dataset`` (``dataset``).

Names load on first use: folders, splits, checks and image I/O work without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    **dict.fromkeys(("DatasetIndex", "Sample", "find_dataset"), ".folders"),
    "make_split": ".splits",
    **dict.fromkeys(("check_samples", "sample_problems"), ".checks"),
    "SegmentationDataset": ".dataset",
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
    from .checks import check_samples, sample_problems
    from .dataset import SegmentationDataset
    from .folders import DatasetIndex, Sample, find_dataset
    from .io import read_image, read_mask, write_mask
    from .splits import make_split
    from .transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig
