"""Gated linear attention of LGViT (paper section 1.3: "DGLA" in v1, "DLA" in v2).

Complexity is linear in the number of tokens N: keys and values are first reduced to a d x d state
per head, which every query then reads. Two gates filter tokens: a SiLU bottleneck produces the
values (pre-filter) and a SiLU gate multiplies the attention output (post-filter, in the block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def rope_2d_tables(
    grid_size: tuple[int, int], dim: int, base: float = 10000.0, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of 2-D rotary position embedding for an (h, w) token grid.

    Channels are rotated in consecutive pairs (2m, 2m+1). Of the dim/2 pairs, the first dim/4 turn
    with the row index and the last dim/4 with the column index, at frequencies
    ``base ** (-k / (dim / 4))`` for k = 0 .. dim/4 - 1.

    Returns:
        cos, sin: each (h * w, dim / 2), float32, tokens in row-major order.
    """
    if dim % 4:
        raise ValueError(f"2-D RoPE needs a channel count divisible by 4, got {dim}")
    h, w = grid_size
    quarter = dim // 4
    freqs = base ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freqs  # (h, dim/4)
    cols = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freqs  # (w, dim/4)
    angles = torch.cat(
        [rows[:, None, :].expand(h, w, quarter), cols[None, :, :].expand(h, w, quarter)], dim=-1
    ).reshape(h * w, 2 * quarter)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (B, N, C) by the angles behind ``cos``/``sin`` (N, C/2)."""
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2)


def elu_plus_one(u: torch.Tensor) -> torch.Tensor:
    """The feature map phi(u) = ELU(u) + 1 (u + 1 above 0, e^u below), written as
    relu(u) + exp(min(u, 0)), which is measured faster on the CPU than ``F.elu(u) + 1`` (a
    training step of hrmedseg_b at 1024²: 0.64 s -> 0.59 s on 2 cores). Values and gradients are
    ELU's, except the gradient at exactly u = 0, which is 0 instead of 1 (relu's and clamp's
    backward both exclude their bound); u comes out of a linear layer, where an exact 0 does not
    occur in practice."""
    return F.relu(u) + torch.exp(torch.clamp(u, max=0))


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_heads: int,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Kernelised attention with RoPE in the numerator and an un-rotated normaliser.

    For each head, with phi(u) = ELU(u) + 1 and R_n the rotation of token n::

        O_n = [(1/N) sum_m (R_n phi(q_n))^T (R_m phi(k_m)) v_m]
              / [phi(q_n)^T mean_m phi(k_m) + eps]

    evaluated as a d x d state ``K_r^T V / N`` so cost and memory are O(N d^2), not O(N^2).
    Always computed in float32, also under autocast: the reductions over N overflow fp16 and
    lose too much in bf16 (the NaN failure reported for EfficientViT-style linear attention).

    Args:
        q, k, v: (B, N, C) queries, keys and values, C divisible by ``num_heads``.
        cos, sin: RoPE tables (N, C/2) from :func:`rope_2d_tables`.
    Returns:
        (B, N, C) float32, heads concatenated along channels.
    """
    batch, tokens, channels = q.shape
    head_dim = channels // num_heads
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = elu_plus_one(q.float()), elu_plus_one(k.float()), v.float()
        q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, num_heads, head_dim).transpose(1, 2)  # (B, h, N, d)

        q, k, v, q_rot, k_rot = map(split_heads, (q, k, v, q_rot, k_rot))
        normaliser = 1.0 / (q @ k.mean(dim=2).unsqueeze(-1) + eps)  # (B, h, N, 1)
        # Scaling both factors by N^-1/2 before the product keeps the state's magnitude bounded.
        scale = tokens**-0.5
        state = (k_rot * scale).transpose(-2, -1) @ (v * scale)  # (B, h, d, d)
        out = (q_rot @ state) * normaliser
    return out.transpose(1, 2).reshape(batch, tokens, channels)


class GatedLinearAttention(nn.Module):
    """Q/K projection, pre-filtered values, linear attention and LePE (no output projection).

    The output projection and the post-filter gate live in :class:`GatedAttentionBlock`, which
    needs the same normalised input for the gate.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(
                f"dim {dim} must split into {num_heads} heads of even size, so that no RoPE channel "
                "pair straddles two heads"
            )
        self.num_heads = num_heads
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        # Pre-filter: a C -> C/4 -> C SiLU bottleneck decides what each token contributes as value.
        self.v_down = nn.Linear(dim, dim // 4)
        self.v_up = nn.Linear(dim // 4, dim)
        # Locally-enhanced positional encoding: a depthwise 3x3 conv over the values.
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(
        self, x: torch.Tensor, grid_size: tuple[int, int], rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """x: (B, N, C) normalised tokens of an (h, w) grid, N = h * w; returns (B, N, C)."""
        q, k = self.qk(x).chunk(2, dim=-1)
        v = self.v_up(F.silu(self.v_down(x)))
        if torch.is_grad_enabled():
            # Like FlashAttention, keep only the kernel's inputs and recompute its N-sized
            # intermediates (feature maps, rotations, head copies) in backward: about a third of
            # the block's activation memory, for a few elementwise ops and small matmuls.
            out = checkpoint(linear_attention, q, k, v, *rope, self.num_heads, use_reentrant=False)
        else:
            out = linear_attention(q, k, v, *rope, num_heads=self.num_heads)
        v_map = v.transpose(1, 2).unflatten(-1, grid_size)  # (B, C, h, w)
        return out.to(v.dtype) + self.lepe(v_map).flatten(2).transpose(1, 2)
