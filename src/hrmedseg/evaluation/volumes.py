"""Evaluate a 2-D model on NIfTI volumes: slice-by-slice prediction, 3-D metrics in the scan's
units (Dice, IoU, HD95 and ASD over the whole volume, distances scaled by the voxel spacing).

The dataset folder holds ``images/<case>.nii.gz`` and ``masks/<case>.nii.gz`` of the same shape,
and optionally ``split.json`` as for 2-D data. A case whose files cannot be used (unreadable, not
3-D, non-finite, a mask of another shape) is skipped and named; the others are scored. A folder of
predicted mask volumes (any tool's) is scored the same way without a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data.splits import read_split_file
from ..data.volumes import (
    Volume,
    find_volume_pairs,
    read_volume,
    read_volume_pair,
    read_volume_split,
    volume_stem,
    volumes_in,
)
from ..errors import DataError, InputNotFoundError
from ..inference.postprocess import Postprocessing
from ..inference.segmenter import Segmenter
from ..inference.volumes import segment_volume
from ..output import ensure_output_folder, raise_if_nothing_done
from .evaluate import check_nsd_tolerance, write_reports
from .metrics import DEFAULT_NSD_TOLERANCE, case_metrics
from .predictions import check_num_classes, checked_classes


def _score_volumes(
    data: Path,
    predict: Callable[[str, Volume], np.ndarray],
    *,
    split: str,
    split_file: str | Path | None,
    num_classes: int,
    nsd_tolerance: float,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[str], int]:
    """Metric rows of ``predict(case, image)`` on each ``split`` volume, the problem of each
    unusable case (a :class:`DataError` of reading or predicting) and the number scored."""
    check_nsd_tolerance(nsd_tolerance)
    pairs = find_volume_pairs(data)
    # A named split file is read (and checked) as the 2-D path reads it, whatever the split.
    given = read_split_file(split_file, pairs, what="volume") if split_file is not None else None
    if split != "all":
        volume_split = given if given is not None else read_volume_split(data, pairs)
        if volume_split is None:
            raise DataError(
                f"{data} has no split.json; pass split='all' (--split all) to evaluate every case"
            )
        pairs = {c: pairs[c] for c in volume_split.get(split, [])}
    rows, failures = [], []
    for case, (image_path, mask_path) in tqdm(
        pairs.items(), disable=not progress, desc="evaluate", unit="volume"
    ):
        try:
            image, mask = read_volume_pair(image_path, mask_path)
            pred = predict(case, image)
        except DataError as err:
            failures.append(str(err))
            continue
        truth = np.rint(mask.data).astype(np.int64)
        for row in case_metrics(pred, truth, num_classes, spacing=image.spacing, nsd_tolerance=nsd_tolerance):
            rows.append({"case": case, "shape": "x".join(map(str, image.data.shape)), **row})
    scored = len({r["case"] for r in rows})
    raise_if_nothing_done(scored, failures, f"'{split}' volumes of {data}")
    return rows, failures, scored


def evaluate_volumes(
    segmenter: Segmenter,
    data: str | Path,
    output: str | Path,
    *,
    split: str = "test",
    split_file: str | Path | None = None,
    axis: int = -1,
    window: tuple[float, float] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    checkpoint: str = "(in-memory model)",
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``segmenter`` on the ``split`` volumes of ``data`` (``"all"``: every case); writes and
    returns the same reports as :func:`~hrmedseg.evaluation.evaluate.evaluate` (``nsd_tolerance``:
    in voxels for ``nsd``, in millimetres for ``nsd_mm``; ``split_file`` replaces the dataset's
    split)."""
    data = Path(data)
    rows, failures, scored = _score_volumes(
        data, lambda _, image: segment_volume(segmenter, image, axis=axis, window=window), split=split,
        split_file=split_file, num_classes=segmenter.num_classes, nsd_tolerance=nsd_tolerance,
        progress=progress,
    )  # fmt: skip
    output = ensure_output_folder(output)
    about = {
        "checkpoint": checkpoint, "data": str(data), "split": split, "cases": scored,
        "slices_along_axis": axis, "window": list(window) if window else "min-max per volume",
        "nsd_tolerance": nsd_tolerance,
    }  # fmt: skip
    description = f"`{checkpoint}` on `{data}` ({split}: {scored} volumes, 3-D metrics)"
    return write_reports(
        output, rows, size_columns=["shape"], about=about, failures=failures, description=description
    )


def prediction_volumes(folder: Path) -> dict[str, Path]:
    """Case -> predicted mask volume in ``folder``: ``<case>_mask.nii.gz`` (as ``predict`` writes
    it) or ``<case>.nii.gz`` (``.nii`` too); both for one case are refused by name."""
    if not folder.is_dir():
        raise InputNotFoundError(f"{folder}: prediction folder not found")
    found: dict[str, Path] = {}
    for path in volumes_in(folder):
        stem = volume_stem(path)
        case = stem.removesuffix("_mask")
        if case in found:
            raise DataError(f"{folder}: {found[case].name} and {path.name} are both case '{case}'; "
                            "keep one prediction per case")  # fmt: skip
        found[case] = path
    return found


def evaluate_volume_predictions(
    predictions: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    split: str = "test",
    split_file: str | Path | None = None,
    num_classes: int = 1,
    postprocessing: Postprocessing | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a folder of predicted mask volumes (see :func:`prediction_volumes`; any tool's, on
    the scan's voxel grid) against the ``split`` volumes of ``data``; binary: any non-zero voxel
    is foreground, multi-class: indices 0..K-1. ``postprocessing`` cleans each one first (in 3-D).
    Writes and returns the reports of :func:`evaluate_volumes`."""
    check_num_classes(num_classes)
    postprocessing = postprocessing or Postprocessing()
    folder, data = Path(predictions), Path(data)
    files = prediction_volumes(folder)

    def read_prediction(case: str, image: Volume) -> np.ndarray:
        if case not in files:
            raise DataError(
                f"{folder}: no prediction for case '{case}' ({case}_mask.nii.gz or {case}.nii.gz)"
            )
        path = files[case]
        pred = np.rint(read_volume(path).data).astype(np.int64)
        if pred.shape != image.data.shape:
            raise DataError(
                f"{path}: prediction shape {pred.shape} differs from its image's {image.data.shape}"
            )
        return postprocessing(checked_classes(path, pred, num_classes))

    rows, failures, scored = _score_volumes(
        data,
        read_prediction,
        split=split,
        split_file=split_file,
        num_classes=num_classes,
        nsd_tolerance=nsd_tolerance,
        progress=progress,
    )
    output = ensure_output_folder(output)
    about = {
        "predictions": str(folder), "data": str(data), "split": split, "cases": scored,
        "num_classes": num_classes,
        "postprocessing": postprocessing.describe(),
        "nsd_tolerance": nsd_tolerance,
    }  # fmt: skip
    description = f"the masks in `{folder}` on `{data}` ({split}: {scored} volumes, 3-D metrics)"
    return write_reports(
        output, rows, size_columns=["shape"], about=about, failures=failures, description=description
    )
