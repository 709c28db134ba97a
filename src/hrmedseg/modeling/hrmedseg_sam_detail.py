"""HRMedSegSAMDetail: HRMedSegSAM with the detail path, for prompted masks at the input resolution."""

from __future__ import annotations

import torch

from .common import check_images
from .config import ModelConfig
from .detail import DetailDecoder, DetailStem
from .hrmedseg_sam import HRMedSegSAM, select_outputs
from .lgvit import LGViT
from .prompt_encoder import PromptEncoder


class HRMedSegSAMDetail(HRMedSegSAM):
    """HRMedSegSAM whose decoder also reads the detail stem's 1/2 and 1/4 maps
    (:mod:`hrmedseg.modeling.detail`), so a prompted mask is drawn at the input resolution.

    The stem's maps belong to the image's embedding: :meth:`embed` returns them beside the
    encoder's output, and :meth:`decode` takes them, so one image still costs one encoder pass
    for any number of prompts. With ``early_convs`` in ``config.detail`` the encoder patchifies
    the stem's 1/4 map instead of the image.
    """

    full_resolution_masks = True

    def __init__(
        self,
        detail_stem: DetailStem,
        image_encoder: LGViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: DetailDecoder,
        config: ModelConfig,
    ) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, config)
        self.detail_stem = detail_stem
        self.early_convs = "early_convs" in config.detail

    def embed(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, C_in, H, W) -> ``image_embeddings`` (B, D, H/16, W/16) and the stem's maps
        ``detail_half`` (B, c0, H/2, W/2) and ``detail_quarter`` (B, c1, H/4, W/4)."""
        # Checked before the stem: with early_convs the encoder sees the stem's map, not the images.
        check_images(images, self.config.in_chans, self.config.patch_size)
        half, quarter = self.detail_stem(images)
        embeddings = self.image_encoder(quarter if self.early_convs else images)
        return {"image_embeddings": embeddings, "detail_half": half, "detail_quarter": quarter}

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_size: tuple[int, int],
        *,
        detail_half: torch.Tensor,
        detail_quarter: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> dict[str, torch.Tensor]:
        """As :meth:`HRMedSegSAM.decode`, with the stem's maps of the same images (B or 1 each,
        as ``image_embeddings``); ``masks`` come from the full-resolution head."""
        sparse, dense, image_pe = self.encode_prompts(
            image_embeddings, image_size, points=(point_coords, point_labels), boxes=boxes, masks=mask_inputs
        )
        masks, iou, low_res = self.mask_decoder.forward_detail(
            image_embeddings, image_pe, (detail_half, detail_quarter), image_size,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        )  # fmt: skip
        return select_outputs(multimask_output, masks=masks, iou_predictions=iou, low_res_logits=low_res)
