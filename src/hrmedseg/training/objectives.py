"""Training objectives: modules whose ``forward(images, masks)`` returns (loss, logits).

Being modules, they are what DistributedDataParallel wraps, so gradient synchronisation sees the
whole computation, including losses that need more than one forward call of the model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from ..losses import SegmentationLoss, quality_loss


class Objective(nn.Module):
    """Holds the model, its loss, the IoU-head weight and the autocast dtype (None: fp32)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: SegmentationLoss,
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
    """Prompt-free models: the segmentation loss plus the IoU-head regression; logits (B, K, H, W)."""

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast(images.device.type):
            logits, predicted_iou = self.model(images, return_quality=True)
        loss = self.loss_fn(logits, masks)
        if self.quality_weight:
            loss = loss + self.quality_weight * quality_loss(predicted_iou, logits, masks)
        return loss, logits
