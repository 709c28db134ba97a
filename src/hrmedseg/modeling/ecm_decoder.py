"""ECM-Decoder: efficient cross-multiscale mask decoder (paper section 2; v2: ME-Decoder).

Learned task tokens (an IoU token plus one token per output mask) and any prompt tokens run
through the two-way transformer against the single 1/16 image embedding. The image features are
then upsampled 4x by two transposed convolutions, and each mask token's output, passed through its
own hypernetwork MLP, gives the weights of a 1x1 product with them: one (H/4, W/4) logit map per
mask token. There is no feature pyramid, which is what keeps training memory small.

The IoU token's output feeds a head that predicts each mask's IoU with the ground truth (SAM's
quality score; for automatic segmentation a per-image quality estimate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class ECMDecoder(nn.Module):
    """Predicts mask logits at 1/4 of the input resolution from an image embedding and prompts.

    Args:
        num_mask_tokens: masks predicted per prompt set (K classes for HRMedSeg; 1 + 3 multimask
            outputs for HRMedSegSAM, as in SAM).
        pool_sizes: multiscale value pooling of the cross-attention; empty disables it.
    """

    def __init__(
        self,
        num_mask_tokens: int = 1,
        transformer_dim: int = 256,
        transformer_depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 256,
        pool_sizes: Sequence[int] = (5, 9, 13),
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.num_mask_tokens = num_mask_tokens
        self.transformer = TwoWayTransformer(
            transformer_depth, transformer_dim, num_heads, mlp_dim, pool_sizes=pool_sizes
        )
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, num_mask_tokens, iou_head_depth)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.transformer.grad_checkpointing = enable

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor | None = None,
        dense_prompt_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a whole batch at once.

        Args:
            image_embeddings: (B, D, h, w), or (1, D, h, w) shared by all B prompt sets.
            image_pe: (1, D, h, w) positional encoding of the embedding grid.
            sparse_prompt_embeddings: (B, T, D) prompt tokens, or None for no prompt.
            dense_prompt_embeddings: (B, D, h, w) added to the image embedding, or None.
        Returns:
            mask logits (B, num_mask_tokens, 4h, 4w) and predicted IoUs (B, num_mask_tokens).
        """
        hyper_in, upscaled, iou_pred = self.decode(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        return mask_product(hyper_in, upscaled), iou_pred

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor | None = None,
        dense_prompt_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder up to the mask product (arguments as :meth:`forward`).

        Returns:
            the hypernetwork outputs (B, num_mask_tokens, D/8), the upscaled mask features
            (B, D/8, 4h, 4w) and the predicted IoUs (B, num_mask_tokens).
        """
        batch = image_embeddings.shape[0]
        for prompt in (sparse_prompt_embeddings, dense_prompt_embeddings):
            if prompt is not None:
                batch = prompt.shape[0]
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"{image_embeddings.shape[0]} image embeddings cannot pair with {batch} prompt sets"
            )
        src = image_embeddings.expand(batch, -1, -1, -1)
        if dense_prompt_embeddings is not None:
            src = src + dense_prompt_embeddings

        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        if sparse_prompt_embeddings is not None:
            tokens = torch.cat([tokens, sparse_prompt_embeddings.to(tokens.dtype)], dim=1)

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).unflatten(-1, image_embeddings.shape[-2:])  # (B, D, h, w)
        if self.grad_checkpointing and torch.is_grad_enabled():
            upscaled = checkpoint(self.output_upscaling, src, use_reentrant=False)
        else:
            upscaled = self.output_upscaling(src)  # (B, D/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, M, D/8)
        return hyper_in, upscaled, self.iou_prediction_head(iou_token_out)


def mask_product(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """One logit map per mask token: weights (B, M, C) applied to features (B, C, H, W) -> (B, M, H, W)."""
    return (weights @ features.flatten(2)).unflatten(-1, features.shape[-2:])
