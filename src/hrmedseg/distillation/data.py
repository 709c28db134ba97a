"""Unlabeled images for distillation: a recursive folder listing, a seeded split and a dataset.

Preprocessing is the fine-tuning one (:mod:`hrmedseg.data.transforms`): RGB in [0, 1], resized
to N x N (bilinear, antialiased), normalised with ImageNet's mean and std, which are SAM's own
``pixel_mean``/``pixel_std`` divided by 255. Teacher and student receive this same tensor.
Unlike SAM's predictor, the image is stretched to the square rather than padded, because that is
what the student sees when it is fine-tuned later. No augmentation: the cached teacher
embeddings describe the unaugmented image.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.io import IMAGE_SUFFIXES, image_size, read_image
from ..data.transforms import image_to_tensor, normalize
from ..errors import ConfigError, DataError
from .cache import EmbeddingCache


def find_images(root: str | Path) -> list[str]:
    """Paths (relative to ``root``, POSIX style, sorted) of every image below ``root``.

    Hidden files and folders (names starting with '.') are skipped. In a segmentation dataset
    folder (``images/`` + ``masks/``, or ``image_1024/`` + ``mask_1024/``) only the images are
    taken, never the masks. Each header is read, so an unreadable file is reported now, by name,
    rather than in the middle of an epoch.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    search = root
    for images, masks in (("images", "masks"), ("image_1024", "mask_1024")):
        if (root / images).is_dir() and (root / masks).is_dir():
            search = root / images
            break
    found = sorted(
        p.relative_to(root).as_posix()
        for p in search.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subfolders")
    problems = []
    for name in found:
        try:
            image_size(root / name)
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError(f"{len(problems)} unreadable image(s):\n  " + "\n  ".join(problems))
    return found


def split_images(files: list[str], seed: int, val_fraction: float) -> dict[str, list[str]]:
    """A seeded train/val split; validation gets at least one image when there are two or more."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    shuffled = sorted(files)
    random.Random(seed).shuffle(shuffled)
    n_val = round(val_fraction * len(shuffled))
    if len(shuffled) >= 2:
        n_val = min(max(n_val, 1), len(shuffled) - 1)
    return {"train": sorted(shuffled[n_val:]), "val": sorted(shuffled[:n_val])}


class UnlabeledImages(Dataset):
    """Items ``{"image": (3, N, N) normalised, "index": position in the cache's file list}``,
    plus ``"target"``, the cached fp16 teacher embedding (256, N/16, N/16), when ``cache`` is given.
    """

    def __init__(
        self,
        root: str | Path,
        files: list[str],
        *,
        size: tuple[int, int],
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        cache: EmbeddingCache | None = None,
        cache_index: dict[str, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.files = files
        self.size = tuple(size)
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.cache = cache
        self.cache_index = cache_index or {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        name = self.files[index]
        image = image_to_tensor(read_image(self.root / name), self.size)
        item: dict[str, torch.Tensor | int] = {
            "image": normalize(image, self.pixel_mean, self.pixel_std),
            "index": index,
        }
        if self.cache is not None:
            item["target"] = self.cache.read(self.cache_index[name])
        return item
