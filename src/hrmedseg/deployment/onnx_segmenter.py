"""Automatic segmentation with an exported ONNX graph, on onnxruntime, without PyTorch.

The preprocessing is the training pipeline's, written in NumPy and Pillow: the image is resized
to the model's size with antialiased bilinear filtering (as ``data.transforms.image_to_tensor``;
Pillow's filter and torch's antialiased one are the same triangle filter), normalised with the
model's pixel mean and std; the logits are resized back to each image's original size with
plain bilinear interpolation (half-pixel centres, as ``F.interpolate(align_corners=False)``)
before the threshold or the argmax. Tiled (``tiling``, and always for a model trained at its
images' own resolution), each image is segmented at its own size by the windows and blending of
:mod:`hrmedseg.inference.tiling`, the same code the PyTorch ``Segmenter`` uses. Only NumPy,
SciPy (the masks' postprocessing), Pillow and onnxruntime are imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import CheckpointError, InputNotFoundError, MissingDependencyError
from ..inference.postprocess import Postprocessing
from ..inference.segmenter_base import ImageInput, SegmenterBase, tta_flips
from ..inference.tiling import Tiling, blend_windows, native_tiling

# Metadata keys of an exported graph, and its roles (written by export_onnx).
GRAPH_KEY, CONFIG_KEY = "hrmedseg_graph", "hrmedseg_config"
SEGMENTATION, SAM_ENCODER, SAM_DECODER = "segmentation", "sam_encoder", "sam_decoder"


def resize_antialiased(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float32 -> (h, w, C) with Pillow's bilinear (triangle) filter, per channel."""
    if image.shape[:2] == tuple(size):
        return image
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize(size[::-1], Image.BILINEAR))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def _bilinear_axis(length_in: int, length_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (low, high) and the high one's weight for each output position."""
    position = (np.arange(length_out) + 0.5) * (length_in / length_out) - 0.5
    position = np.clip(position, 0, length_in - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, length_in - 1)
    return low, high, (position - low).astype(np.float32)


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) -> (K, H, W) bilinear with half-pixel centres and no antialiasing."""
    if maps.shape[1:] == tuple(size):
        return maps
    y0, y1, wy = _bilinear_axis(maps.shape[1], size[0])
    x0, x1, wx = _bilinear_axis(maps.shape[2], size[1])
    rows = maps[:, y0] * (1 - wy)[None, :, None] + maps[:, y1] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


class OnnxSegmenter(SegmenterBase):
    """Predicts like :class:`hrmedseg.Segmenter`, from a graph written by ``hrmedseg export``.

    Example:
        >>> segmenter = OnnxSegmenter("model.onnx")
        >>> mask = segmenter.predict("scan.png")     # (H, W) uint8 class indices at original size
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 4,
        threads: int | None = None,
        tta: str = "none",
        postprocessing: Postprocessing | None = None,
        tiling: Tiling | None = None,
    ) -> None:
        self.tta, self.flips = tta, tta_flips(tta)
        self.postprocessing = postprocessing or Postprocessing()
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependencyError(
                "ONNX prediction needs onnxruntime: pip install onnxruntime"
            ) from None
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"ONNX model not found: {path}")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own types for damaged or foreign files
            raise CheckpointError(f"{path}: not a readable ONNX model ({err})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        role = metadata.get(GRAPH_KEY)
        if role != SEGMENTATION:
            made_by = f"the '{role}' graph of an hrmedseg export" if role else "not exported by hrmedseg"
            raise CheckpointError(
                f"{path}: {made_by}; predict --onnx needs the graph of an automatic (HRMedSeg) model, "
                "which `hrmedseg export` writes for HRMedSeg checkpoints"
            )
        config = self._checked_config(path, metadata.get(CONFIG_KEY))
        # Resized, a native-scale model would see its objects at a scale it never learned.
        native = native_tiling(config.get("input_scale", "resized"))
        self.tiling = tiling if tiling is not None else native
        self.size = tuple(config["img_size"])
        self.num_classes = int(config["num_classes"])
        self.mean = np.asarray(config["pixel_mean"], dtype=np.float32)
        self.std = np.asarray(config["pixel_std"], dtype=np.float32)
        self.batch_size = batch_size
        # Tiled, batch_size counts windows, and images are decoded one at a time.
        self.images_per_batch = 1 if self.tiling is not None else batch_size
        self.input_name = self.session.get_inputs()[0].name

    def _checked_config(self, path: Path, text: str | None) -> dict:
        """The model config stored with the graph, refused by name when it is unreadable or
        disagrees with the graph's own input and output shapes (an edited or mixed-up file)."""
        try:
            config = json.loads(text or "")
            size, classes = tuple(config["img_size"]), int(config["num_classes"])
            channels = int(config.get("in_chans", 3))
            if not {"pixel_mean", "pixel_std"} <= set(config):
                raise KeyError("pixel_mean, pixel_std")
        except (json.JSONDecodeError, TypeError, KeyError, ValueError):
            raise CheckpointError(f"{path}: its '{CONFIG_KEY}' metadata is not a model config") from None
        expected_input = [channels, *size]
        given_input = self.session.get_inputs()[0].shape[1:]
        given_classes = self.session.get_outputs()[0].shape[1]
        fixed = [d for d in given_input if isinstance(d, int)]
        if (len(fixed) == 3 and given_input != expected_input) or (
            isinstance(given_classes, int) and given_classes != classes
        ):
            raise CheckpointError(
                f"{path}: its metadata describes {channels} x {size[0]} x {size[1]} inputs and {classes} "
                f"class map(s), but the graph takes {given_input} and gives {given_classes}; export it again"
            )
        return config

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) normalised float32 at the model size -> (B, K, h, w) logits, averaged over
        the test-time flips (as :class:`hrmedseg.Segmenter`)."""
        total = self.session.run(None, {self.input_name: batch})[0].astype(np.float32)
        for axes in self.flips:
            flipped = np.ascontiguousarray(np.flip(batch, axes))
            total += np.flip(self.session.run(None, {self.input_name: flipped})[0], axes)
        return total / (1 + len(self.flips))

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        if self.num_classes == 1:
            return 1 / (1 + np.exp(-logits))
        exp = np.exp(logits - logits.max(0, keepdims=True))
        return exp / exp.sum(0, keepdims=True)

    def iter_probabilities(self, images: Sequence[ImageInput]) -> Iterator[np.ndarray]:
        if self.tiling is not None:
            for image in images:
                normalised = ((self._prepare(image) - self.mean) / self.std).transpose(2, 0, 1)
                logits = blend_windows(
                    self.logits,
                    normalised.astype(np.float32),
                    self.size,
                    tiling=self.tiling,
                    batch_size=self.batch_size,
                )
                yield self._probabilities(logits)
            return
        for start in range(0, len(images), self.batch_size):
            arrays = [self._prepare(img) for img in images[start : start + self.batch_size]]
            resized = [np.clip(resize_antialiased(a.astype(np.float32), self.size), 0, 1) for a in arrays]
            batch = np.stack([((r - self.mean) / self.std).transpose(2, 0, 1) for r in resized])
            for array, item in zip(arrays, self.logits(batch.astype(np.float32)), strict=True):
                yield self._probabilities(resize_bilinear(item, array.shape[:2]))
