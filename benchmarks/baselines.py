"""Baseline models for the benchmarks (benchmark-only dependency: segmentation-models-pytorch)."""

from __future__ import annotations

import torch

from hrmedseg.modeling import AutomaticSegmentationModel, ModelConfig


class UNetBaseline(AutomaticSegmentationModel):
    """smp U-Net with a ResNet-34 encoder, random initialisation, one logit map.

    It meets the same contract as ``HRMedSeg`` (an :class:`AutomaticSegmentationModel` with a
    :class:`ModelConfig`), so training, evaluation and ``hrmedseg.Segmenter`` run the same code for
    both. Of its config only the fields the pipeline reads mean anything: the name, ``img_size``,
    ``num_classes``, ``in_chans``, the pixel normalisation, ``input_scale`` and ``patch_size``,
    here the encoder's output stride 32 (the input's sides must be multiples of it). It has no
    IoU head, so ``return_quality`` gives None.
    """

    def __init__(self, img_size: int, input_scale: str = "resized") -> None:
        name = "unet_resnet34"
        config = ModelConfig(name=name, arch=name, img_size=img_size, patch_size=32, input_scale=input_scale)
        super().__init__(config)
        import segmentation_models_pytorch as smp

        self.net = smp.Unet("resnet34", encoder_weights=None, classes=self.config.num_classes)

    def forward(
        self, images: torch.Tensor, return_quality: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        logits = self.net(images)
        return (logits, None) if return_quality else logits
