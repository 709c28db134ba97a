"""Predict masks for a file or a folder of images, each at its original size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.io import IMAGE_SUFFIXES, DataError, read_image, write_mask
from .overlay import overlay
from .segmenter import Segmenter


def list_images(path: str | Path) -> list[Path]:
    """The image file itself, or the images directly inside a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def predict_to_folder(
    segmenter: Segmenter,
    inputs: str | Path,
    output: str | Path,
    probabilities: bool = False,
    overlays: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``<stem>.png`` per image: 0/255 for a binary model, class indices 0..K-1 otherwise.

    ``probabilities`` adds ``<stem>_prob.npy`` (float16, K x H x W); ``overlays`` adds
    ``<stem>_overlay.png``. Returns the mask paths.
    """
    images = list_images(inputs)
    stems = [p.stem for p in images]
    duplicated = sorted({s for s in stems if stems.count(s) > 1})
    if duplicated:
        raise DataError(
            f"{inputs}: several files share the stem(s) {duplicated}; masks would overwrite each other"
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    results = segmenter.iter_probabilities(images)
    pairs = zip(images, results, strict=True)
    for path, probs in tqdm(pairs, total=len(images), disable=not progress, desc="predict", unit="image"):
        mask = segmenter.probabilities_to_mask(probs)
        target = output / f"{path.stem}.png"
        write_mask(target, mask * 255 if segmenter.num_classes == 1 else mask)
        written.append(target)
        if probabilities:
            np.save(output / f"{path.stem}_prob.npy", probs.astype(np.float16))
        if overlays:
            Image.fromarray(overlay(read_image(path), mask)).save(output / f"{path.stem}_overlay.png")
    return written
