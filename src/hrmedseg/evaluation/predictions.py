"""Score a folder of predicted masks against a dataset's masks, with no model: the masks another
tool (a U-Net, nnU-Net, MedSAM) or an earlier ``hrmedseg predict`` wrote, under the same metrics
and reports as :func:`~hrmedseg.evaluation.evaluate.evaluate`.

A prediction is ``<predictions>/<case>.<ext>`` (any image format the package reads), at its
image's original size. Binary (``num_classes=1``): any non-zero value is foreground, so
``predict``'s 0/255 PNGs and 0/1 masks both work (JPEG: above half the maximum, see
:func:`~hrmedseg.data.io.read_mask`). Multi-class: class indices 0..K-1, in a lossless format. A case with
no prediction, or one of the wrong size or values, is named and not scored (``failures``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Sample, read_mask
from ..data.checks import lossy_index_mask
from ..data.io import IMAGE_SUFFIXES, image_size, is_lossy
from ..errors import ConfigError, DataError, InputNotFoundError
from ..inference.postprocess import Postprocessing
from ..output import ensure_output_folder, raise_if_nothing_done
from .evaluate import check_nsd_tolerance, score_cases, usable_cases, write_reports
from .metrics import DEFAULT_NSD_TOLERANCE


def prediction_files(folder: Path) -> dict[str, Path]:
    """The mask files of ``folder`` by stem; two files with one stem are refused by name."""
    if not folder.is_dir():
        raise InputNotFoundError(f"{folder}: prediction folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise DataError(f"{folder}: {found[path.stem].name} and {path.name} are both case "
                                f"'{path.stem}'; keep one prediction per case")  # fmt: skip
            found[path.stem] = path
    return found


def check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a whole number of 1 or more, got {num_classes!r}")


def checked_classes(path: Path, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """A predicted mask as class indices (binary: 0/1); values outside 0..K-1 raise DataError."""
    if num_classes == 1:
        return (pred != 0).astype(np.uint8)
    if pred.min(initial=0) < 0 or pred.max(initial=0) >= num_classes:
        bad = sorted(int(v) for v in np.unique(pred) if v < 0 or v >= num_classes)
        raise DataError(f"{path}: prediction values {bad[:8]} outside 0..{num_classes - 1} "
                        f"(num_classes={num_classes})")  # fmt: skip
    return pred.astype(np.uint8 if num_classes <= 256 else np.int64)


def read_prediction(path: Path, truth_shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """A predicted index mask (binary: 0/1), checked against its ground truth's shape."""
    if num_classes > 1 and is_lossy(path):
        raise DataError(lossy_index_mask(path, num_classes))
    pred = read_mask(path)
    if pred.shape != truth_shape:
        raise DataError(
            f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} but its mask is "
            f"{truth_shape[1]}x{truth_shape[0]} (W x H); predict at the original size"
        )
    return checked_classes(path, pred, num_classes)


def evaluate_predictions(
    predictions: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    split: str = "test",
    split_file: str | Path | None = None,
    num_classes: int = 1,
    postprocessing: Postprocessing | None = None,
    overlays: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the ``split`` cases of ``data`` (``"all"``: every case; ``split_file`` replaces the
    dataset's split) with the masks in ``predictions``; ``postprocessing`` cleans each one first.
    Writes and returns the reports of :func:`~hrmedseg.evaluation.evaluate.evaluate`."""
    check_nsd_tolerance(nsd_tolerance)
    check_num_classes(num_classes)
    postprocessing = postprocessing or Postprocessing()
    folder = Path(predictions)
    files = prediction_files(folder)
    index, samples, failures = usable_cases(data, split=split, num_classes=num_classes, split_file=split_file)
    present = []
    for sample in samples:
        if sample.stem in files:
            present.append(sample)
        else:
            failures.append(f"{folder}: no prediction for case '{sample.stem}' "
                            f"({sample.stem}.png or another of {', '.join(IMAGE_SUFFIXES)})")  # fmt: skip
    raise_if_nothing_done(len(present), failures, f"'{split}' cases of {data} with predictions in {folder}")

    def pairs() -> Iterator[tuple[Sample, np.ndarray]]:  # one mask in memory at a time
        for sample in present:
            try:
                pred = read_prediction(files[sample.stem], image_size(sample.mask), num_classes)
            except DataError as err:
                failures.append(str(err))
                continue
            yield sample, postprocessing(pred)

    output = ensure_output_folder(output)
    rows = score_cases(
        pairs(), len(present), index=index, num_classes=num_classes, nsd_tolerance=nsd_tolerance,
        output=output, overlays=overlays, progress=progress,
    )  # fmt: skip
    scored = len({r["case"] for r in rows})
    raise_if_nothing_done(scored, failures, f"'{split}' cases of {data} with predictions in {folder}")
    about = {
        "predictions": str(folder), "data": str(data), "split": split,
        "split_file": str(index.split_file) if index.split_file else "none", "cases": scored,
        "num_classes": num_classes,
        "postprocessing": postprocessing.describe(),
        "nsd_tolerance": nsd_tolerance,
    }  # fmt: skip
    description = f"the masks in `{folder}` on `{data}` ({split}: {scored} cases)"
    return write_reports(
        output,
        rows,
        size_columns=["height", "width"],
        about=about,
        failures=failures,
        description=description,
    )
