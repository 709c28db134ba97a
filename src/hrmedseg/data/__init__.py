"""Data: reading image/mask folders, splits, validation, preprocessing and augmentation."""

from .dataset import (
    DatasetIndex,
    Sample,
    SegmentationDataset,
    check_samples,
    find_dataset,
    make_split,
    sample_problems,
)
from .io import DataError, read_image, read_mask, write_mask
from .transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "DataError",
    "DatasetIndex",
    "Sample",
    "SegmentationDataset",
    "check_samples",
    "find_dataset",
    "make_split",
    "read_image",
    "read_mask",
    "sample_problems",
    "write_mask",
]
