"""Automatic segmentation of images of any size with a trained HRMedSeg model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_model
from ..data.transforms import image_to_tensor, normalize
from ..errors import ConfigError
from ..modeling import AutomaticSegmentationModel, ModelConfig
from ..runtime import compile_model, resolve_device
from .postprocess import Postprocessing
from .segmenter_base import ImageInput, SegmenterBase, tta_flips
from .tiling import Tiling, blend_windows, native_tiling

# What ensemble members must share: how an image becomes their input, and what comes out.
ENSEMBLE_FIELDS = ("num_classes", "img_size", "pixel_mean", "pixel_std", "input_scale")


def ensemble_config(configs: Sequence[ModelConfig]) -> ModelConfig:
    """The first config, once every other agrees with it on ``ENSEMBLE_FIELDS`` (else a
    :class:`ConfigError` naming the field and both values)."""
    if not configs:
        raise ConfigError("a Segmenter needs at least one model")
    first = configs[0]
    for index, other in enumerate(configs[1:], start=1):
        for name in ENSEMBLE_FIELDS:
            if getattr(other, name) != getattr(first, name):
                raise ConfigError(
                    f"ensemble models differ in {name}: {getattr(first, name)} (model 0, "
                    f"{first.name}) against {getattr(other, name)} (model {index}, {other.name})"
                )
    return first


@torch.no_grad()
def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: tuple[int, int],
    *,
    tiling: Tiling,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Blended logits (K, H, W) float32 on the CPU of a normalised (C, H, W) image (see
    :mod:`.tiling`). ``model`` (a module, or any function) maps (B, C, h, w) windows on ``device``
    to (B, K, h, w) logits; ``window`` is (h, w)."""

    def window_logits(tiles: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(tiles).to(device)).float().cpu().numpy()

    image = image.detach().float().cpu().numpy()
    return torch.from_numpy(blend_windows(window_logits, image, window, tiling=tiling, batch_size=batch_size))


class Segmenter(SegmenterBase):
    """Inference with an automatic model (:class:`HRMedSeg`, or any
    :class:`AutomaticSegmentationModel`) and the training pipeline's preprocessing.

    Images are resized to the model's ``img_size``, normalised with its pixel mean/std, segmented
    in batches, and the logits are interpolated back to each image's original size before the
    threshold (binary: sigmoid > 0.5) or argmax (multi-class). With ``tiling``, each image is
    instead segmented at its own resolution by overlapping windows of the model's size, blended
    (see :mod:`.tiling`): detail for large images, at the cost of the context of a whole view. A
    model trained at its images' own resolution (``config.input_scale == "native"``) is always
    tiled, with ``Tiling()`` unless ``tiling`` says otherwise.
    With ``tta`` ("hflip" or "flips", see ``TTA_FLIPS``), the logits of each image (or window)
    are the mean over the plain pass and its flipped copies, flipped back: one pass per flip more.
    ``postprocessing`` cleans each mask (see :mod:`.postprocess`; probabilities are left as they are).
    Given several models (an ensemble: folds of a cross-validation, or runs with other seeds or
    recipes), the logits are their mean, as for the flips; they must share the input contract
    (``ENSEMBLE_FIELDS`` of their configs).

    Args:
        model: an automatic model, or several (an ensemble).
        device: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N".
        batch_size: images per forward pass (with tiling: windows per pass).
        tiling: the sliding-window settings, or None to resize each image to the model's size.
        compile_mode: ``torch.compile`` mode, or "none" (eager).
        tta: test-time flips: "none", "hflip" or "flips".
        postprocessing: the clean-up of each mask, or None (none).

    Example:
        >>> seg = Segmenter.from_checkpoint("run/best.safetensors")
        >>> mask = seg.predict("scan.png")          # (H, W) uint8 class indices at original size
        >>> masks = seg.predict([img_a, img_b])     # one mask per image, each at its own size
        >>> ensemble = Segmenter.from_checkpoint(["fold0/best.safetensors", "fold1/best.safetensors"])
    """

    def __init__(
        self,
        model: AutomaticSegmentationModel | Sequence[AutomaticSegmentationModel],
        device: str | torch.device = "auto",
        *,
        batch_size: int = 4,
        tiling: Tiling | None = None,
        compile_mode: str = "none",
        tta: str = "none",
        postprocessing: Postprocessing | None = None,
    ) -> None:
        models = [model] if isinstance(model, torch.nn.Module) else list(model)
        for member in models:
            if not isinstance(member, AutomaticSegmentationModel):
                raise ConfigError(
                    f"Segmenter needs an automatic HRMedSeg model, got {type(member).__name__}; "
                    "promptable HRMedSegSAM models are used through hrmedseg.Predictor"
                )
        config = ensemble_config([m.config for m in models])
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.models = [m.to(self.device).eval() for m in models]
        for member in self.models:
            compile_model(member, compile_mode)
        self.config = config
        self.batch_size = batch_size
        self.size = config.img_size
        self.num_classes = config.num_classes
        # Resized, a native-scale model would see its objects at a scale it never learned.
        self.tiling = tiling if tiling is not None else native_tiling(config.input_scale)
        self.tta, self.flips = tta, tta_flips(tta)
        self.postprocessing = postprocessing or Postprocessing()
        # Tiled, batch_size counts windows, and images are decoded one at a time.
        self.images_per_batch = 1 if self.tiling is not None else batch_size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | Sequence[str | Path],
        device: str = "auto",
        *,
        batch_size: int = 4,
        tiling: Tiling | None = None,
        compile_mode: str = "none",
        tta: str = "none",
        postprocessing: Postprocessing | None = None,
    ) -> Segmenter:
        paths = [path] if isinstance(path, str | Path) else list(path)
        models = [load_model(p) for p in paths]
        return cls(
            models,
            device,
            batch_size=batch_size,
            tiling=tiling,
            compile_mode=compile_mode,
            tta=tta,
            postprocessing=postprocessing,
        )

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) normalised images at the model size -> (B, K, h, w) float32 logits,
        averaged over the models and the test-time flips."""
        total = torch.zeros((), device=batch.device)
        for model in self.models:
            total = total + model(batch).float()
            for dims in self.flips:
                total += model(batch.flip(dims)).float().flip(dims)
        return total / (len(self.models) * (1 + len(self.flips)))

    @torch.no_grad()
    def iter_probabilities(self, images: Sequence[ImageInput]) -> Iterator[np.ndarray]:
        config = self.config
        if self.tiling is not None:
            for image in images:
                array = self._prepare(image)
                tensor = normalize(
                    torch.from_numpy(array).permute(2, 0, 1), config.pixel_mean, config.pixel_std
                )
                logits = sliding_window_logits(
                    self.logits,
                    tensor,
                    self.size,
                    tiling=self.tiling,
                    batch_size=self.batch_size,
                    device=self.device,
                )
                yield (logits.sigmoid() if self.num_classes == 1 else logits.softmax(0)).numpy()
            return
        for start in range(0, len(images), self.batch_size):
            arrays = [self._prepare(img) for img in images[start : start + self.batch_size]]
            batch = torch.stack([image_to_tensor(a, self.size) for a in arrays]).to(self.device)
            logits = self.logits(normalize(batch, config.pixel_mean, config.pixel_std))
            for array, item in zip(arrays, logits, strict=True):
                full = F.interpolate(item[None], size=array.shape[:2], mode="bilinear", align_corners=False)[
                    0
                ]
                probs = full.sigmoid() if self.num_classes == 1 else full.softmax(0)
                yield probs.cpu().numpy()
