"""How an automatic model is run: one bundle of the settings that ``predict``, ``evaluate`` and
``serve`` share, so that they travel together instead of as six loose arguments.

Imports no PyTorch: the ONNX path uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .postprocess import Postprocessing
from .tiling import Tiling

if TYPE_CHECKING:  # annotations only: building a Segmenter imports PyTorch, the ONNX one does not
    from ..deployment.onnx_segmenter import OnnxSegmenter
    from .prompted import PromptedSegmenter
    from .segmenter import Segmenter


def refuse_zoom(max_zoom: int | None, instead: str) -> None:
    """Refuse a zoom (above 1) for what is not an HRMedSegSAM model decoding in windows; ``instead``
    says what was given, e.g. "this model is automatic"."""
    if max_zoom not in (None, 1):
        raise ConfigError(f"--zoom is for HRMedSegSAM models decoding in windows; {instead}")


@dataclass(frozen=True)
class SegmenterOptions:
    """The execution and output settings of an automatic model.

    Args:
        device: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N".
        batch_size: images per forward pass (with ``tiling``: windows per pass).
        tiling: segment each image at its own resolution by overlapping windows of the model's
            size (see :mod:`hrmedseg.inference.tiling`); None resizes each image to the model size
            (a model trained on native-scale windows is tiled either way).
        compile_mode: ``torch.compile`` mode, or "none" (eager).
        tta: test-time flips: "none", "hflip" (2 passes) or "flips" (4 passes); logits averaged.
        postprocessing: mask clean-up per class (see :mod:`hrmedseg.inference.postprocess`).
        max_zoom: promptable models decoding in native-scale windows: enlarge a small boxed
            object's window up to this many times (a power of two; see
            :class:`~hrmedseg.PromptedSegmenter`); 1: off; None: the model's default.

    Example:
        >>> options = SegmenterOptions(device="cpu", tiling=Tiling(), tta="hflip")
        >>> segmenter = options.segmenter("run/best.safetensors")
    """

    device: str = "auto"
    batch_size: int = 4
    tiling: Tiling | None = None
    compile_mode: str = "none"
    tta: str = "none"
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    max_zoom: int | None = None

    def segmenter(self, checkpoint: str | Path | list[str | Path]) -> Segmenter:
        """A :class:`~hrmedseg.Segmenter` of a model file (several: their ensemble)."""
        from .segmenter import Segmenter

        refuse_zoom(self.max_zoom, "this model is automatic")
        return Segmenter.from_checkpoint(
            checkpoint,
            self.device,
            batch_size=self.batch_size,
            tiling=self.tiling,
            compile_mode=self.compile_mode,
            tta=self.tta,
            postprocessing=self.postprocessing,
        )

    def prompted_segmenter(self, checkpoint: str | Path) -> PromptedSegmenter:
        """A :class:`~hrmedseg.PromptedSegmenter` of a promptable model file on ``device``: with
        ``tiling``, each object decoded in a window of the model's size at the image's own
        resolution (otherwise as the model was trained), small objects' windows enlarged up to
        ``max_zoom`` times; the settings only automatic models take (the windows' overlap and
        blending, flips, clean-up) are refused by name."""
        from .prompted import PromptedSegmenter, refuse_automatic_options, windows_of_tiling

        native_windows = windows_of_tiling(self.tiling)
        refuse_automatic_options(None, self.tta, self.postprocessing)
        return PromptedSegmenter.from_checkpoint(
            checkpoint, self.device, native_windows=native_windows, max_zoom=self.max_zoom
        )

    def onnx_segmenter(self, path: str | Path) -> OnnxSegmenter:
        """An onnxruntime segmenter of a graph from ``hrmedseg export`` (the device and compile
        settings are PyTorch's and do not apply)."""
        from ..deployment.onnx_segmenter import OnnxSegmenter

        refuse_zoom(self.max_zoom, "this is an ONNX graph")
        return OnnxSegmenter(
            path,
            batch_size=self.batch_size,
            tta=self.tta,
            postprocessing=self.postprocessing,
            tiling=self.tiling,
        )
