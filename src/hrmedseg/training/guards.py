"""Guards against a diverged run: optional gradient clipping, and a stop with a clear error at the
first non-finite loss, gradient or weight, before anything non-finite can be saved as a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..errors import HRMedSegError


class TrainingDivergedError(HRMedSegError, RuntimeError):
    """A loss, gradient norm or weight became NaN or infinite during ``epoch`` (1-based)."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


def check_finite_loss(value: float, *, epoch: int, step: int, steps: int) -> None:
    """``step`` is 0-based here and reported 1-based, as ``step 3 of 22``."""
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"the training loss became {value} at epoch {epoch}, step {step + 1} of {steps}", epoch
        )


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    clip_grad: float | None,
    epoch: int,
    step: int,
    steps: int,
) -> float:
    """Clip the gradients' total norm to ``clip_grad`` (None: measure only), then step.

    Returns the total gradient norm before clipping. Without a gradient scaler a non-finite norm
    stops the run before the weights change; with one (fp16) it is the scaler's signal to skip
    the step and lower its scale, as usual.
    """
    scaler.unscale_(optimizer)  # a no-op without fp16: the norm is always of the true gradients
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(parameters, math.inf if clip_grad is None else clip_grad).item()
    if not math.isfinite(norm) and not scaler.is_enabled():
        raise TrainingDivergedError(
            f"the gradient norm became {norm} at epoch {epoch}, step {step + 1} of {steps}", epoch
        )
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


def check_finite_state(module: nn.Module, epoch: int) -> None:
    """Refuse weights or buffers (e.g. BatchNorm statistics) holding NaN or infinity."""
    bad = [
        name
        for name, tensor in module.state_dict().items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TrainingDivergedError(f"non-finite values in {shown} after epoch {epoch}", epoch)


@contextmanager
def divergence_advice(output: Path, command: str) -> Iterator[None]:
    """Complete a :class:`TrainingDivergedError` with what was kept and how to go on."""
    try:
        yield
    except TrainingDivergedError as err:
        kept = err.epoch - 1
        if kept == 0:
            advice = (
                "no epoch was completed, so nothing was saved; start again with "
                f"`hrmedseg {command} --overwrite ...` and a lower --lr or a --clip-grad norm such as 1.0"
            )
        else:
            advice = (
                f"the checkpoints in {output} hold epoch {kept}, the last good one; continue with "
                f"`hrmedseg {command} --resume --output {output} --clip-grad 1.0` "
                "(on resume the learning rate comes from the saved optimiser state)"
            )
        raise TrainingDivergedError(f"stopped: {err}; {advice}", err.epoch) from None
