"""HRMedSeg: automatic (prompt-free) segmentation with LGViT and the ECM-Decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import AutomaticSegmentationModel
from .common import PositionEmbeddingRandom
from .config import ModelConfig
from .ecm_decoder import ECMDecoder
from .lgvit import LGViT


class HRMedSeg(AutomaticSegmentationModel):
    """LGViT (with neck) + ECM-Decoder with one mask token per output map.

    ``num_classes == 1`` is binary: one logit map for a sigmoid. ``num_classes == K >= 2`` gives K
    logit maps for a softmax over classes (class 0 is usually background).

    Input: images (B, C_in, H, W), H and W multiples of ``config.patch_size``, normalised as the
    data pipeline does. Output: logits (B, num_classes, H, W) at the input resolution.
    """

    def __init__(self, image_encoder: LGViT, mask_decoder: ECMDecoder, config: ModelConfig) -> None:
        super().__init__(config)
        if mask_decoder.num_mask_tokens != config.num_classes:
            raise ValueError(
                f"the decoder has {mask_decoder.num_mask_tokens} mask tokens, the config "
                f"{config.num_classes} classes"
            )
        self.image_encoder = image_encoder
        self.pe_layer = PositionEmbeddingRandom(image_encoder.out_chans // 2)
        self.mask_decoder = mask_decoder

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory: recompute encoder blocks, neck and decoder layers in backward."""
        self.image_encoder.set_grad_checkpointing(enable)
        self.mask_decoder.set_grad_checkpointing(enable)

    def forward_low_res(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at 1/4 resolution (B, K, H/4, W/4) and predicted IoUs (B, K)."""
        embeddings = self.image_encoder(images)
        image_pe = self.pe_layer(embeddings.shape[-2:]).unsqueeze(0)
        return self.mask_decoder(embeddings, image_pe)

    def forward(
        self, images: torch.Tensor, return_quality: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Full-resolution logits (B, K, H, W); with ``return_quality`` also the predicted IoU
        of each class map (B, K), which training supervises with the achieved IoU."""
        low_res, quality = self.forward_low_res(images)
        logits = F.interpolate(low_res, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, quality) if return_quality else logits
