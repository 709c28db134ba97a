"""HRMedSegDetail: HRMedSeg with the detail path, for logits at the input resolution."""

from __future__ import annotations

import torch

from .common import check_images
from .config import ModelConfig
from .detail import DetailDecoder, DetailStem
from .hrmedseg import HRMedSeg
from .lgvit import LGViT


class HRMedSegDetail(HRMedSeg):
    """LGViT + ECM-Decoder + the detail path of :mod:`hrmedseg.modeling.detail`.

    With ``early_convs`` in ``config.detail`` the encoder patchifies the stem's 1/4 map (it is
    built with ``in_chans`` = the stem's 1/4 width and patch size ``config.patch_size // 4``);
    otherwise it reads the image as HRMedSeg's does. Input and output as :class:`HRMedSeg`:
    images (B, C_in, H, W) -> logits (B, num_classes, H, W).
    """

    def __init__(
        self, detail_stem: DetailStem, image_encoder: LGViT, mask_decoder: DetailDecoder, config: ModelConfig
    ) -> None:
        super().__init__(image_encoder, mask_decoder, config)
        self.detail_stem = detail_stem
        self.early_convs = "early_convs" in config.detail

    def forward_detail(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, K, H, W), predicted IoUs (B, K) and the 1/4-resolution logits (B, K, H/4, W/4)."""
        # Checked here, before the stem: with early_convs the encoder sees the stem's map, not the images.
        check_images(images, self.config.in_chans, self.config.patch_size)
        skips = self.detail_stem(images)
        embeddings = self.image_encoder(skips[1] if self.early_convs else images)
        image_pe = self.pe_layer(embeddings.shape[-2:]).unsqueeze(0)
        return self.mask_decoder.forward_detail(embeddings, image_pe, skips, images.shape[-2:])

    def forward_low_res(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, quality, low_res = self.forward_detail(images)
        return low_res, quality

    def forward(
        self, images: torch.Tensor, return_quality: bool = False, return_low_res: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Logits (B, K, H, W); with ``return_quality`` also the predicted IoUs (B, K), and with
        ``return_low_res`` (for deep supervision) also the 1/4-resolution logits, in that order."""
        logits, quality, low_res = self.forward_detail(images)
        extra = ((quality,) if return_quality else ()) + ((low_res,) if return_low_res else ())
        return (logits, *extra) if extra else logits
