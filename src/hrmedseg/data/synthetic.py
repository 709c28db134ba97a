"""Small synthetic segmentation data (for the demo, the tests and benchmarks; not medical data).

:func:`make_synthetic_dataset` writes a folder: each image is a noisy, smoothly shaded grey
background with a few bright ellipses ("lesions"); class k (1..K-1) ellipses get distinct
brightness and texture. Images have varying sizes, so the pipeline's resizing and the mapping back
to original size are exercised.

:func:`separate_discs` makes tensors of identical discs that do not touch, where only a prompt
can say which disc is meant (prompt-following).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _ellipse(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.08, 0.22) * h, rng.uniform(0.08, 0.22) * w
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:h, :w]
    y, x = yy - cy, xx - cx
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_images: int = 40,
    num_classes: int = 1,
    size_range: tuple[int, int] = (96, 160),
    seed: int = 0,
    with_split: bool = True,
) -> Path:
    """Write ``images/``, ``masks/`` (0/255 for binary, 0..K-1 for K classes) and ``split.json``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = []
    foreground_classes = max(num_classes - 1, 1)
    for i in range(num_images):
        h, w = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
        yy, xx = np.mgrid[:h, :w] / max(h, w)
        image = (
            0.25 + 0.15 * np.sin(3 * xx + rng.uniform(0, 6)) * np.cos(2 * yy) + rng.normal(0, 0.05, (h, w))
        )
        mask = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.integers(1, foreground_classes + 1))
            region = _ellipse((h, w), rng)
            # Classes differ in brightness and in stripe texture.
            shade = 0.5 + 0.45 * label / foreground_classes + 0.06 * np.sin(20 * (label - 1) * xx)
            image[region] = shade[region]
            mask[region] = label
        image = np.clip(image + rng.normal(0, 0.04, (h, w)), 0, 1)
        stem = f"case_{i:03d}"
        Image.fromarray((image * 255).astype(np.uint8)).convert("RGB").save(root / "images" / f"{stem}.png")
        stored = mask * 255 if num_classes == 1 else mask
        Image.fromarray(stored.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
        stems.append(stem)
    if with_split:
        n_val = n_test = max(1, num_images // 5)
        split = {
            "train": stems[: -n_val - n_test],
            "val": stems[-n_val - n_test : -n_test],
            "test": stems[-n_test:],
        }
        (root / "split.json").write_text(json.dumps(split, indent=1))
    (root / "README.md").write_text(
        "Synthetic data made by hrmedseg (bright ellipses on shaded noise). Not medical images.\n"
    )
    return root


def separate_discs(
    count: int, size: int, *, per_image: int, seed: int, radius: tuple[float, float] = (4, 7), gap: float = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Images (count, 3, size, size) float32 in [0, 1] of ``per_image`` identical bright discs on noise,
    at least ``gap`` pixels apart, and their binary masks (count, size, size) int64.

    Args:
        count: number of images.
        size: image side in pixels.
        per_image: discs per image.
        seed: seed of the NumPy generator that places the discs and draws the noise.
        radius: range of the disc radii in pixels.
        gap: least distance in pixels between two discs' borders.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    margin = radius[1] + 1
    images, masks = [], []
    for _ in range(count):
        image, mask, discs = 0.2 + rng.normal(0, 0.05, (size, size)), np.zeros((size, size), np.int64), []
        while len(discs) < per_image:
            centre, r = rng.uniform(margin, size - margin, 2), rng.uniform(*radius)
            if all(np.hypot(*(centre - c)) > r + other + gap for c, other in discs):
                discs.append((centre, r))
        for (cy, cx), r in discs:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            image[inside], mask[inside] = 0.8, 1
        images.append(np.repeat(image[None], 3, 0))
        masks.append(mask)
    return np.stack(images).astype(np.float32), np.stack(masks)
