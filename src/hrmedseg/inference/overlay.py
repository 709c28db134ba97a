"""Overlay pictures: the prediction in colour over the image, the truth as an outline."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Distinct colours for classes 1, 2, ...; class 0 (background) is not drawn.
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ],
    dtype=np.float32,
)
TRUTH_COLOUR = np.array([255, 225, 25], dtype=np.uint8)


def overlay(
    image: np.ndarray, mask: np.ndarray, *, truth: np.ndarray | None = None, alpha: float = 0.45
) -> np.ndarray:
    """(H, W, 3) uint8 picture of ``image`` (float RGB in [0, 1]) with ``mask`` classes tinted and,
    if given, the outline of ``truth`` (any non-zero value) in yellow."""
    picture = image.astype(np.float32) * 255
    for c in range(1, int(mask.max(initial=0)) + 1):
        region = mask == c
        colour = PALETTE[(c - 1) % len(PALETTE)]
        picture[region] = (1 - alpha) * picture[region] + alpha * colour
    picture = picture.clip(0, 255).astype(np.uint8)
    if truth is not None:
        foreground = truth > 0
        picture[foreground & ~ndimage.binary_erosion(foreground, iterations=2)] = TRUTH_COLOUR
    return picture
