"""Per-object scores of prompted segmentation: each object's mask against that object's truth.

The union of the object masks (the paper's protocol) cannot tell a model that follows its prompt
from one that masks every object whatever the prompt: both cover the union of the truth. Scored
one object at a time, the second one's masks hold the other objects too, which lowers its Dice,
and for box prompts the **leak** (the share of the predicted mask outside the prompting box)
shows it directly.

Objects come from the folder's ``instances/`` maps where it has them (0 = background, one value
per object), otherwise from the connected components (8-connected) of the mask, where touching
objects merge into one. Each object of a ground-truth prompt is the object it was made from; the
object of a prompt from a file is the one with the most pixels inside its box, or (points only)
the one under most of its positive points (none: an empty truth, so any mask scores 0).

Distances follow :mod:`.metrics` (HD95 in pixels at original resolution; an empty mask against a
non-empty one scores the image diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..data import Sample, read_mask
from ..data.io import DataError
from ..data.prompts import object_labels
from ..inference.prompted import ObjectPrompt
from .metrics import distance_metrics, summarise

OBJECT_METRIC_NAMES = ("dice", "iou", "hd95", "leak")
OBJECTS_FILE = "objects.csv"
OBJECT_COLUMNS = ("case", "object", "truth_label", "truth_pixels", "pred_pixels", *OBJECT_METRIC_NAMES)
OBJECTS_FROM_INSTANCES = "instances/ (one object per instance)"
OBJECTS_FROM_COMPONENTS = "connected components of the mask (touching objects count as one)"


def instance_problems(sample: Sample) -> list[str]:
    """The problem of a case's instance map (empty: usable or none), naming the file."""
    if sample.instances is None:
        return []
    try:
        object_labels(read_mask(sample.mask), sample)
    except DataError as err:
        return [str(err)]
    return []


def truth_object_of(prompt: ObjectPrompt, labels: np.ndarray) -> int:
    """The label (1..N) of the object a prompt from a file points at; 0 for none (module docstring)."""
    if prompt.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        inside = labels[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1]
    else:
        positive = prompt.points[prompt.labels == 1].round().astype(int)
        inside = labels[positive[:, 1], positive[:, 0]]
    counts = np.bincount(inside.ravel(), minlength=1)
    counts[0] = 0
    return int(counts.argmax()) if counts.any() else 0


def box_leak(mask: np.ndarray, box: np.ndarray) -> float:
    """Share of a mask's pixels outside an XYXY box of inclusive pixel indices (0 for an empty mask)."""
    area = np.count_nonzero(mask)
    if area == 0:
        return 0.0
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = np.count_nonzero(mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1])
    return (area - inside) / area


def object_hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """HD95 of two boolean masks, computed on the crop that holds both (with a one-pixel border),
    which gives the whole image's value at a fraction of the cost for a small object."""
    found = np.argwhere(pred | truth)
    if len(found) == 0 or not pred.any() or not truth.any():
        return distance_metrics(pred, truth)[0]  # the empty-mask conventions need the whole image
    (y0, x0), (y1, x1) = found.min(0) - 1, found.max(0) + 2
    crop = np.s_[max(y0, 0) : y1, max(x0, 0) : x1]
    return distance_metrics(pred[crop], truth[crop])[0]


def score_objects(
    object_masks: np.ndarray, prompts: Sequence[ObjectPrompt], labels: np.ndarray, *, matches: Sequence[int]
) -> list[dict[str, float | int]]:
    """One row per prompted object: its truth's label and size, and the Dice, IoU, HD95 and (box
    prompts; NaN otherwise) leak of its mask (N, H, W) against object ``matches[k]`` of ``labels``."""
    rows = []
    for mask, prompt, match in zip(object_masks, prompts, matches, strict=True):
        truth = labels == match if match else np.zeros_like(mask)
        overlap = np.count_nonzero(mask & truth)
        predicted, true = np.count_nonzero(mask), np.count_nonzero(truth)
        union = predicted + true - overlap
        rows.append({
            "truth_label": match,
            "truth_pixels": true,
            "pred_pixels": predicted,
            "dice": 2 * overlap / (predicted + true) if predicted + true else 1.0,
            "iou": overlap / union if union else 1.0,
            "hd95": object_hd95(mask, truth),
            "leak": box_leak(mask, prompt.box) if prompt.box is not None else math.nan,
        })  # fmt: skip
    return rows


def case_object_means(rows: list[dict[str, float | int]]) -> dict[str, float | int]:
    """The columns a case's row in ``metrics.csv`` gets: its object count and mean object scores."""
    means = summarise(rows, OBJECT_METRIC_NAMES)
    return {"objects": len(rows), **{f"object_{name}": stats["mean"] for name, stats in means.items()}}
