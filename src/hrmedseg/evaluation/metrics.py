"""Per-case segmentation metrics on binary masks (2-D images or 3-D volumes): Dice, IoU,
precision, recall, HD95, ASD and NSD.

Surface distances follow MONAI's definitions: a mask's surface is the mask minus its erosion
(4-connected in 2-D, 6-connected in 3-D), distances are Euclidean (scaled by the pixel or voxel
spacing), HD95 is the larger of the two directed 95th percentiles, and ASD is the mean of all
distances in both directions (symmetric).

NSD (normalised surface Dice, the second metric MedSAM reports) is the share of both surfaces
that lies within ``nsd_tolerance`` of the other surface (distance <= tolerance), counted in surface
pixels as MONAI's ``compute_surface_dice`` does. DeepMind's ``surface-distance`` package (MedSAM's
code) weights each surface element by its area instead, so its values differ slightly, most on
small or jagged objects.

Empty masks (documented convention, so means never contain NaN):
- a ratio whose denominator is zero (e.g. Dice of two empty masks) is 1 when prediction and truth
  are both empty, and 0 otherwise; NSD likewise;
- HD95 and ASD are 0 when both are empty and the image diagonal (in the same units) when only one
  of them is: the largest distance the image can hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "iou", "precision", "recall", "hd95", "asd", "nsd")
# Suffixed metrics, present when the pixel (voxel) spacing is known: in its physical units.
PHYSICAL_METRIC_NAMES = ("hd95_mm", "asd_mm", "nsd_mm")
# MedSAM's tolerance (2 mm on CT/MR); here in the units of each distance: pixels for ``nsd``,
# physical units for ``nsd_mm``.
DEFAULT_NSD_TOLERANCE = 2.0


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distances from each surface pixel of ``source`` to the nearest surface pixel of ``target``."""
    source_surface, target_surface = _surface(source), _surface(target)
    distance_to_target = ndimage.distance_transform_edt(~target_surface, sampling=spacing)
    return distance_to_target[source_surface]


def _ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


def distance_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> tuple[float, float, float]:
    """(HD95, ASD, NSD) of two boolean masks; distances and ``nsd_tolerance`` in the units of
    ``spacing`` (one size per axis; default 1 per axis: pixels or voxels)."""
    spacing = (1.0,) * pred.ndim if spacing is None else tuple(spacing)
    n_pred, n_truth = np.count_nonzero(pred), np.count_nonzero(truth)
    if n_pred == 0 and n_truth == 0:
        return 0.0, 0.0, 1.0
    if n_pred == 0 or n_truth == 0:
        diagonal = math.hypot(*(n * s for n, s in zip(pred.shape, spacing, strict=True)))
        return diagonal, diagonal, 0.0
    forward = surface_distances(pred, truth, spacing)
    backward = surface_distances(truth, pred, spacing)
    both = np.concatenate([forward, backward])
    hd95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
    return float(hd95), float(both.mean()), float(np.count_nonzero(both <= nsd_tolerance) / both.size)


def binary_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> dict[str, float]:
    """All metrics of one (H, W) or (X, Y, Z) prediction against its truth. Distances are in
    pixels (voxels), and with ``spacing`` (one size per axis) also in those physical units as
    ``hd95_mm``, ``asd_mm`` and ``nsd_mm``; ``nsd_tolerance`` is in the units of each."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    tp = float(np.count_nonzero(pred & truth))
    n_pred, n_truth = float(np.count_nonzero(pred)), float(np.count_nonzero(truth))
    both_empty = n_pred == 0 and n_truth == 0
    metrics = {
        "dice": _ratio(2 * tp, n_pred + n_truth, both_empty),
        "iou": _ratio(tp, n_pred + n_truth - tp, both_empty),
        "precision": _ratio(tp, n_pred, both_empty),
        "recall": _ratio(tp, n_truth, both_empty),
    }
    metrics["hd95"], metrics["asd"], metrics["nsd"] = distance_metrics(
        pred, truth, nsd_tolerance=nsd_tolerance
    )
    if spacing is not None:
        physical = distance_metrics(pred, truth, spacing=spacing, nsd_tolerance=nsd_tolerance)
        metrics.update(zip(PHYSICAL_METRIC_NAMES, physical, strict=True))
    return metrics


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    *,
    spacing: tuple[float, ...] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> list[dict[str, float | int]]:
    """Metrics per foreground class of two index masks, one row per class (``class`` = 1..K-1;
    binary: class 1 = any non-zero value); see :func:`binary_metrics`."""
    classes = [1] if num_classes == 1 else list(range(1, num_classes))
    rows = []
    for c in classes:
        p, t = (pred > 0, truth > 0) if num_classes == 1 else (pred == c, truth == c)
        rows.append({"class": c, **binary_metrics(p, t, spacing=spacing, nsd_tolerance=nsd_tolerance)})
    return rows


def summarise(rows: list[dict[str, float]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, std, median and count of each of ``keys`` over ``rows``; a row without the key, or
    with NaN (a score that does not apply to it), is left out; a key no row has is left out."""
    summary = {}
    for key in keys:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                            "median": float(np.median(values)), "n": len(values)}  # fmt: skip
    return summary
