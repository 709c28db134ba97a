"""Baseline models for the benchmarks (benchmark-only dependency: segmentation-models-pytorch)."""

from __future__ import annotations

import torch

from hrmedseg import register_architecture
from hrmedseg.modeling import AutomaticSegmentationModel, ModelConfig

UNET_ARCH = "unet_resnet34"


def unet_config(img_size: int, input_scale: str = "resized") -> ModelConfig:
    """The config of the U-Net baseline. Of its fields only those the pipeline reads mean anything:
    the name, ``img_size``, ``num_classes``, ``in_chans``, the pixel normalisation, ``input_scale``
    and ``patch_size``, here the encoder's output stride 32 (the input's sides must be multiples
    of it)."""
    return ModelConfig(
        name=UNET_ARCH, arch=UNET_ARCH, img_size=img_size, patch_size=32, input_scale=input_scale
    )


class UNetBaseline(AutomaticSegmentationModel):
    """smp U-Net with a ResNet-34 encoder, random initialisation, one logit map.

    It meets the same contract as ``HRMedSeg`` (an :class:`AutomaticSegmentationModel` with a
    :class:`ModelConfig`) and its architecture is registered, so training, evaluation,
    ``hrmedseg.Segmenter`` and ``hrmedseg.load_model`` run the same code for both. It has no IoU
    head, so ``return_quality`` gives None.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        import segmentation_models_pytorch as smp

        self.net = smp.Unet("resnet34", encoder_weights=None, classes=self.config.num_classes)

    def forward(
        self, images: torch.Tensor, return_quality: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        logits = self.net(images)
        return (logits, None) if return_quality else logits


@register_architecture(UNET_ARCH)
def build_unet(config: ModelConfig) -> UNetBaseline:
    return UNetBaseline(config)
