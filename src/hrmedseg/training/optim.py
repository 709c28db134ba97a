"""Optimiser and learning-rate schedule of a training run.

Two recipes share one mechanism: a multiplier of the base learning rate, evaluated at every
optimiser step.

- ``exponential`` (the paper's): ``lr_gamma ** epoch``, constant within an epoch, the same as
  ``ExponentialLR`` stepped once per epoch;
- ``cosine``: a linear warm-up over the first ``warmup`` fraction of all steps, then a half cosine
  from the base rate down to ``min_lr_ratio`` times it at the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("exponential", "cosine")


def build_optimizer(model: nn.Module, name: str, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam (L2 penalty in the gradient, the paper's) or AdamW (decoupled decay).

    With AdamW, biases and normalisation weights (every parameter of one dimension) are not
    decayed, as in timm: shrinking a LayerNorm gain or a bias towards 0 only fights the model.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def lr_multiplier(
    schedule: str,
    steps_per_epoch: int,
    epochs: int,
    *,
    lr_gamma: float = 0.98,
    warmup: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> Callable[[int], float]:
    """The base learning rate's factor at optimiser step ``step`` (0-based) of the run."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if schedule == "exponential":
        return lambda step: lr_gamma ** (step // steps_per_epoch)
    total = max(1, steps_per_epoch * epochs)
    warmup_steps = round(warmup * total)

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps - 1))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return cosine


def optimizer_steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimiser steps in an epoch of ``batches``: every ``accumulate`` batches, plus one for a
    last, partial group (``train_one_epoch`` steps at the end of the loader)."""
    return math.ceil(batches / accumulate)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, *, steps_per_epoch: int, epochs: int, **options: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule as a scheduler to step after every optimiser step (``train_one_epoch`` does);
    its state, the number of steps taken, resumes exactly. ``options``: those of
    :func:`lr_multiplier`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(schedule, steps_per_epoch, epochs, **options)
    )
