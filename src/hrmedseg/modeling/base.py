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
