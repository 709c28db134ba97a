"""Segment NIfTI volumes slice by slice with a 2-D automatic model.

Each slice along ``axis`` (of the voxel array as stored; default the last, the axial one for most
CT and MRI files) becomes a grey image in [0, 1] (see :func:`hrmedseg.data.volumes.to_unit_range`)
and goes through the :class:`~hrmedseg.Segmenter` exactly as a 2-D image would, at the slice's
own size; the slice masks are stacked back into a volume of the scan's shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.volumes import (
    VOLUME_SUFFIXES,
    Volume,
    read_volume,
    to_unit_range,
    volume_stem,
    volumes_in,
    write_mask_volume,
)
from ..errors import DataError
from ..output import ensure_output_folder, in_the_way, raise_if_nothing_done, write_failures
from .files import FolderReport
from .segmenter import Segmenter


def segment_volume(
    segmenter: Segmenter, volume: Volume, *, axis: int = -1, window: tuple[float, float] | None = None
) -> np.ndarray:
    """The (X, Y, Z) uint8 mask of ``volume`` (class indices; binary 0/1), slice by slice along ``axis``;
    the segmenter's postprocessing applies to the whole volume (components connected in 3-D)."""
    if not -3 <= axis <= 2:
        raise DataError(f"{volume.path}: axis {axis} does not exist in a 3-D volume")
    slices = list(np.moveaxis(to_unit_range(volume.data, window), axis, 0))
    masks = [segmenter.classes(p) for p in segmenter.iter_probabilities(slices)]
    return segmenter.postprocessing(np.moveaxis(np.stack(masks), 0, axis))


def list_volumes(path: str | Path) -> list[Path]:
    """The volume itself, or the volumes directly inside a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    volumes = volumes_in(path)
    if not volumes:
        raise DataError(f"{path}: no NIfTI volumes ({', '.join(VOLUME_SUFFIXES)})")
    return volumes


def predict_volumes_to_folder(
    segmenter: Segmenter,
    inputs: str | Path,
    output: str | Path,
    *,
    axis: int = -1,
    window: tuple[float, float] | None = None,
    progress: bool = True,
) -> FolderReport:
    """Write ``<stem>_mask.nii.gz`` per volume, with the scan's shape, affine and header."""
    volumes = list_volumes(inputs)
    output = ensure_output_folder(output, inputs=inputs)
    report = FolderReport()
    for path in tqdm(volumes, disable=not progress, desc="predict", unit="volume"):
        target = output / f"{volume_stem(path)}_mask.nii.gz"
        problem = in_the_way([target])
        if problem:
            report.failures.append(problem)
            continue
        try:
            volume = read_volume(path)
        except DataError as err:
            report.failures.append(str(err))
            continue
        mask = segment_volume(segmenter, volume, axis=axis, window=window)
        report.written.append(write_mask_volume(target, mask, volume))
    write_failures(output, report.failures)
    raise_if_nothing_done(len(report.written), report.failures, "volumes")
    return report
