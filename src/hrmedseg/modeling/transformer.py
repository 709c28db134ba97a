"""Two-way transformer with task-multiscale cross-attention (paper section 2; fig. v2(c)).

A few task tokens and one image embedding (B, D, h, w) attend to each other. In the token-to-image
attention the keys are the un-pooled image features while the values are enriched by the
parameter-free "meta-pooling group": ``V = F + sum_s (AvgPool_s(F) - F)`` for s in {5, 9, 13}.
The pooled features then continue as the image stream into the image-to-token attention. Pooling
acts spatially on the (h, w) map, never across the flattened token axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    """Multi-head softmax attention with an optional reduced internal width (dim / downsample_rate).

    Written out as ``softmax(q k^T / sqrt(d)) v`` rather than ``F.scaled_dot_product_attention``,
    as SAM does: the decoder attends between a handful of tokens and the image, so the score
    matrix is tiny (B x heads x T x N) and a fused kernel saves nothing, while which kernel SDPA
    picks depends on the device, dtype and shapes, and the fp32 memory-efficient backward has
    public reports of wrong and NaN gradients (pytorch issues 103462, 119320, 125674). One formula
    gives the same gradients on every device.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"internal width {internal_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (internal_dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, tokens, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (B, heads, Tq, Tk)
        out = weights.to(v.dtype) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))


def _box_sums(prefix: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """Sums over [i - radius, i + radius], clipped to the axis, along ``dim`` (2 or 3 of a 4-D
    map) from prefix sums that start with a 0: with the prefix edge-padded by ``radius`` on both
    sides, every window is the difference of two shifted slices, P[i + 2r + 1] - P[i]."""
    pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
    padded = F.pad(prefix, pad, mode="replicate")
    length = prefix.shape[dim] - 1
    return padded.narrow(dim, 2 * radius + 1, length) - padded.narrow(dim, 0, length)


def _window_counts(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Number of cells of each clipped window [i - radius, i + radius] on an axis of ``length``."""
    index = torch.arange(length, device=device)
    return (index + radius + 1).clamp(max=length) - (index - radius).clamp(min=0)


def _summed_window_means(fmap: torch.Tensor, sizes: Sequence[int], before: bool) -> torch.Tensor:
    """sum_s of the s x s window sums of ``fmap`` divided by the cell counts, the division ``before``
    the sums (the adjoint, used in backward) or after them (the forward)."""
    h, w = fmap.shape[-2:]
    total = torch.zeros_like(fmap)
    shared_row_prefix = None if before else F.pad(fmap.cumsum(3), (1, 0))  # the same for every size
    for size in sizes:
        radius = size // 2
        counts = _window_counts(h, radius, fmap.device)[:, None] * _window_counts(w, radius, fmap.device)
        counts = counts.to(fmap.dtype)
        row_prefix = F.pad((fmap / counts).cumsum(3), (1, 0)) if before else shared_row_prefix
        rows = _box_sums(row_prefix, 3, radius)
        sums = _box_sums(F.pad(rows.cumsum(2), (0, 0, 1, 0)), 2, radius)
        total += sums if before else sums / counts
    return total


class _WindowMeans(torch.autograd.Function):
    """:func:`window_means` with its adjoint as backward. A clipped centred window is symmetric
    (j lies in i's window iff i lies in j's), so the transpose of "window sum, then divide by the
    count" is "divide by the count, then window sum": backward is one more pass of the same prefix
    sums, with nothing saved and no autograd graph of cumsums, pads and slices."""

    @staticmethod
    def forward(ctx, fmap, sizes):  # type: ignore[override]
        ctx.sizes = sizes
        return _summed_window_means(fmap, sizes, before=False)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _summed_window_means(grad.contiguous(), ctx.sizes, before=True), None


def window_means(fmap: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The sum over ``sizes`` of the mean of every s x s window of a (B, D, h, w) map (stride 1,
    centred, over the part of the window inside the map): what ``avg_pool2d(fmap, s, 1, s // 2,
    count_include_pad=False)`` gives, summed.

    The window's inside is a product of two intervals, so its sum and its cell count both factor:
    prefix sums along the rows, then along the columns, give every window's sum in a few passes
    over the map whatever its size, where avg_pool2d's s² additions per cell made the pooling a
    quarter of a CPU training step at 1024². The cost stays linear in the number of cells (banded
    averaging matrices, A_h @ x @ A_wᵀ, were twice as fast at 64 x 64 tokens but grow with the
    grid's side). Nor does it use avg_pool2d's CUDA kernel, whose channels-last backward once made
    GPU training collapse (docs/model.md, "Gradient correctness").
    """
    sizes = tuple(sizes)
    if torch.is_grad_enabled() and fmap.requires_grad:
        return _WindowMeans.apply(fmap, sizes)
    return _summed_window_means(fmap, sizes, before=False)


class MultiScalePooling(nn.Module):
    """``x + sum_s (AvgPool_s(x) - x)`` over the spatial grid of a token sequence (B, h*w, D)."""

    def __init__(self, pool_sizes: Sequence[int]) -> None:
        super().__init__()
        if any(s % 2 == 0 for s in pool_sizes):
            raise ValueError(f"pool sizes must be odd so the grid keeps its size, got {tuple(pool_sizes)}")
        self.pool_sizes = tuple(pool_sizes)

    def forward(self, tokens: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        fmap = tokens.transpose(1, 2).unflatten(-1, grid_size).contiguous()  # (B, D, h, w)
        pooled = window_means(fmap, self.pool_sizes)
        return pooled.flatten(2).transpose(1, 2) - (len(self.pool_sizes) - 1) * tokens

    def extra_repr(self) -> str:
        return f"pool_sizes={self.pool_sizes}"


class MLPBlock(nn.Module):
    def __init__(self, embedding_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image attention, token MLP, image-to-token attention.

    Args:
        skip_first_layer_pe: the first layer's self-attention uses neither the token positional
            embedding nor a residual connection (as in SAM).
        pool_sizes: kernel sizes of the multiscale value pooling; empty disables it.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        pool_sizes: Sequence[int] = (5, 9, 13),
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe
        self.pooling = MultiScalePooling(pool_sizes) if pool_sizes else None

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        grid_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe  # keys stay un-pooled
        if self.pooling is not None:
            keys = self.pooling(keys, grid_size)  # multiscale values, and the image stream onwards
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token-to-image attention.

    Inputs: image embedding (B, D, h, w), its positional encoding (1 or B, D, h, w) and tokens
    (B, T, D). Returns the updated tokens (B, T, D) and image tokens (B, h*w, D).
    """

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 256,
        attention_downsample_rate: int = 2,
        pool_sizes: Sequence[int] = (5, 9, 13),
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
                pool_sizes=pool_sizes,
            )  # fmt: skip
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)
        self.grad_checkpointing = False

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grid_size = (image_embedding.shape[-2], image_embedding.shape[-1])
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                queries, keys = checkpoint(
                    layer, queries, keys, point_embedding, key_pe, grid_size, use_reentrant=False
                )
            else:
                queries, keys = layer(queries, keys, point_embedding, key_pe, grid_size)
        q = queries + point_embedding
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, keys + key_pe, keys))
        return queries, keys
