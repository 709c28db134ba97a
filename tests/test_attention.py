"""The attention-like ops of the model (linear attention, RoPE, the decoder's softmax attention and
multiscale pooling), values and gradients, checked against direct evaluations of the formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from hrmedseg.modeling.ecm_decoder import ECMDecoder
from hrmedseg.modeling.linear_attention import (
    GatedLinearAttention,
    elu_plus_one,
    linear_attention,
    rope_2d_rotations,
    rotate_pairs,
)
from hrmedseg.modeling.transformer import Attention, MultiScalePooling


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
    torch.testing.assert_close(
        rotate_pairs(x, rope_2d_rotations(grid, 16)), rope_by_complex_numbers(x, grid), rtol=1e-5, atol=1e-5
    )


def test_rope_scores_depend_only_on_relative_position():
    grid = (6, 6)
    rotations = rope_2d_rotations(grid, 8)
    q, k = torch.randn(1, 1, 8).expand(1, 36, 8), torch.randn(1, 1, 8).expand(1, 36, 8)
    qr, kr = rotate_pairs(q.contiguous(), rotations)[0], rotate_pairs(k.contiguous(), rotations)[0]
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
    with torch.autocast("cpu", enabled=False):
        fast = linear_attention(
            q.float(), k.float(), v.float(), rope_2d_rotations(grid, channels), num_heads=heads
        )
    slow = quadratic_attention(q, k, v, grid, heads)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-5)


def test_linear_attention_stays_fp32_and_finite_under_fp16_autocast():
    # fp16 tops out at 65504: the sums over 4096 tokens of these products would overflow.
    attn = GatedLinearAttention(32, 2)
    x = 200 * torch.randn(1, 64 * 64, 32)
    rotations = rope_2d_rotations((64, 64), 32)
    with torch.autocast("cpu", dtype=torch.float16):
        q, k = attn.qk(x).chunk(2, dim=-1)
        out = linear_attention(q, k, attn.qk(x)[..., :32], rotations, num_heads=2)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert torch.isfinite(attn(x, (64, 64), rotations)).all()


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


# --- Gradients of every attention-like op, on every device present, against explicit formulas ----

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]


def gradients_on(device: str, fn, *inputs: torch.Tensor, dtype=torch.float32):
    """(output, input gradients) of ``fn`` on ``device`` in ``dtype`` for a fixed random cotangent,
    returned as float64 on the CPU."""
    leaves = [x.detach().to(device, dtype).requires_grad_() for x in inputs]
    out = fn(*leaves)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(cotangent.to(device, dtype))
    return out.detach().double().cpu(), [x.grad.double().cpu() for x in leaves]


def assert_matches_oracle(device, fn, oracle, *, inputs, rtol=1e-4, atol=1e-6):
    out, grads = gradients_on(device, fn, *inputs)
    ref_out, ref_grads = gradients_on("cpu", oracle, *inputs, dtype=torch.float64)
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    for i, (grad, ref) in enumerate(zip(grads, ref_grads, strict=True)):
        torch.testing.assert_close(grad, ref, rtol=rtol, atol=atol, msg=lambda m, i=i: f"input {i}: {m}")


def windowed_mean(fmap: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the size x size window around each cell, clipped to the grid, cell by cell."""
    h, w = fmap.shape[-2:]
    r = size // 2
    rows = [
        torch.stack(
            [
                fmap[..., max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].mean((-2, -1))
                for j in range(w)
            ],
            -1,
        )
        for i in range(h)
    ]
    return torch.stack(rows, -2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["tokens", "channels_first"])
def test_multiscale_pooling_gradients_match_window_means(device, layout):
    # "tokens": (B, N, D) contiguous, as the decoder passes them: their (B, D, h, w) view has
    # channels-last strides, the layout whose CUDA backward was wrong (pytorch issue 188344).
    grid, sizes = (9, 14), (5, 9, 13)
    pool = MultiScalePooling(sizes)
    x = torch.randn(2, 126, 6, dtype=torch.float64)

    def ours(tokens):
        if layout == "channels_first":  # the same values, stored (B, D, N)
            tokens = tokens.transpose(1, 2).contiguous().transpose(1, 2)
        return pool(tokens, grid)

    def oracle(tokens):
        fmap = tokens.transpose(1, 2).reshape(2, 6, *grid)
        pooled = sum(windowed_mean(fmap, s) for s in sizes) - (len(sizes) - 1) * fmap
        return pooled.flatten(2).transpose(1, 2)

    assert_matches_oracle(device, ours, oracle, inputs=(x,))


