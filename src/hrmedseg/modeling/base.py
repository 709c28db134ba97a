"""The contract between a model and the rest of the package (smp's ``SegmentationModel`` is the
model for it): training, evaluation, checkpoints and inference rely on these members only, so a
new architecture, or a baseline in ``benchmarks/``, that implements them runs through all of it.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class SegmentationModel(nn.Module):
    """A model with the :class:`ModelConfig` that rebuilds it (checkpoints store it) and that says
    how to feed it (input size, normalisation, patch size).

    Subclasses implement ``set_grad_checkpointing`` and ``forward``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward instead of storing them (less memory, more time)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement gradient checkpointing")


class AutomaticSegmentationModel(SegmentationModel):
    """A prompt-free model: ``forward(images)`` gives one logit map per class.

    ``config.num_classes == 1`` is binary (one logit map for a sigmoid); ``K >= 2`` gives K maps for
    a softmax over classes. ``Segmenter``, ``evaluate`` and ``train`` take any such model.
    """

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(
        self, images: torch.Tensor, return_quality: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """images (B, in_chans, H, W), H and W multiples of ``config.patch_size``, normalised with
        ``config.pixel_mean``/``pixel_std`` -> logits (B, num_classes, H, W). With
        ``return_quality``: ``(logits, quality)``, where quality is the model's predicted IoU of
        each class map (B, num_classes), or None for a model without such a head."""
        raise NotImplementedError


class PromptableSegmentationModel(SegmentationModel):
    """A promptable, class-agnostic model in SAM's convention: :meth:`embed` computes an image's
    embedding once, and :meth:`decode` turns prompts (points, boxes, a mask) into masks against
    it. ``Predictor``, prompted training, prompted evaluation, ``serve`` and the ONNX
    export take any such model.

    Coordinates are pixels of the model input, (x, y) order; boxes are XYXY.
    """

    image_encoder: nn.Module  # gives embed()'s image_embeddings (B, D, H/p, W/p), p = patch size
    # Whether decode's ``masks`` hold detail finer than its ``low_res_logits`` (a detail path): the
    # Predictor then resizes the masks, not the low-res logits, to the original image.
    full_resolution_masks = False

    def embed(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What :meth:`decode` reads of images (B, C_in, H, W): ``image_embeddings`` (B, D, h, w)
        and, for a model with more inputs to its decoder, those too. Every tensor is batch-first,
        so a caller selects images by indexing each, and passes them on as
        ``decode(**embedding, image_size=...)``."""
        return {"image_embeddings": self.image_encoder(images)}

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_size: tuple[int, int],
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Masks of prompts against precomputed embeddings (B or 1, D, h, w) of an ``image_size``
        (H, W) input.

        Args:
            image_embeddings: :meth:`embed`'s ``image_embeddings``; one embedding is shared by all
                prompt sets.
            image_size: (H, W) of the model input the embeddings come from.
            point_coords: (B, N, 2) (x, y) pixels, with ``point_labels`` (B, N): 1 = foreground,
                0 = background, -1 = ignore.
            boxes: (B, 4) XYXY pixels.
            mask_inputs: (B, 1, H/4, W/4) logits of a previous prediction.
            multimask_output: the multimask outputs instead of the single mask.

        Returns:
            ``masks`` (B, M, H, W) logits, ``iou_predictions`` (B, M) and ``low_res_logits``
            (B, M, H/4, W/4).
        """
        raise NotImplementedError

    def forward(
        self,
        images: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Encode ``images`` (B, C_in, H, W) and decode each with its own prompts (see :meth:`decode`)."""
        return self.decode(
            **self.embed(images),
            image_size=tuple(images.shape[-2:]),
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_inputs=mask_inputs,
            multimask_output=multimask_output,
        )
