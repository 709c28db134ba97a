"""One image prompted object by object, as an annotator does it on the ``serve`` page.

The whole image is embedded once and every prompt decoded against it, as in SAM; or, for a
model that works at the images' own resolution, each prompt is decoded in the native-scale window
that :func:`~hrmedseg.inference.prompted.object_windows` gives it (the window ``evaluate`` and
``predict`` use), each window embedded on its first prompt and kept for the next ones.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from ..data.io import as_float_rgb
from ..modeling import PromptableSegmentationModel
from .prompted import ObjectPrompt, default_zoom, object_windows, resolve_zoom, shifted_prompt
from .sam_predictor import Predictor

Region = tuple[int, int, int, int]  # top, left, bottom, right in original pixels


class ImagePrompter:
    """Masks of one image, one prompt set at a time.

    Args:
        model: a promptable model (HRMedSegSAM).
        device: "auto", "cpu", "cuda" or "cuda:N".
        window: (height, width) in original pixels, usually the model's input size: decode each
            prompt set in a window of the image at its own resolution; None: in the whole image
            resized to the model's size. An image no larger than the window is decoded whole.
        max_zoom: with ``window``, enlarge a small boxed object's window up to this many times,
            as :class:`~hrmedseg.PromptedSegmenter` does (a power of two; 1: off; None: the model's
            default).
        max_windows: window embeddings kept; the least recently used is dropped beyond it.

    Example:
        >>> prompter = hrmedseg.ImagePrompter(model, "cpu", window=model.config.img_size)
        >>> prompter.set_image(image)                     # (H, W, 3), any size
        >>> masks, scores = prompter.predict(ObjectPrompt(box=np.array([40, 60, 70, 90])))
        >>> masks.shape                                   # (1, H, W) boolean
    """

    def __init__(
        self,
        model: PromptableSegmentationModel,
        device: str | torch.device = "auto",
        *,
        window: tuple[int, int] | None = None,
        max_zoom: int | None = None,
        max_windows: int = 16,
    ) -> None:
        self.model, self.device = model, device
        self.window = None if window is None else tuple(window)
        self.max_zoom = resolve_zoom(max_zoom, self.window, default=default_zoom(model.config))
        self.max_windows = max_windows
        self.predictors: OrderedDict[Region, Predictor] = OrderedDict()
        self.pixels: np.ndarray | None = None  # kept only while windows may still be embedded
        self.size: tuple[int, int] | None = None

    @property
    def original_size(self) -> tuple[int, int]:
        if self.size is None:
            raise RuntimeError("call set_image(image) before predicting")
        return self.size

    @property
    def windowed(self) -> bool:
        """Whether prompts are decoded in windows (False: the image is embedded whole)."""
        height, width = self.original_size
        larger = self.window is not None and (height > self.window[0] or width > self.window[1])
        return larger or self.max_zoom > 1

    def set_image(self, image: np.ndarray) -> None:
        """Take a new image (H, W[, 3|4]) uint8 or [0, 1] float; embed it now unless windowed
        (then the image is kept, as float32 RGB, for the windows still to embed)."""
        self.pixels = as_float_rgb(image)
        self.size = self.pixels.shape[:2]
        self.predictors.clear()
        if not self.windowed:
            self._predictor((0, 0, *self.size))
            self.pixels = None

    def predict(self, prompt: ObjectPrompt, *, multimask_output: bool) -> tuple[np.ndarray, np.ndarray]:
        """The masks of one prompt set, (C, H, W) boolean at the original size (C = 3 with
        ``multimask_output``, else 1), and their predicted IoUs (C,)."""
        height, width = self.original_size
        if self.windowed:
            windows = object_windows([prompt], (height, width), self.window, max_zoom=self.max_zoom)
            region = next(iter(windows))
        else:
            region = (0, 0, height, width)
        top, left, bottom, right = region
        local = shifted_prompt(prompt, np.array([left, top], dtype=np.float64))
        masks, scores, _ = self._predictor(region).predict(
            local.points, local.labels, local.box, multimask_output=multimask_output
        )
        if region == (0, 0, height, width):
            return masks, scores
        placed = np.zeros((len(masks), height, width), dtype=bool)
        placed[:, top:bottom, left:right] = masks
        return placed, scores

    def _predictor(self, region: Region) -> Predictor:
        """The predictor holding the embedding of ``region``, computed on first use."""
        if region in self.predictors:
            self.predictors.move_to_end(region)
            return self.predictors[region]
        top, left, bottom, right = region
        predictor = Predictor(self.model, self.device)
        predictor.set_image(self.pixels[top:bottom, left:right])
        self.predictors[region] = predictor
        while len(self.predictors) > self.max_windows:
            self.predictors.popitem(last=False)
        return predictor
