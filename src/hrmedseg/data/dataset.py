"""The torch ``Dataset`` of a folder's image/mask pairs: resized, cut into windows at the
images' own resolution, or whole, with seeded augmentation."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .folders import Sample
from .io import (
    current_pixel_limit,
    pixel_limit,
    read_image,
    read_mask,
)
from .prompts import object_labels
from .transforms import AugmentConfig, augment, build_augmentation, image_to_tensor, mask_to_tensor, normalize


def _sample_seed(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


SAMPLINGS = ("resize", "window", "whole")


def random_window(
    image: torch.Tensor,
    mask: torch.Tensor,
    size: tuple[int, int],
    *,
    fill: Sequence[float],
    foreground: float,
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

    Binary data (``num_classes == 1``) maps any non-zero mask value to 1; with ``objects`` (for
    prompted training) the mask holds each object's own label instead (1..N: the case's instance
    map where the folder has one, otherwise the mask's connected components, taken at the image's
    own resolution, so objects that touch once resized stay apart). Windows and augmentation
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
        objects: bool = False,
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
        if objects and num_classes != 1:
            raise ValueError("object labels are for binary data (prompted training)")
        self.objects = objects
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
            if self.objects:
                mask = object_labels(mask, sample)
        scaled_to = self.size if self.sampling == "resize" else image.shape[:2]
        image, mask = image_to_tensor(image, scaled_to), mask_to_tensor(mask, scaled_to)
        if self.num_classes == 1 and not self.objects:
            mask = (mask > 0).long()
        if self.transform is not None or self.sampling == "window":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
                if self.sampling == "window":
                    image, mask = random_window(
                        image, mask, self.size, fill=self.pixel_mean, foreground=self.foreground
                    )
                if self.transform is not None:
                    image, mask = augment(self.transform, image, mask)
        return {"image": normalize(image, self.pixel_mean, self.pixel_std), "mask": mask, "index": index}
