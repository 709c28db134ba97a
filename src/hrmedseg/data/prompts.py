"""Prompts derived from ground-truth masks: one box and one positive point per object.

An object is a connected component (8-connected) of the foreground, or one label of an instance
map. Coordinates are pixels of
the mask, (x, y) order; boxes are XYXY with inclusive pixel indices, as SAM's predictor takes them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, DataError
from .folders import Sample
from .io import read_mask


def label_objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (8-connected) of ``mask > 0``: a label image (1..N) and N."""
    return ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))


def prompts_from_mask(
    mask: np.ndarray,
    *,
    box_jitter: float = 0.0,
    outward: bool = False,
    rng: np.random.Generator | None = None,
    min_area: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) and points (N, 2), one per connected component of ``mask > 0``, in the order
    of the labels of :func:`label_objects` (top-to-bottom, left-to-right by first pixel); see
    :func:`prompts_from_labels`."""
    return prompts_from_labels(
        label_objects(mask)[0], box_jitter=box_jitter, outward=outward, rng=rng, min_area=min_area
    )


def prompts_from_labels(
    labels: np.ndarray,
    *,
    box_jitter: float = 0.0,
    outward: bool = False,
    rng: np.random.Generator | None = None,
    min_area: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) and points (N, 2), one per object of a label image (0 = background, objects
    1..N without gaps, as :func:`label_objects` and :func:`consecutive_labels` give), in label order.

    The point is the object pixel farthest from its border, so it lies inside the object even
    for rings and crescents, where a centroid would not. ``box_jitter`` moves each box side by a
    random amount up to that fraction of the box's width or height (clipped to the image), as in
    SAM-style training; with ``outward`` a side only moves away from the object, so every box
    still holds its whole object (MedSAM enlarges its training boxes this way). ``min_area`` drops
    smaller objects.
    """
    if not 0 <= box_jitter < 0.5:
        raise ConfigError(f"box_jitter must be in [0, 0.5) so a box cannot turn inside out, got {box_jitter}")
    boxes, points = [], []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            raise ValueError(f"label {index} is missing: labels must run from 1 to N without gaps")
        component = labels[region] == index
        if component.sum() < min_area:
            continue
        y0, x0 = region[0].start, region[1].start
        y1, x1 = region[0].stop - 1, region[1].stop - 1
        inside = ndimage.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]
        py, px = np.unravel_index(np.argmax(inside), inside.shape)
        points.append([x0 + px, y0 + py])
        box = np.array([x0, y0, x1, y1], dtype=np.float64)
        if box_jitter:
            rng = rng or np.random.default_rng()
            w, h = x1 - x0 + 1, y1 - y0 + 1
            low, direction = (0.0, np.array([-1, -1, 1, 1])) if outward else (-box_jitter, 1)
            box += direction * rng.uniform(low, box_jitter, 4) * np.array([w, h, w, h])
            box = np.clip(box, 0, [labels.shape[1] - 1, labels.shape[0] - 1] * 2)
        boxes.append(box)
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(points, dtype=np.float32).reshape(-1, 2)


def consecutive_labels(instances: np.ndarray) -> np.ndarray:
    """An instance map's labels renumbered 1..N in the order of their values (0 stays background)."""
    values, inverse = np.unique(instances, return_inverse=True)
    renumbered = inverse.reshape(instances.shape)
    return renumbered if values[0] == 0 else renumbered + 1


def object_labels(truth: np.ndarray, sample: Sample) -> np.ndarray:
    """The objects of a case as a label image (0 = background, 1..N): its instance map, or the
    connected components of its mask when it has none.

    An instance map must have its mask's size and foreground; otherwise :class:`DataError` names it.
    """
    if sample.instances is None:
        return label_objects(truth)[0]
    instances = read_mask(sample.instances)
    if instances.shape != truth.shape:
        raise DataError(
            f"{sample.instances}: instance map is {instances.shape[1]}x{instances.shape[0]} but its mask "
            f"is {truth.shape[1]}x{truth.shape[0]} (W x H)"
        )
    if not np.array_equal(instances > 0, truth > 0):
        differ = int(np.count_nonzero((instances > 0) != (truth > 0)))
        raise DataError(
            f"{sample.instances}: its objects differ from the mask's foreground in {differ} pixel(s)"
        )
    return consecutive_labels(instances)
