"""Training data from NIfTI volumes: a 2-D dataset folder of their slices.

A 2-D model trains on slices. :func:`slice_volume_dataset` writes, once per run, the slices of
every volume along one axis as 8-bit PNG images (intensities windowed or min-max scaled per
volume, as prediction does) with their masks, and a ``split.json`` that keeps the volume
dataset's split **by volume**: all slices of a scan are in the same split, so validation never
sees a slice whose neighbours were trained on.

Which slices: every slice that holds foreground, plus empty slices (background only) numbering
``empty_share`` times the foreground slices of that volume (default 0.25, at least one while the
volume has any), drawn with the seed. Most slices of a CT are empty; all of them would teach
mostly "predict nothing", none would never show the model an empty field of view, which it
meets at prediction. The folder's ``slices.json`` records how it was made; a folder made another
way is rebuilt.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import DataError
from .io import write_mask
from .splits import make_split
from .volumes import find_volume_pairs, read_volume_pair, read_volume_split, to_unit_range

MANIFEST = "slices.json"


def slice_stem(case: str, index: int) -> str:
    """The stem of slice ``index`` of volume ``case``."""
    return f"{case}_s{index:04d}"


def slice_case(stem: str) -> str:
    """The volume a slice stem (:func:`slice_stem`) comes from."""
    return stem.rsplit("_s", 1)[0]


def slice_volume_dataset(
    data: str | Path,
    target: str | Path,
    *,
    axis: int = -1,
    window: tuple[float, float] | None = None,
    empty_share: float = 0.25,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Path:
    """Write (or reuse) the 2-D dataset of ``data``'s volumes in ``target``; returns ``target``."""
    data, target = Path(data), Path(target)
    recipe = {"data": str(data.resolve()), "axis": axis, "window": list(window) if window else None,
              "empty_share": empty_share, "seed": seed, "split_fractions": list(split_fractions)}  # fmt: skip
    manifest = target / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("recipe") == recipe:
        return target
    shutil.rmtree(target, ignore_errors=True)
    (target / "images").mkdir(parents=True)
    (target / "masks").mkdir()
    pairs = find_volume_pairs(data)
    if not pairs:
        raise DataError(f"{data}: no NIfTI volumes in images/")
    rng = random.Random(seed)
    slices_of: dict[str, list[str]] = {}
    counts = {"foreground": 0, "empty": 0}
    for case, (image_path, mask_path) in pairs.items():
        image, mask = read_volume_pair(image_path, mask_path)
        pixels = np.moveaxis(to_unit_range(image.data, window), axis, 0)
        labels = np.moveaxis(np.rint(mask.data).astype(np.int64), axis, 0)
        if labels.min() < 0 or labels.max() > 255:
            raise DataError(
                f"{mask_path}: mask values must be class indices 0..255, got {labels.min()}..{labels.max()}"
            )
        foreground = [k for k in range(len(labels)) if labels[k].any()]
        empty = [k for k in range(len(labels)) if not labels[k].any()]
        wanted = min(len(empty), max(1, round(empty_share * len(foreground)))) if empty_share > 0 else 0
        chosen = sorted(foreground + rng.sample(empty, wanted))
        counts["foreground"] += len(foreground)
        counts["empty"] += wanted
        slices_of[case] = []
        for k in chosen:
            stem = slice_stem(case, k)
            write_mask(target / "images" / f"{stem}.png", np.rint(pixels[k] * 255).astype(np.uint8))
            write_mask(target / "masks" / f"{stem}.png", labels[k].astype(np.uint8))
            slices_of[case].append(stem)
    split = read_volume_split(data, pairs) or make_split(pairs, seed, split_fractions)
    slice_split = {name: [s for case in cases for s in slices_of[case]] for name, cases in split.items()}
    write_text(target / "split.json", json.dumps(slice_split, indent=1))
    write_text(manifest, json.dumps({"recipe": recipe, "volumes": len(pairs), "slices": counts}, indent=1))
    return target
