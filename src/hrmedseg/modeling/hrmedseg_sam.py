"""HRMedSegSAM: LGViT in place of SAM's image encoder, SAM's prompt encoder, the ECM-Decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import PromptableSegmentationModel
from .config import ModelConfig
from .ecm_decoder import ECMDecoder
from .lgvit import LGViT
from .prompt_encoder import PromptEncoder


class HRMedSegSAM(PromptableSegmentationModel):
    """Promptable, class-agnostic segmentation in SAM's output convention.

    The decoder has one single-mask token and ``num_mask_tokens - 1`` multimask tokens, plus an
    IoU-prediction head. Unlike ``segment_anything.Sam``, ``forward`` is trainable; the
    ``Predictor`` wraps it for inference from original-size images.

    Coordinates are pixels of the model input (after resizing), (x, y) order; boxes are XYXY.
    """

    def __init__(
        self,
        image_encoder: LGViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: ECMDecoder,
        config: ModelConfig,
    ) -> None:
        super().__init__(config)
        if mask_decoder.num_mask_tokens < 2:
            raise ValueError("HRMedSegSAM needs a single-mask token plus at least one multimask token")
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.image_encoder.set_grad_checkpointing(enable)
        self.mask_decoder.set_grad_checkpointing(enable)

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
        """See :meth:`PromptableSegmentationModel.decode`. The prompts' grid is the embeddings'
        (h, w) = (H, W) / ``config.patch_size``; M = 3 multimask outputs or 1 single mask. One
        embedding shared by many prompt sets costs one encoder pass for many boxes.
        """
        sparse, dense, image_pe = self.encode_prompts(
            image_embeddings, image_size, points=(point_coords, point_labels), boxes=boxes, masks=mask_inputs
        )
        low_res, iou = self.mask_decoder(image_embeddings, image_pe, sparse, dense)
        selected = select_outputs(multimask_output, iou_predictions=iou, low_res_logits=low_res)
        masks = F.interpolate(
            selected["low_res_logits"], size=image_size, mode="bilinear", align_corners=False
        )
        return {"masks": masks, **selected}

    def encode_prompts(
        self,
        image_embeddings: torch.Tensor,
        image_size: tuple[int, int],
        *,
        points: tuple[torch.Tensor | None, torch.Tensor | None],
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sparse (B, T, D) and dense (B, D, h, w) embeddings of the prompts (``points``:
        coordinates and labels, both or neither) and the grid's positional encoding (1, D, h, w)."""
        point_coords, point_labels = points
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        grid_size = tuple(image_embeddings.shape[-2:])
        sparse, dense = self.prompt_encoder(
            image_size,
            grid_size,
            points if point_coords is not None else None,
            boxes,
            masks,
            batch_size=image_embeddings.shape[0],
        )
        return sparse, dense, self.prompt_encoder.get_dense_pe(grid_size)


def select_outputs(multimask_output: bool, **outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs (B, 1 + M, ...) of the tokens asked for: token 0 is the single mask, 1.. the
    multimask ones."""
    selected = slice(1, None) if multimask_output else slice(0, 1)
    return {name: output[:, selected] for name, output in outputs.items()}
