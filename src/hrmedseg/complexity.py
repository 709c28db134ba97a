"""Parameter and FLOP counts (deterministic, so they can be tested)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Full SAM ViT-H (image encoder 637,026,048 + prompt encoder 6,220 + mask decoder 4,058,340), counted
# on segment_anything.sam_model_registry["vit_h"]().
SAM_VIT_H_PARAMS = 641_090_608


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, int], batch_size: int = 1) -> int:
    """FLOPs of one forward pass counted by ``torch.utils.flop_counter`` (2 per multiply-add;
    matmuls and convolutions only). The fused attention kernel on CPU is not counted; in the
    decoder it is a few MFLOPs, under 0.1 % of the total.

    Args:
        model: the model, left in its training mode and with its parameters' ``requires_grad``.
        input_size: (H, W) of the input.
        batch_size: images in the counted pass.
    """
    was_training = model.training
    requires_grad = [p.requires_grad for p in model.parameters()]
    # Frozen parameters instead of no_grad(): under no_grad a view of a parameter still
    # "requires grad" without a grad_fn, which the counter's module tracker rejects.
    model.eval().requires_grad_(False)
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, model.config.in_chans, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(x)
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), requires_grad, strict=True):
            p.requires_grad_(flag)
    return counter.get_total_flops()
