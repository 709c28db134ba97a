"""Gated linear attention of LGViT (paper section 1.3: "DGLA" in v1, "DLA" in v2).

Complexity is linear in the number of tokens N: keys and values are first reduced to a d x d state
per head, which every query then reads. Two gates filter tokens: a SiLU bottleneck produces the
values (pre-filter) and a SiLU gate multiplies the attention output (post-filter, in the block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rope_2d_rotations(
    grid_size: tuple[int, int], dim: int, *, base: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """Unit complex numbers of 2-D rotary position embedding for an (h, w) token grid.

    Channels are rotated in consecutive pairs (2m, 2m+1), read as the complex number
    x[2m] + i x[2m+1]. Of the dim/2 pairs, the first dim/4 turn with the row index and the last
    dim/4 with the column index, at frequencies ``base ** (-k / (dim / 4))`` for k = 0 .. dim/4 - 1.

    Returns:
        (h * w, dim / 2) complex64, tokens in row-major order.
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
    return torch.polar(torch.ones_like(angles), angles)


def rotate_pairs(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of a float ``x`` (B, N, C) by ``rotations`` (N, C/2).

    One complex multiplication: on the CPU about 15x faster than the same rotation written with
    cosines, sines and a stack of the rotated halves."""
    pairs = torch.view_as_complex(x.contiguous().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotations).flatten(-2)


def elu_plus_one(u: torch.Tensor) -> torch.Tensor:
    """The feature map phi(u) = ELU(u) + 1 (u + 1 above 0, e^u below), written as
    exp(min(u, 0)) + max(u, 0): ``F.elu`` is about 10x slower on the CPU. Values are ELU's; so is
    the derivative, which :class:`_LinearAttention` computes from phi itself (min(phi, 1))."""
    return torch.clamp(u, max=0).exp_().add_(torch.clamp(u, min=0))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs (gradient checks): never a 16-bit type."""
    return torch.promote_types(x.dtype, torch.float32)


def _feature_maps(
    q: torch.Tensor, k: torch.Tensor, rotations: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """phi(q), phi(k) in :func:`compute_dtype` and their RoPE rotations: what forward computes and
    backward recomputes instead of storing."""
    dtype = compute_dtype(q)
    q_feat, k_feat = elu_plus_one(q.to(dtype)), elu_plus_one(k.to(dtype))
    return q_feat, k_feat, rotate_pairs(q_feat, rotations), rotate_pairs(k_feat, rotations)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotations: torch.Tensor, *, num_heads: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of :func:`linear_attention` in :func:`compute_dtype`; also returns what backward reuses: the
    per-head state (B, h, d, d) and the reciprocal normaliser (B, N, h)."""
    tokens, channels = q.shape[1], q.shape[2]
    heads = (num_heads, channels // num_heads)
    q_feat, k_feat, q_rot, k_rot = _feature_maps(q, k, rotations)
    k_mean = k_feat.mean(dim=1, keepdim=True)  # (B, 1, C)
    inv_norm = (q_feat * k_mean).unflatten(-1, heads).sum(-1).add_(eps).reciprocal_()  # (B, N, h)
    # Heads stay in the channel axis: einsum over (B, N, h, d) views costs no transposed copies.
    state = torch.einsum(
        "bnhd,bnhe->bhde", k_rot.unflatten(-1, heads), v.to(q_feat.dtype).unflatten(-1, heads)
    )
    state = state.div_(tokens)
    out = torch.einsum("bnhd,bhde->bnhe", q_rot.unflatten(-1, heads), state)
    return out.mul_(inv_norm.unsqueeze(-1)).flatten(-2), state, inv_norm


class _LinearAttention(torch.autograd.Function):
    """:func:`linear_attention` with a hand-written backward.

    Saves only the inputs, the d x d states and the normaliser; the N-sized feature maps and
    rotations are recomputed (elementwise) in backward, so memory is that of recomputing the whole
    kernel, at well under half of its cost: no second forward and no autograd graph of ~20 ops.
    """

    @staticmethod
    def forward(ctx, q, k, v, rotations, num_heads, eps):  # type: ignore[override]
        with torch.autocast(device_type=q.device.type, enabled=False):
            out, state, inv_norm = _attend(q, k, v, rotations, num_heads=num_heads, eps=eps)
        ctx.save_for_backward(q, k, v, rotations, state, inv_norm)
        ctx.num_heads = num_heads
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, rotations, state, inv_norm = ctx.saved_tensors
        with torch.autocast(device_type=q.device.type, enabled=False):
            grads = _attend_backward(
                grad_out,
                q,
                k,
                v,
                rotations=rotations,
                state=state,
                inv_norm=inv_norm,
                num_heads=ctx.num_heads,
            )
        return *(g.to(x.dtype) for g, x in zip(grads, (q, k, v), strict=True)), None, None, None


def _attend_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    rotations: torch.Tensor,
    state: torch.Tensor,
    inv_norm: torch.Tensor,
    num_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`_attend` for q, k, v. Per head, with a = phi(q), b = phi(k), their
    rotations a_r, b_r, the state S = b_r^T v / N and g = 1 / (a . mean(b) + eps)::

        out_n = g_n (a_r S)_n
        H = dOut S^T             ->  d a_r = g H,  dg_n = a_r,n . H_n,  dz = -g^2 dg
        dS = a_r^T (g dOut)      ->  d b_r = v dS^T / N,  dv = b_r dS / N
        da = R^-1 d a_r + dz mean(b),   db = R^-1 d b_r + (sum_n dz_n a_n) / N
        dq = da * min(a, 1),  dk = db * min(b, 1)   (the derivative of ELU + 1, from its value)
    """
    tokens, channels = q.shape[1], q.shape[2]
    heads = (num_heads, channels // num_heads)
    q_feat, k_feat, q_rot, k_rot = _feature_maps(q, k, rotations)
    v = v.to(q_feat.dtype)
    g = inv_norm.unsqueeze(-1)  # (B, N, h, 1)
    grad_heads = grad_out.to(q_feat.dtype).unflatten(-1, heads)
    h = torch.einsum("bnhe,bhde->bnhd", grad_heads, state)  # dOut S^T
    d_inv_norm = (q_rot.unflatten(-1, heads) * h).sum(-1, keepdim=True)
    d_norm = d_inv_norm.mul_(g).mul_(g).neg_()  # through g = 1 / z: dz = -g^2 dg, (B, N, h, 1)
    d_q_rot = h.mul_(g).flatten(-2)
    d_state = torch.einsum("bnhd,bnhe->bhde", q_rot.unflatten(-1, heads), grad_heads * g).div_(tokens)
    d_k_rot = torch.einsum("bnhe,bhde->bnhd", v.unflatten(-1, heads), d_state).flatten(-2)
    d_v = torch.einsum("bnhd,bhde->bnhe", k_rot.unflatten(-1, heads), d_state).flatten(-2)
    d_norm = d_norm.expand(*d_norm.shape[:-1], heads[1]).flatten(-2)  # (B, N, C)
    k_mean = k_feat.mean(dim=1, keepdim=True)
    d_q_feat = rotate_pairs(d_q_rot, rotations.conj()).addcmul_(d_norm, k_mean)
    d_k_feat = rotate_pairs(d_k_rot, rotations.conj()).add_((d_norm * q_feat).sum(1, keepdim=True) / tokens)
    return d_q_feat.mul_(q_feat.clamp_(max=1)), d_k_feat.mul_(k_feat.clamp_(max=1)), d_v


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rotations: torch.Tensor,
    *,
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
    With gradients, backward is hand-written (:class:`_LinearAttention`).

    Args:
        q, k, v: (B, N, C) queries, keys and values, C divisible by ``num_heads`` into heads of
            even width (whole RoPE pairs).
        rotations: (N, C/2) complex RoPE rotations from :func:`rope_2d_rotations`.
    Returns:
        (B, N, C) float32 (float64 for float64 inputs), heads concatenated along channels.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return _LinearAttention.apply(q, k, v, rotations, num_heads, eps)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _attend(q, k, v, rotations, num_heads=num_heads, eps=eps)[0]


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

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int], rotations: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) normalised tokens of an (h, w) grid, N = h * w; ``rotations`` (N, C/2) from
        :func:`rope_2d_rotations`; returns (B, N, C)."""
        q, k = self.qk(x).chunk(2, dim=-1)
        v = self.v_up(F.silu(self.v_down(x)))
        out = linear_attention(q, k, v, rotations, num_heads=self.num_heads)
        v_map = v.transpose(1, 2).unflatten(-1, grid_size)  # (B, C, h, w)
        return out.to(v.dtype) + self.lepe(v_map).flatten(2).transpose(1, 2)
