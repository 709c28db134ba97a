"""Baseline models for the benchmarks (benchmark-only dependency: segmentation-models-pytorch)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from hrmedseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class UNetBaseline(torch.nn.Module):
    """smp U-Net with a ResNet-34 encoder, random initialisation, one logit map.

    It takes the same call as our models (``return_quality`` gives no IoU estimate) and carries the
    attributes ``hrmedseg.Segmenter`` reads, so training and evaluation run the same code for both.
    """

    num_classes = 1

    def __init__(self, img_size: int) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.Unet("resnet34", encoder_weights=None, classes=1)
        self.config = SimpleNamespace(
            name="unet_resnet34",
            img_size=(img_size, img_size),
            pixel_mean=IMAGENET_MEAN,
            pixel_std=IMAGENET_STD,
        )

    def forward(self, images: torch.Tensor, return_quality: bool = False):
        logits = self.net(images)
        return (logits, None) if return_quality else logits
