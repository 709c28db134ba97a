"""The backward pass against an fp64 evaluation of the same model on the same batch.

A wrong backward kernel leaves the loss untouched and corrupts only the gradients (how CUDA
training collapsed: docs/model.md, "Gradient correctness"), so the gradients themselves are
compared, for every parameter. fp32 rounding gives relative errors around 1e-6 here.
"""

import copy

import pytest
import torch
from helpers import (
    PROMPTS,
    GradientComparison,
    gradient_batch,
    gradient_model,
    model_loss,
    parameter_gradients,
)

from hrmedseg.modeling import transformer

SIZE = 256  # a 16 x 16 token grid: every pooling window (up to 13 x 13) meets the border


def fp32_vs_fp64(model: torch.nn.Module, batch: dict[str, torch.Tensor], prompts: str = "boxes"):
    grads = {}
    for dtype in (torch.float32, torch.float64):
        copy_ = copy.deepcopy(model).to(dtype).train()
        grads[dtype] = parameter_gradients(copy_, model_loss(copy_, batch, prompts))
    return GradientComparison.of(grads[torch.float32], grads[torch.float64])


@pytest.mark.parametrize("num_classes,checkpointed", [(1, False), (3, False), (1, True)])
def test_hrmedseg_gradients_match_fp64(num_classes, checkpointed):
    model = gradient_model("hrmedseg_b", SIZE, num_classes=num_classes)
    model.set_grad_checkpointing(checkpointed)
    fp32_vs_fp64(model, gradient_batch(2, SIZE)).assert_agree()


@pytest.mark.parametrize(
    "checkpointed,half_res_block,stem_blocks,feature_norm",
    [(False, "relu", 0, False), (True, "relu", 1, True), (False, "ln_gelu", 0, False)],
)
def test_hrmedseg_detail_gradients_match_fp64(checkpointed, half_res_block, stem_blocks, feature_norm):
    # Every parameter of the detail path too: stem (with its residual blocks), skips, the
    # full-resolution head (recomputed in backward), the early-convolution patch embedding and
    # the normalised mask features with their logit offset, with either block at 1/2 resolution.
    detail = ("early_convs", "skips", "full_res_head") + (("feature_norm",) if feature_norm else ())
    model = gradient_model("hrmedseg_detail_b", SIZE, num_classes=2, detail_half_res_block=half_res_block,
                           detail_stem_blocks=stem_blocks, detail=detail)  # fmt: skip
    model.set_grad_checkpointing(checkpointed)
    comparison = fp32_vs_fp64(model, gradient_batch(2, SIZE))
    comparison.assert_agree()
    for name in ("detail_stem.half_res.0.weight", "mask_decoder.head_conv.0.weight",
                 "mask_decoder.skip_quarter.weight", "image_encoder.patch_embed.weight"):  # fmt: skip
        assert name in comparison.errors and name not in comparison.negligible, name
    if stem_blocks:
        assert "detail_stem.quarter_blocks.0.conv.weight" in comparison.errors
    if feature_norm:
        for name in ("mask_decoder.feature_norm.weight", "mask_decoder.logit_offset"):
            assert name in comparison.errors and name not in comparison.negligible, name


@pytest.mark.parametrize("prompts", PROMPTS)
def test_hrmedseg_sam_gradients_match_fp64(prompts):
    model = gradient_model("hrmedseg_sam_b", SIZE)
    comparison = fp32_vs_fp64(model, gradient_batch(2, SIZE), prompts)
    comparison.assert_agree()
    if "mask" in prompts:
        assert "prompt_encoder.mask_downscaling.0.weight" in comparison.errors


def test_hrmedseg_sam_with_box_regions_gradients_match_fp64():
    model = gradient_model("hrmedseg_sam_b", SIZE, box_region_prompt=True)
    comparison = fp32_vs_fp64(model, gradient_batch(2, SIZE), "boxes")
    comparison.assert_agree()
    assert "prompt_encoder.box_downscaling.0.weight" in comparison.errors


def test_hrmedseg_sam_detail_gradients_match_fp64():
    # Box, point and mask prompts through the stem's maps and the full-resolution head.
    model = gradient_model("hrmedseg_sam_detail_b", SIZE)
    comparison = fp32_vs_fp64(model, gradient_batch(2, SIZE), "boxes+points+mask")
    comparison.assert_agree()
    for name in ("detail_stem.half_res.0.weight", "mask_decoder.head_conv.0.weight",
                 "mask_decoder.skip_quarter.weight", "prompt_encoder.box_downscaling.0.weight"):  # fmt: skip
        assert name in comparison.errors and name not in comparison.negligible, name


def test_the_comparison_catches_a_wrong_backward(monkeypatch):
    # A pooling whose backward maps each cell to the windows of a cell two cells away, as CUDA's
    # channels-last avg_pool2d once did: the loss is unchanged and the check must fail.
    window_means = transformer.window_means

    class ShiftedGradientPool(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, sizes):
            ctx.save_for_backward(x)
            ctx.sizes = sizes
            return window_means(x, sizes)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                leaf = x.detach().requires_grad_()
                (exact,) = torch.autograd.grad(window_means(leaf, ctx.sizes), leaf, grad)
            return exact.roll((2, 2), (-2, -1)), None

    def faulty_pool(x, sizes):
        return ShiftedGradientPool.apply(x, sizes)

    model = gradient_model("hrmedseg_b", SIZE)
    batch = gradient_batch(2, SIZE)
    reference_loss = model_loss(model, batch)
    reference = parameter_gradients(model, reference_loss)
    monkeypatch.setattr(transformer, "window_means", faulty_pool)
    faulty_loss = model_loss(model, batch)
    assert faulty_loss.item() == reference_loss.item()
    with pytest.raises(AssertionError, match="gradients disagree|median"):
        GradientComparison.of(parameter_gradients(model, faulty_loss), reference).assert_agree()
