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
(K, H, W) float32 map in host memory.

The blending is NumPy, so the PyTorch ``Segmenter`` (through :func:`sliding_window_logits` in
:mod:`.segmenter`) and the onnxruntime ``OnnxSegmenter`` share it; only the windows' logits come
from the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

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


def native_tiling(input_scale: str) -> Tiling | None:
    """The tiling of a model trained at its images' own resolution (``ModelConfig.input_scale ==
    "native"``), with which it is validated and predicts; None for one trained on resized images."""
    return Tiling() if input_scale == "native" else None


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


def _axis_weights(size: int, blend: str, sigma_scale: float) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float32) - np.float32((size - 1) / 2)
    if blend == "gaussian":
        return np.exp(-(offsets**2) / np.float32(2 * (sigma_scale * size) ** 2))
    if blend == "linear":
        return 1 - np.abs(offsets) / np.float32((size + 1) / 2)
    return np.ones(size, dtype=np.float32)


def blend_weights(window: tuple[int, int], tiling: Tiling) -> np.ndarray:
    """(h, w) float32 weights of one window's logits."""
    rows, cols = (_axis_weights(n, tiling.blend, tiling.sigma_scale) for n in window)
    weights = rows[:, None] * cols[None, :]
    return np.maximum(weights, max(weights.min(), MIN_WEIGHT)).astype(np.float32)


def blend_windows(
    window_logits: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    window: tuple[int, int],
    *,
    tiling: Tiling,
    batch_size: int,
) -> np.ndarray:
    """Blended logits (K, H, W) float32 of a normalised (C, H, W) float32 image.

    ``window_logits`` maps a (B, C, h, w) float32 batch of windows to their (B, K, h, w) logits;
    ``window`` is (h, w); at most ``batch_size`` windows go in one call.
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = max(window[0] - height, 0), max(window[1] - width, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        image = np.pad(image, ((0, 0), (top, pad_h - top), (left, pad_w - left)))
    size = image.shape[-2:]
    corners = [
        (y, x)
        for y in window_starts(size[0], window[0], tiling.overlap)
        for x in window_starts(size[1], window[1], tiling.overlap)
    ]
    weights = blend_weights(window, tiling)
    logits: np.ndarray | None = None
    total_weight = np.zeros(size, dtype=np.float32)
    for first in range(0, len(corners), batch_size):
        batch = corners[first : first + batch_size]
        tiles = np.stack([image[:, y : y + window[0], x : x + window[1]] for y, x in batch])
        tile_logits = np.asarray(window_logits(np.ascontiguousarray(tiles, dtype=np.float32)), np.float32)
        if logits is None:
            logits = np.zeros((tile_logits.shape[1], *size), dtype=np.float32)
        for (y, x), tile in zip(batch, tile_logits, strict=True):
            logits[:, y : y + window[0], x : x + window[1]] += tile * weights
            total_weight[y : y + window[0], x : x + window[1]] += weights
    logits /= total_weight
    return logits[:, top : top + height, left : left + width]
