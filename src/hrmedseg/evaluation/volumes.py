"""Evaluate a 2-D model on NIfTI volumes: slice-by-slice prediction, 3-D metrics in the scan's
units (Dice, IoU, HD95 and ASD over the whole volume, distances scaled by the voxel spacing).

The dataset folder holds ``images/<case>.nii.gz`` and ``masks/<case>.nii.gz`` of the same shape,
and optionally ``split.json`` as for 2-D data. A case whose files cannot be used (unreadable, not
3-D, non-finite, a mask of another shape) is skipped and named; the others are scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data.volumes import find_volume_pairs, read_volume_pair, read_volume_split
from ..errors import DataError
from ..inference.segmenter import Segmenter
from ..inference.volumes import segment_volume
from ..output import ensure_output_folder, raise_if_nothing_done
from .evaluate import check_nsd_tolerance, write_reports
from .metrics import DEFAULT_NSD_TOLERANCE, case_metrics


def evaluate_volumes(
    segmenter: Segmenter,
    data: str | Path,
    output: str | Path,
    split: str = "test",
    axis: int = -1,
    window: tuple[float, float] | None = None,
    progress: bool = True,
    checkpoint: str = "(in-memory model)",
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> dict[str, Any]:
    """Score ``segmenter`` on the ``split`` volumes of ``data`` (``"all"``: every case); writes and
    returns the same reports as :func:`~hrmedseg.evaluation.evaluate.evaluate` (``nsd_tolerance``:
    in voxels for ``nsd``, in millimetres for ``nsd_mm``)."""
    check_nsd_tolerance(nsd_tolerance)
    data = Path(data)
    pairs = find_volume_pairs(data)
    if split != "all":
        volume_split = read_volume_split(data, pairs)
        if volume_split is None:
            raise DataError(
                f"{data} has no split.json; pass split='all' (--split all) to evaluate every case"
            )
        pairs = {c: pairs[c] for c in volume_split.get(split, [])}
    output = ensure_output_folder(output)
    rows, failures = [], []
    for case, (image_path, mask_path) in tqdm(
        pairs.items(), disable=not progress, desc="evaluate", unit="volume"
    ):
        try:
            image, mask = read_volume_pair(image_path, mask_path)
        except DataError as err:
            failures.append(str(err))
            continue
        pred = segment_volume(segmenter, image, axis, window)
        truth = np.rint(mask.data).astype(np.int64)
        for row in case_metrics(pred, truth, segmenter.num_classes, image.spacing, nsd_tolerance):
            rows.append({"case": case, "shape": "x".join(map(str, image.data.shape)), **row})
    scored = len({r["case"] for r in rows})
    raise_if_nothing_done(scored, failures, f"'{split}' volumes of {data}")
    about = {
        "checkpoint": checkpoint, "data": str(data), "split": split, "cases": scored,
        "slices_along_axis": axis, "window": list(window) if window else "min-max per volume",
        "nsd_tolerance": nsd_tolerance,
    }  # fmt: skip
    description = f"`{checkpoint}` on `{data}` ({split}: {about['cases']} volumes, 3-D metrics)"
    return write_reports(output, rows, ["shape"], about, failures, description)
