"""The epoch loop that training, distillation and the U-Net benchmark share: train an epoch,
validate, score, keep the best and the last weights, log, report, and stop cleanly on divergence.

What differs between them is passed in: the objective, how to validate, which score counts and in
which direction (validation Dice up, validation MSE down), and how to save.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .averaging import WeightAverage
from .guards import check_finite_loss, check_finite_state, divergence_advice, optimizer_step
from .state import all_rng_states

log = logging.getLogger(__name__)


class EpochAware(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


@dataclass(frozen=True)
class Score:
    """The validation metric that picks the best epoch, and whether higher is better."""

    name: str
    maximize: bool = True

    @property
    def worst(self) -> float:
        return -math.inf if self.maximize else math.inf

    def improves(self, value: float, best: float) -> bool:
        return value > best if self.maximize else value < best


@dataclass(kw_only=True)
class EpochLoop:
    """Everything an epoch needs.

    ``trained`` is the objective as optimised (possibly DDP-wrapped), ``module`` the weights it
    trains (checked for non-finite values after every epoch). ``validate()`` runs on the main
    process after every ``val_every``-th epoch and after the last, and returns named metrics,
    among them ``score.name``. ``epoch_aware`` objects (the
    sampler, an augmenting dataset) learn the epoch first, so a resumed run sees the same data.
    ``average``, when given, follows ``module`` after every optimiser step; ``validate`` should
    then score it.
    """

    trained: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    validate: Callable[[], dict[str, float]]
    score: Score
    device: torch.device
    epoch_aware: Sequence[EpochAware] = ()
    accumulate: int = 1
    clip_grad: float | None = None
    val_every: int = 1
    prepare: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]] | None = None
    average: WeightAverage | None = None


@dataclass(frozen=True)
class EpochStats:
    """What one pass over the training data measured.

    The gradient norms are each optimiser step's total norm before clipping, over the finite ones
    (an fp16 step that overflowed is skipped by the scaler and left out; NaN when none is left).
    A maximum far above the median marks a step that can knock training back: that is where
    to look when the training loss jumps.
    """

    loss: float  # mean per image
    grad_norm: float  # median over the epoch's optimiser steps
    grad_norm_max: float

    @classmethod
    def of(cls, loss: float, grad_norms: Sequence[float]) -> EpochStats:
        finite = [n for n in grad_norms if math.isfinite(n)]
        if not finite:
            return cls(loss, math.nan, math.nan)
        return cls(loss, statistics.median(finite), max(finite))


def train_one_epoch(
    objective: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler,
    accumulate: int,
    device: torch.device,
    desc: str = "train",
    show_progress: bool = True,
    prepare: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    clip_grad: float | None = None,
    epoch: int = 1,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step: Callable[[], None] | None = None,
) -> EpochStats:
    """One pass over ``loader`` with gradient accumulation; returns the mean training loss and
    the gradient norms' median and maximum over the optimiser steps.

    ``objective(inputs, targets)`` returns (loss, predictions); it may be wrapped in DDP.
    ``prepare(batch)`` gives (inputs, targets) on ``device``; by default the batch's image and mask.
    ``scheduler`` is stepped, and ``after_step()`` called, after every optimiser step.
    ``clip_grad`` caps the gradients' total norm. A non-finite loss or gradient raises
    :class:`TrainingDivergedError` naming ``epoch`` (1-based) and the step, before the weights
    take that step.
    """
    if prepare is None:

        def prepare(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return batch["image"].to(device), batch["mask"].to(device)

    objective.train()
    started = time.perf_counter()
    running, seen = 0.0, 0
    grad_norms: list[float] = []
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=desc, unit="batch", disable=not show_progress, leave=False)
    steps = len(loader)
    for step, batch in enumerate(bar):
        images, targets = prepare(batch)
        last_micro_step = (step + 1) % accumulate == 0 or step + 1 == steps
        # Under DDP, gradients are all-reduced only on the micro-step that updates the weights.
        defer_sync = isinstance(objective, DistributedDataParallel) and not last_micro_step
        with objective.no_sync() if defer_sync else nullcontext():
            loss, _ = objective(images, targets)
            scaler.scale(loss / accumulate).backward()
        loss_value = loss.item()
        check_finite_loss(loss_value, epoch=epoch, step=step, steps=steps)
        if last_micro_step:
            grad_norms.append(
                optimizer_step(optimizer, scaler, clip_grad=clip_grad, epoch=epoch, step=step, steps=steps)
            )
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
        running += loss_value * len(images)
        seen += len(images)
        bar.set_postfix(loss=f"{running / seen:.4f}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
    return EpochStats.of(running / max(seen, 1), grad_norms)


def fit(
    loop: EpochLoop,
    epochs: int,
    save: Callable[[int, bool, float, list[dict[str, Any]]], None],
    *,
    start_epoch: int = 0,
    best: float | None = None,
    is_main: bool = True,
    output: Path | None = None,
    command: str = "train",
    log_row: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[dict[str, float], float]:
    """Run epochs ``start_epoch + 1 .. epochs``; returns the last row and the best score.

    Per epoch on the main process: ``log_row(row)`` before ``save(epoch, improved, best,
    rng_states)`` (a crash in between re-runs the epoch, whose row the logger then drops), then
    ``on_epoch_end(epoch, row)``. The row of an epoch without validation has no validation
    metrics, and only a validated epoch can become the best. Every process's RNG state is
    gathered after validation, so a resumed multi-process run continues each rank's streams. A
    diverged epoch raises :class:`~.guards.TrainingDivergedError`; with ``output`` (the run folder
    of ``hrmedseg <command>``) its message says what was kept and how to go on.
    """
    best = loop.score.worst if best is None else best
    row: dict[str, float] = {}
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        for item in loop.epoch_aware:
            item.set_epoch(epoch)
        lr = loop.optimizer.param_groups[0]["lr"]  # at the epoch's first step
        with divergence_advice(output, command) if output is not None else nullcontext():
            stats = train_one_epoch(
                loop.trained, loop.train_loader, loop.optimizer, scaler=loop.scaler,
                accumulate=loop.accumulate, device=loop.device,
                desc=f"epoch {epoch + 1}/{epochs}", show_progress=progress and is_main, prepare=loop.prepare,
                clip_grad=loop.clip_grad, epoch=epoch + 1, scheduler=loop.scheduler,
                after_step=None if loop.average is None else lambda: loop.average.update(loop.module),
            )  # fmt: skip
            check_finite_state(loop.module, epoch + 1)
        validating = is_main and ((epoch + 1) % loop.val_every == 0 or epoch + 1 == epochs)
        metrics = loop.validate() if validating else {}
        rng_states = all_rng_states()  # every rank's
        if not is_main:
            continue
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats.loss, "grad_norm": stats.grad_norm,
               "grad_norm_max": stats.grad_norm_max, **metrics,
               "epoch_seconds": time.perf_counter() - started}  # fmt: skip
        if log_row is not None:
            log_row(row)
        improved = validating and loop.score.improves(row[loop.score.name], best)
        best = row[loop.score.name] if improved else best
        save(epoch + 1, improved, best, rng_states)
        if progress:
            described = "  ".join(f"{k} {row[k]:.4f}" for k in ("train_loss", *metrics))
            log.info(
                "epoch %d/%d  %s  grad_norm %.3g (max %.3g)  (%.1fs)%s", epoch + 1, epochs, described,
                stats.grad_norm, stats.grad_norm_max, row["epoch_seconds"], "  *best*" if improved else "",
            )  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    return row, best