def softmax_attention_by_heads(q, k, v, heads):
    """softmax(q k^T / sqrt(d)) v head by head, with einsum."""
    d = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = torch.einsum("bqd,bkd->bqk", q[..., cols], k[..., cols]) / math.sqrt(d)
        outs.append(torch.einsum("bqk,bkd->bqd", scores.softmax(-1), v[..., cols]))
    return torch.cat(outs, -1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("queries,keys", [(5, 96), (96, 5), (5, 5)])  # token->image, image->token, self
def test_decoder_attention_gradients_match_explicit_softmax(device, queries, keys):
    torch.manual_seed(0)
    attn = Attention(32, 4, downsample_rate=2)  # head width 4, like the decoder's 16 at a smaller scale
    q, k, v = torch.randn(2, queries, 32), torch.randn(2, keys, 32), torch.randn(2, keys, 32)

    def ours(q, k, v):
        return attn.to(q.device, q.dtype)(q, k, v)

    def oracle(q, k, v):
        a = attn.to("cpu", torch.float64)
        proj = softmax_attention_by_heads(a.q_proj(q), a.k_proj(k), a.v_proj(v), 4)
        return a.out_proj(proj)

    assert_matches_oracle(device, ours, oracle, inputs=(q, k, v))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grid,channels,heads", [((4, 6), 16, 2), ((3, 5), 24, 6), ((2, 4), 8, 1)])
def test_linear_attention_gradients_match_quadratic_evaluation(device, grid, channels, heads):
    # The hand-written backward against autograd through the O(N^2) formula in float64.
    tokens = grid[0] * grid[1]
    q, k, v = (torch.randn(2, tokens, channels) for _ in range(3))

    def ours(q, k, v):
        return linear_attention(q, k, v, rope_2d_rotations(grid, channels, device=q.device), num_heads=heads)

    assert_matches_oracle(
        device, ours, lambda q, k, v: quadratic_attention(q, k, v, grid, heads), inputs=(q, k, v)
    )


def test_linear_attention_backward_passes_gradcheck():
    # Finite differences in float64, where the kernel computes in float64; includes inputs at and
    # around 0, the kink of ELU + 1, and gradients for a subset of the inputs.
    grid, channels, heads = (2, 3), 8, 2
    rotations = rope_2d_rotations(grid, channels).to(torch.complex128)
    q, k, v = (torch.randn(2, 6, channels, dtype=torch.float64) for _ in range(3))
    q[0, 0, :4] = torch.tensor([0.0, 1e-3, -1e-3, 0.0])
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda q, k, v: linear_attention(q, k, v, rotations, num_heads=heads), (q, k, v)
    )
    assert torch.autograd.gradcheck(
        lambda v: linear_attention(q.detach(), k.detach(), v, rotations, num_heads=heads), v
    )


def test_linear_attention_under_bf16_autocast_keeps_input_dtypes_in_backward():
    attn = GatedLinearAttention(32, 4)
    x = torch.randn(2, 64, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, (8, 8), rope_2d_rotations((8, 8), 32))
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


SDPA_BACKENDS = [
    SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION
]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_decoder_gradients_do_not_depend_on_the_sdpa_backend(device):
    # Each backend alone must give the decoder the same gradients: it computes its attention
    # itself, so whichever kernel a device would pick for F.scaled_dot_product_attention is moot.
    torch.manual_seed(0)
    decoder = ECMDecoder(num_mask_tokens=2, transformer_dim=64, num_heads=4, mlp_dim=64).to(device)
    embedding = torch.randn(2, 64, 8, 8, device=device)
    pe = torch.randn(1, 64, 8, 8, device=device)

    def grads() -> list[torch.Tensor]:
        decoder.zero_grad()
        masks, iou = decoder(embedding, pe)
        (masks.square().mean() + iou.sum()).backward()
        return [p.grad.clone() for p in decoder.parameters()]

    reference = grads()
    for backend in SDPA_BACKENDS:
        with sdpa_kernel(backend):
            for grad, ref in zip(grads(), reference, strict=True):
                torch.testing.assert_close(
                    grad, ref, rtol=1e-5, atol=1e-7, msg=lambda m, b=backend: f"{b}: {m}"
                )


def test_the_feature_map_is_elu_plus_one_and_its_derivative_follows_from_its_value():
    extremes = torch.tensor([0.0, 1e-300, -1e-300, 1e4, -1e4], dtype=torch.float64)
    u = torch.cat([torch.linspace(-30.05, 30.05, 602, dtype=torch.float64), extremes])
    reference = u.clone().requires_grad_()
    (F.elu(reference) + 1).sum().backward()
    # F.elu goes through expm1(u) + 1, which loses the last digits of e^u far below 0.
    torch.testing.assert_close(elu_plus_one(u), F.elu(u) + 1, rtol=1e-12, atol=1e-15)
    # The hand-written backward multiplies by min(phi(u), 1): ELU's derivative, also at u = 0.
    torch.testing.assert_close(elu_plus_one(u).clamp(max=1), reference.grad, rtol=1e-12, atol=1e-15)
