"""What every automatic segmenter shares (the base of Segmenter and OnnxSegmenter), PyTorch or
onnxruntime: image inputs, probabilities to masks, and ``predict``. NumPy only, so the ONNX
segmenter can build on it without PyTorch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..data.io import as_float_rgb, read_image
from ..errors import ConfigError
from .postprocess import Postprocessing

ImageInput = str | Path | np.ndarray

# Test-time augmentation: the flips whose logits are averaged with the plain pass, as axes of a
# (B, K, h, w) batch. "flips" mirrors every spatial axis and both together (nnU-Net's mirroring in
# 2-D); "hflip" only left-right, the one flip training applies by default.
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": (),
    "hflip": ((-1,),),
    "flips": ((-1,), (-2,), (-2, -1)),
}


def tta_flips(tta: str) -> tuple[tuple[int, ...], ...]:
    """The flips of a test-time augmentation name (see ``TTA_FLIPS``)."""
    if tta not in TTA_FLIPS:
        raise ConfigError(f"test-time augmentation must be one of {sorted(TTA_FLIPS)}, got {tta!r}")
    return TTA_FLIPS[tta]


class SegmenterBase:
    """Base of :class:`~hrmedseg.Segmenter` and the ONNX ``OnnxSegmenter``: a subclass sets
    ``num_classes``, ``batch_size`` and ``images_per_batch`` and yields probabilities from
    :meth:`iter_probabilities`. Masks go through ``postprocessing`` (default: none)."""

    num_classes: int
    batch_size: int
    images_per_batch: int  # images decoded together by folder prediction
    postprocessing: Postprocessing = Postprocessing()

    def _prepare(self, image: ImageInput) -> np.ndarray:
        return read_image(image) if isinstance(image, str | Path) else as_float_rgb(image)

    def iter_probabilities(self, images: Sequence[ImageInput]) -> Iterator[np.ndarray]:
        """Per image, class probabilities (K, H, W) float32 at the image's original size
        (binary: K = 1, the foreground probability)."""
        raise NotImplementedError

    def classes(self, probs: np.ndarray) -> np.ndarray:
        """(K, H, W) probabilities -> (H, W) uint8 class indices (binary: 0/1), before
        ``postprocessing``."""
        if self.num_classes == 1:
            return (probs[0] > 0.5).astype(np.uint8)
        return probs.argmax(0).astype(np.uint8)

    def probabilities_to_mask(self, probs: np.ndarray) -> np.ndarray:
        """(K, H, W) probabilities -> (H, W) uint8 mask of class indices (binary: 0/1), cleaned by
        ``postprocessing``."""
        return self.postprocessing(self.classes(probs))

    def predict(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray | list[np.ndarray]:
        """Masks at original size: one (H, W) array for one image (path or array), a list for a list.

        An array input is one image: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or float
        in [0, 1].
        """
        single = isinstance(images, str | Path | np.ndarray)
        batch = [images] if single else list(images)
        masks = [self.probabilities_to_mask(p) for p in self.iter_probabilities(batch)]
        return masks[0] if single else masks
