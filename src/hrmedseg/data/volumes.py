"""NIfTI volumes (``.nii``, ``.nii.gz``, read and written with nibabel): CT and MRI scans that the
2-D models segment slice by slice.

A volume keeps its voxel array as stored (no reorientation), its affine and its header, so a
mask written with :func:`write_mask_volume` lies on exactly the scan's grid and orientation.
Intensities become [0, 1] by a CT window (level and width, in the scan's units, e.g. Hounsfield)
or, without one, by the volume's own minimum and maximum.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..errors import ConfigError, DataError, MissingDependencyError

VOLUME_SUFFIXES = (".nii.gz", ".nii")


def is_volume(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    suffix = next(s for s in VOLUME_SUFFIXES if name.lower().endswith(s))
    return name[: -len(suffix)]


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError:
        raise MissingDependencyError("NIfTI volumes need nibabel: pip install 'hrmedseg[nifti]'") from None
    return nibabel


@dataclass
class Volume:
    """A 3-D scan: ``data`` (X, Y, Z) float32 in the file's voxel order, with its affine and header."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: Any

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along the three array axes (mm for most scanners)."""
        return tuple(float(z) for z in self.header.get_zooms()[:3])


def read_volume(path: str | os.PathLike) -> Volume:
    """Load a 3-D NIfTI volume; a 4-D one (other than a single trailing frame), an empty one, an
    unreadable file or non-finite intensities raise :class:`DataError` naming the file."""
    nibabel = _nibabel()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        image = nibabel.load(str(path))
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            data = np.asarray(image.dataobj, dtype=np.float32)[..., 0]
        elif len(shape) == 3:
            data = np.asarray(image.dataobj, dtype=np.float32)
        else:
            raise DataError(f"{path}: a {len(shape)}-D volume of shape {shape}; a 3-D volume is expected")
    except DataError:
        raise
    except Exception as err:  # nibabel raises several types for damaged or foreign files
        raise DataError(f"{path}: unreadable NIfTI volume ({err})") from None
    if data.ndim != 3 or 0 in data.shape:  # nothing to segment, and every later step would fail on it
        raise DataError(f"{path}: an empty volume (shape {tuple(shape)}), no voxels to segment")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise DataError(f"{path}: {bad} non-finite intensities (NaN or infinite)")
    return Volume(path, data, image.affine, image.header)


def check_window(window: object, name: str = "--window") -> tuple[float, float] | None:
    """An intensity window (level, width) as two floats, or None; refuses, naming ``name``, a
    window that is not two finite numbers with a positive width (zero divides by zero, a negative
    width silently inverts the intensities)."""
    if window is None:
        return None
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two numbers, LEVEL and WIDTH, got {window!r}") from None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise ConfigError(f"{name} needs a finite LEVEL and a finite WIDTH above 0, got {level} {width}")
    return level, width


def to_unit_range(data: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Intensities to [0, 1]: a (level, width) window clipped at its ends (:func:`check_window`),
    or min-max over the volume."""
    if window is not None:
        level, width = check_window(window, "the intensity window")
        return np.clip((data - (level - width / 2)) / width, 0, 1).astype(np.float32)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros_like(data, dtype=np.float32)
    return ((data - low) / (high - low)).astype(np.float32)


def write_mask_volume(path: str | os.PathLike, mask: np.ndarray, reference: Volume) -> Path:
    """Save an integer mask of ``reference``'s shape with its affine and header (uint8, unscaled)."""
    nibabel = _nibabel()
    if mask.shape != reference.data.shape:
        raise ValueError(f"mask {mask.shape} and volume {reference.data.shape} differ in shape")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nibabel.Nifti1Image(mask.astype(np.uint8), reference.affine, header)
    image.header.set_slope_inter(1, 0)
    # nibabel chooses the format by the name, so the temporary file keeps ".nii.gz".
    return atomic_write(path, lambda tmp: nibabel.save(image, tmp), keep_suffixes=True)


def volumes_in(folder: str | os.PathLike) -> list[Path]:
    """The NIfTI volumes directly inside ``folder`` (sorted; none if it is not a folder)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and is_volume(p)) if folder.is_dir() else []


def read_volume_pair(image_path: Path, mask_path: Path) -> tuple[Volume, Volume]:
    """An image volume and its mask, which must have the image's shape (else :class:`DataError`)."""
    image, mask = read_volume(image_path), read_volume(mask_path)
    if mask.data.shape != image.data.shape:
        raise DataError(
            f"{mask_path}: mask shape {mask.data.shape} differs from its image's {image.data.shape}"
        )
    return image, mask


def read_volume_split(data: Path, cases: Iterable[str]) -> dict[str, list[str]] | None:
    """The volume dataset's ``split.json`` (lists of cases, all among ``cases``), or None."""
    from .splits import read_split

    split_file = data / "split.json"
    return read_split(split_file, cases, what="volume") if split_file.is_file() else None


def find_volume_pairs(data: Path) -> dict[str, tuple[Path, Path]]:
    """Case -> (image, mask) of a volume dataset folder; unmatched files raise :class:`DataError`."""
    images, masks = ({volume_stem(p): p for p in volumes_in(data / kind)} for kind in ("images", "masks"))
    problems = [
        f"{images[c]}: no mask volume '{c}' in {data / 'masks'}" for c in sorted(set(images) - set(masks))
    ]
    problems += [
        f"{masks[c]}: no image volume '{c}' in {data / 'images'}" for c in sorted(set(masks) - set(images))
    ]
    if problems:
        raise DataError(f"{data}: images and masks do not pair up:\n  " + "\n  ".join(problems))
    return {case: (images[case], masks[case]) for case in images}


def is_volume_dataset(data: str | Path) -> bool:
    return bool(volumes_in(Path(data) / "images"))
