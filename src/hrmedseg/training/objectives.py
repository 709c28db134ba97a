"""Training objectives: modules whose ``forward(images, masks)`` returns (loss, logits).

Being modules, they are what DistributedDataParallel wraps, so gradient synchronisation sees the
whole computation, including losses that need more than one forward call of the model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from ..losses import quality_loss


class Objective(nn.Module):
    """Holds the model, its loss, the IoU-head weight and the autocast dtype (None: fp32)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,  # (logits, target) -> scalar; see hrmedseg.losses.register_loss
        *,
        quality_weight: float,
        amp_dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.quality_weight = quality_weight
        self.amp_dtype = amp_dtype

    def autocast(self, device_type: str) -> AbstractContextManager:
        return torch.autocast(device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)


class AutomaticObjective(Objective):
    """Prompt-free models: the segmentation loss plus the IoU-head regression; logits (B, K, H, W).

    A model whose config sets ``deep_supervision`` (hrmedseg_detail) also has its 1/4-resolution
    logits scored by the same loss, with that weight, against the masks sampled at the centre of
    each 4×4 cell (nearest neighbour, as nnU-Net downsamples targets): the coarse path then learns
    the shapes by itself, and the full-resolution head the detail.
    """

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        deep_supervision = getattr(self.model.config, "deep_supervision", 0.0)
        with self.autocast(images.device.type):
            if deep_supervision:
                logits, predicted_iou, low_res = self.model(images, return_quality=True, return_low_res=True)
            else:
                logits, predicted_iou = self.model(images, return_quality=True)
        loss = self.loss_fn(logits, masks)
        if deep_supervision:
            stride = masks.shape[-1] // low_res.shape[-1]
            coarse_masks = masks[..., stride // 2 :: stride, stride // 2 :: stride]
            loss = loss + deep_supervision * self.loss_fn(low_res, coarse_masks)
        if self.quality_weight:
            loss = loss + self.quality_weight * quality_loss(predicted_iou, logits, masks)
        return loss, logits
