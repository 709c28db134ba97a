"""Connected-component clean-up of predicted masks (NumPy and SciPy only, so the ONNX path uses it).

A model that segments pixels independently leaves specks of false foreground and holes inside
objects; when the anatomy says what a mask may hold (one fetal head, one optic disc, nuclei of at
least some size), removing what it cannot hold lowers the surface distances (HD95 above all) and
rarely costs Dice. nnU-Net applies "keep the largest component" when it helps on validation,
MONAI offers the same steps as transforms; here they are options of ``predict`` and ``evaluate``.

Components are fully connected (8 neighbours in 2-D, 26 in 3-D), and every step works per
foreground class of an index mask (binary: class 1), in this order: drop components smaller than
``min_size``, keep only the largest component, fill holes. Removed pixels become background; a
hole is filled only where it is background, so another class enclosed by an object stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError


@dataclass(frozen=True)
class Postprocessing:
    """What to remove from (or fill in) a predicted mask; the default changes nothing.

    Attributes:
        min_size: components of fewer pixels (voxels) than this become background.
        keep_largest: keep only the largest component of each class (one object per image).
        fill_holes: fill background enclosed by one class with that class.
    """

    min_size: int = 0
    keep_largest: bool = False
    fill_holes: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int | np.integer):
            raise ConfigError(f"min_size must be a whole number of pixels, got {self.min_size!r}")
        if self.min_size < 0:
            raise ConfigError(f"min_size must be 0 or more pixels, got {self.min_size}")

    @property
    def active(self) -> bool:
        return self.min_size > 1 or self.keep_largest or self.fill_holes

    def describe(self) -> dict[str, int | bool] | str:
        """The settings for a report, or "none" when nothing is changed."""
        return asdict(self) if self.active else "none"

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        """The cleaned copy of an (H, W) or (X, Y, Z) index mask (binary: 0/1)."""
        if not self.active:
            return mask
        out = mask.copy()
        structure = np.ones((3,) * mask.ndim, dtype=bool)
        for c in np.unique(mask):
            if c == 0:
                continue
            labels, count = ndimage.label(out == c, structure)
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            sizes[0] = 0  # background, never kept as a component
            keep = sizes >= max(self.min_size, 1)
            if self.keep_largest and keep.any():
                keep &= sizes == sizes[keep].max()
                keep[np.flatnonzero(keep)[1:]] = False  # a tie keeps the first in scan order
            out[(labels > 0) & ~keep[labels]] = 0
            if self.fill_holes:
                # Background is 4- (6-) connected, the dual of the objects' full connectivity.
                out[ndimage.binary_fill_holes(out == c) & (out == 0)] = c
        return out
