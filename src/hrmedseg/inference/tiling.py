"""Sliding-window prediction at an image's own resolution, for images larger than the model size.

The convention is MONAI's ``sliding_window_inference`` (and nnU-Net's tiled prediction): windows
of the model's input size step by ``int(window * (1 - overlap))`` pixels, the last one in each
direction is moved back to end at the image's edge, an image smaller than a window is padded
symmetrically with zeros (the normalised mean colour) and cropped afterwards, and overlapping
logits are averaged with per-window weights:

- ``gaussian`` (default): a Gaussian of standard deviation ``sigma_scale`` times the window's side
  on each axis, so every window's centre counts most and its border, where context is cut, least;
- ``linear``: a tent that falls linearly from the window's centre to its edges;
- ``constant``: a plain mean.

Weights are floored at 1e-3, as in MONAI, so no pixel is left without one. Only one batch of
window logits exists at a time; the blended logits of the whole image accumulate in one
(K, H, W) float32 map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..modeling.config import ModelConfig

BLENDS = ("gaussian", "linear", "constant")
MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class Tiling:
    """How windows overlap and how their logits are blended."""

    overlap: float = 0.25
    blend: str = "gaussian"
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLENDS:
            raise ConfigError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if not self.sigma_scale > 0:
            raise ConfigError(f"sigma_scale must be positive, got {self.sigma_scale}")


def native_tiling(config: ModelConfig) -> Tiling | None:
    """The tiling a model trained at its images' own resolution (``input_scale == "native"``) is
    validated and predicted with; None for a model trained on resized images."""
    return Tiling() if config.input_scale == "native" else None


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """First pixel of each window along an axis of ``length`` >= ``window`` pixels."""
    step = window if length == window else max(int(window * (1 - overlap)), 1)
    starts = []
    for index in range(math.ceil(length / step)):
        start = index * step
        starts.append(min(start, length - window))
        if start + window >= length:
            break
    return starts


def _axis_weights(size: int, blend: str, sigma_scale: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    if blend == "gaussian":
        return torch.exp(-(offsets**2) / (2 * (sigma_scale * size) ** 2))
    if blend == "linear":
        return 1 - offsets.abs() / ((size + 1) / 2)
    return torch.ones(size)


def blend_weights(window: tuple[int, int], tiling: Tiling) -> torch.Tensor:
    """(h, w) weights of one window's logits."""
    rows, cols = (_axis_weights(n, tiling.blend, tiling.sigma_scale) for n in window)
    weights = rows[:, None] * cols[None, :]
    return weights.clamp(min=max(weights.min().item(), MIN_WEIGHT))


@torch.no_grad()
def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: tuple[int, int],
    tiling: Tiling,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Blended logits (K, H, W) float32 on the CPU of a normalised (C, H, W) image.

    ``model`` (a module, or any function) maps (B, C, h, w) windows to (B, K, h, w) logits;
    ``window`` is (h, w).
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = max(window[0] - height, 0), max(window[1] - width, 0)
    padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    padded = F.pad(image, padding) if pad_h or pad_w else image
    size = padded.shape[-2:]
    corners = [
        (y, x)
        for y in window_starts(size[0], window[0], tiling.overlap)
        for x in window_starts(size[1], window[1], tiling.overlap)
    ]
    weights = blend_weights(window, tiling)
    logits: torch.Tensor | None = None
    total_weight = torch.zeros(size)
    for first in range(0, len(corners), batch_size):
        batch = corners[first : first + batch_size]
        tiles = torch.stack([padded[:, y : y + window[0], x : x + window[1]] for y, x in batch])
        tile_logits = model(tiles.to(device)).float().cpu()
        if logits is None:
            logits = torch.zeros(tile_logits.shape[1], *size)
        for (y, x), tile in zip(batch, tile_logits, strict=True):
            logits[:, y : y + window[0], x : x + window[1]] += tile * weights
            total_weight[y : y + window[0], x : x + window[1]] += weights
    logits /= total_weight
    return logits[:, padding[2] : padding[2] + height, padding[0] : padding[0] + width]
