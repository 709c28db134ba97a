"""The linear attention and its pieces, checked against direct evaluations of the formulas."""

import math

import pytest
import torch

from hrmedseg.modeling.linear_attention import (
    GatedLinearAttention,
    apply_rope,
    linear_attention,
    rope_2d_tables,
)
from hrmedseg.modeling.transformer import MultiScalePooling


def rope_by_complex_numbers(x: torch.Tensor, grid: tuple[int, int], base: float = 10000.0) -> torch.Tensor:
    """Independent RoPE: rotate complex channel pairs token by token with torch.polar."""
    h, w = grid
    channels = x.shape[-1]
    quarter = channels // 4
    out = torch.empty_like(x)
    for n in range(h * w):
        i, j = divmod(n, w)
        angles = [i * base ** (-k / quarter) for k in range(quarter)] + [
            j * base ** (-k / quarter) for k in range(quarter)
        ]
        rotation = torch.polar(
            torch.ones(len(angles), dtype=torch.float64), torch.tensor(angles, dtype=torch.float64)
        )
        pairs = torch.view_as_complex(x[:, n].double().reshape(x.shape[0], -1, 2).contiguous())
        out[:, n] = torch.view_as_real(pairs * rotation).reshape(x.shape[0], channels).to(x.dtype)
    return out


def test_rope_matches_complex_rotation_on_non_square_grid():
    grid = (3, 5)
    x = torch.randn(2, 15, 16)
    cos, sin = rope_2d_tables(grid, 16)
    torch.testing.assert_close(
        apply_rope(x, cos, sin), rope_by_complex_numbers(x, grid), rtol=1e-5, atol=1e-5
    )


def test_rope_scores_depend_only_on_relative_position():
    grid = (6, 6)
    cos, sin = rope_2d_tables(grid, 8)
    q, k = torch.randn(1, 1, 8).expand(1, 36, 8), torch.randn(1, 1, 8).expand(1, 36, 8)
    qr, kr = apply_rope(q, cos, sin)[0], apply_rope(k, cos, sin)[0]
    # token (1, 2) vs (3, 1) and token (2, 4) vs (4, 3): the same offset (+2, -1)
    score_a = qr[1 * 6 + 2] @ kr[3 * 6 + 1]
    score_b = qr[2 * 6 + 4] @ kr[4 * 6 + 3]
    torch.testing.assert_close(score_a, score_b)


def quadratic_attention(q, k, v, grid, num_heads, eps=1e-6):
    """Direct O(N^2) evaluation of the paper's formula, with an explicit N x N score matrix."""
    batch, tokens, channels = q.shape
    d = channels // num_heads
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    rq, rk = rope_by_complex_numbers(phi_q, grid), rope_by_complex_numbers(phi_k, grid)
    out = torch.empty_like(q)
    for head in range(num_heads):
        cols = slice(head * d, (head + 1) * d)
        scores = rq[..., cols] @ rk[..., cols].transpose(1, 2) / tokens  # (B, N, N), RoPE numerator
        plain = phi_q[..., cols] @ phi_k[..., cols].transpose(1, 2) / tokens  # un-rotated normaliser
        out[..., cols] = (scores @ v[..., cols]) / (plain.sum(-1, keepdim=True) + eps)
    return out


@pytest.mark.parametrize("grid,channels,heads", [((4, 4), 16, 2), ((3, 5), 24, 3), ((2, 6), 8, 1)])
def test_linear_attention_equals_quadratic_evaluation(grid, channels, heads):
    tokens = grid[0] * grid[1]
    q, k, v = (torch.randn(2, tokens, channels, dtype=torch.float64) for _ in range(3))
    cos, sin = (t.double() for t in rope_2d_tables(grid, channels))
    with torch.autocast("cpu", enabled=False):
        fast = linear_attention(q.float(), k.float(), v.float(), cos.float(), sin.float(), heads)
    slow = quadratic_attention(q, k, v, grid, heads)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-5)


def test_linear_attention_stays_fp32_and_finite_under_fp16_autocast():
    # fp16 tops out at 65504: the sums over 4096 tokens of these products would overflow.
    attn = GatedLinearAttention(32, 2)
    x = 200 * torch.randn(1, 64 * 64, 32)
    rope = rope_2d_tables((64, 64), 32)
    with torch.autocast("cpu", dtype=torch.float16):
        q, k = attn.qk(x).chunk(2, dim=-1)
        out = linear_attention(q, k, attn.qk(x)[..., :32], *rope, num_heads=2)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert torch.isfinite(attn(x, (64, 64), rope)).all()


def test_head_width_must_keep_rope_pairs_whole():
    with pytest.raises(ValueError, match="heads of even size"):
        GatedLinearAttention(24, 24)


def test_multiscale_pooling_keeps_constants_and_spreads_an_impulse():
    pool = MultiScalePooling((5, 9, 13))
    grid = (16, 20)
    constant = torch.full((1, 320, 4), 3.0)
    torch.testing.assert_close(pool(constant, grid), constant)

    impulse = torch.zeros(1, 320, 1)
    impulse[0, 8 * 20 + 10] = 1.0
    out = pool(impulse, grid).reshape(16, 20)
    # Centre: 1/25 + 1/81 + 1/169 - 2; a cell 3 away sees only the 9x9 and 13x13 windows.
    assert out[8, 10].item() == pytest.approx(1 / 25 + 1 / 81 + 1 / 169 - 2, rel=1e-5)
    assert out[8, 13].item() == pytest.approx(1 / 81 + 1 / 169, rel=1e-5)
    assert out[8, 17].item() == pytest.approx(0.0, abs=1e-7)  # outside every window


def test_multiscale_pooling_is_spatial_not_over_flattened_tokens():
    # A column impulse: pooling over the 2-D grid spreads it to neighbouring columns in every row,
    # which pooling over the flattened (token, channel) axes would not.
    pool = MultiScalePooling((5,))
    grid = (8, 8)
    x = torch.zeros(1, 64, 2)
    x[0, torch.arange(8) * 8 + 3, 0] = 1.0
    out = pool(x, grid)[0, :, 0].reshape(8, 8)
    assert torch.all(out[:, 4] > 0) and torch.all(out[:, 5] > 0)
    torch.testing.assert_close(out[:, 6], torch.zeros(8))
    assert math.isclose(out[:, 0].abs().sum().item(), 0.0, abs_tol=1e-7)
