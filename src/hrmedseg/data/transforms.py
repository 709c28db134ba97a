"""The one preprocessing used by training, evaluation and prediction, and training augmentations.

Preprocessing: an RGB float image in [0, 1] (see :func:`hrmedseg.data.io.read_image`) is resized
to the model's input size (bilinear, antialiased) and normalised with the model's pixel mean and
std (ImageNet's by default). Masks are resized with nearest neighbour. Predictions are mapped
back to each image's original size by interpolating the logits.

Augmentations use ``torchvision.transforms.v2``, which transforms an image and its
``tv_tensors.Mask`` jointly (nearest-neighbour for the mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) float image in [0, 1] -> (3, h, w) float tensor resized to ``size``, not yet normalised."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False, antialias=True)[
            0
        ]
    return tensor.clamp(0, 1)  # not in place: without a resize the tensor shares the caller's array


def mask_to_tensor(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer mask -> (h, w) int64 tensor, nearest-neighbour resized."""
    tensor = torch.from_numpy(np.ascontiguousarray(mask)).long()
    if tuple(tensor.shape) != tuple(size):
        tensor = F.interpolate(tensor[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return tensor


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalise (..., 3, H, W) images in [0, 1] channel-wise."""
    mean_t = images.new_tensor(mean).view(3, 1, 1)
    std_t = images.new_tensor(std).view(3, 1, 1)
    return (images - mean_t) / std_t


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations; each is off at 0. Defaults are mild and orientation-agnostic
    (no vertical flips or rotations, which are wrong for e.g. chest X-rays)."""

    hflip: float = 0.5  # probability
    vflip: float = 0.0  # probability
    rot90: float = 0.0  # probability of a random 90/180/270-degree rotation (square inputs)
    crop_scale: tuple[float, float] = (0.8, 1.0)  # random resized crop area fraction; (1, 1) is off
    brightness: float = 0.1  # colour-jitter strength
    contrast: float = 0.1
    affine_degrees: float = 0.0  # small random rotation
    affine_translate: float = 0.0  # fraction of the size
    affine_scale: tuple[float, float] = (1.0, 1.0)
    elastic_alpha: float = 0.0  # elastic deformation strength in pixels; 0 is off
    elastic_sigma: float = 5.0


def build_augmentation(config: AugmentConfig, size: tuple[int, int]) -> v2.Compose:
    """A joint image+mask transform at the model's input ``size``."""
    steps: list[v2.Transform] = []
    if tuple(config.crop_scale) != (1.0, 1.0):
        steps.append(
            v2.RandomResizedCrop(size, scale=tuple(config.crop_scale), ratio=(0.8, 1.25), antialias=True)
        )
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip(config.hflip))
    if config.vflip:
        steps.append(v2.RandomVerticalFlip(config.vflip))
    if config.rot90:
        if size[0] != size[1]:
            raise ConfigError(f"rot90 augmentation needs a square input size, got {size}")
        rotations = [v2.RandomRotation((angle, angle)) for angle in (90, 180, 270)]
        steps.append(v2.RandomApply([v2.RandomChoice(rotations)], p=config.rot90))
    if config.affine_degrees or config.affine_translate or tuple(config.affine_scale) != (1.0, 1.0):
        translate = (config.affine_translate, config.affine_translate) if config.affine_translate else None
        steps.append(
            v2.RandomAffine(config.affine_degrees, translate=translate, scale=tuple(config.affine_scale))
        )
    if config.elastic_alpha:
        steps.append(v2.ElasticTransform(alpha=config.elastic_alpha, sigma=config.elastic_sigma))
    if config.brightness or config.contrast:
        steps.append(v2.ColorJitter(brightness=config.brightness, contrast=config.contrast))
    return v2.Compose(steps)


def augment(
    transform: v2.Compose, image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a joint transform to a (3, H, W) image in [0, 1] and its (H, W) mask."""
    image_out, mask_out = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return image_out.as_subclass(torch.Tensor).clamp(0, 1), mask_out.as_subclass(torch.Tensor)
