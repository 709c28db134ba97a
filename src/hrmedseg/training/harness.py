"""The harness that a training run and a distillation run share: the process group of a
``torchrun`` launch, the optimisation state that a resume restores, atomic checkpoints, and
:func:`run_epochs`, which runs a built :class:`~.loop.EpochLoop` with logs and checkpoints.

Multi-GPU and multi-node runs use ``torchrun``; the process group is set up from its
environment variables (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import load_state_dict_checked, save_model
from ..errors import CheckpointError, ConfigError
from ..runtime import resolve_device
from .averaging import WeightAverage
from .config import RunConfig
from .loop import EpochLoop, fit
from .run_folder import settle_run_files
from .run_log import COLUMNS, RunLogger, plot_curves
from .state import load_training_state, restore_rng_state, save_training_state


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group if there is one; choose the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = Distributed(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def loader_generator(seed: int) -> torch.Generator:
    """The generator for a DataLoader's worker seeds, one per loader.

    Each new iterator of a loader draws a seed for its workers. Drawn from the global stream, it
    would shift the drop-path masks of every later step, so how often a run validates, or how
    many workers it loads with, would change what it learns. The datasets seed their samples
    themselves, so this generator decides nothing else.
    """
    return torch.Generator().manual_seed(seed)


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting (none, bf16, fp16) on ``device``."""
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp fp16 needs a CUDA device; use bf16 on the CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass
class Optimisation:
    """The parts of a run that a resumable state saves besides its epoch, best score and RNG."""

    module: nn.Module  # whose weights are trained
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    average: WeightAverage | None = None

    def state(self, **extra: Any) -> dict[str, Any]:
        averaged = {} if self.average is None else {"average": self.average.state_dict()}
        return {
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), **averaged, **extra,
        }  # fmt: skip

    def resume(self, path: Path, ctx: Distributed) -> dict[str, Any]:
        """Load a saved state and restore this rank's RNG; returns the state (epoch, best score)."""
        state = load_training_state(path)
        load_state_dict_checked(self.module, state["model"], source=str(path))
        if self.average is not None:
            if "average" not in state:
                raise CheckpointError(f"{path}: holds no weight average to continue (saved without one)")
            self.average.load_state_dict(state["average"], source=f"{path} (weight average)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # The stored rates are the stored schedule's; a resume that extends a cosine run has a new
        # one, whose rate must apply from the first step (for any other resume it is the same).
        step = self.scheduler.last_epoch
        for group, base, factor in zip(
            self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(step)
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], ctx.rank, ctx.world_size)
        return state


def write_checkpoints(
    output: Path, model: nn.Module, *, improved: bool, state: dict[str, Any], encoder_only: bool = False
) -> None:
    """``last.safetensors``, ``best.safetensors`` when ``improved``, and the resumable ``last.pt``,
    each written atomically."""
    save_model(model, output / "last.safetensors", encoder_only=encoder_only)
    if improved:
        save_model(model, output / "best.safetensors", encoder_only=encoder_only)
    save_training_state(output / "last.pt", state)


def finish_run(ctx: Distributed, logger: RunLogger | None, output: Path) -> bool:
    """Leave the process group; the main process closes its logs and plots the curves.
    Returns whether this is the main process."""
    if ctx.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    if not ctx.is_main:
        return False
    logger.close()
    plot_curves(output / "log.csv", output / "curves.png")
    return True


def run_epochs(
    loop: EpochLoop,
    model: nn.Module,
    config: RunConfig,
    *,
    output: Path,
    ctx: Distributed,
    split: dict[str, Any],
    resume: bool,
    changes: dict[str, list[Any]],
    command: str,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    log_columns: Sequence[str] = COLUMNS,
    encoder_only: bool = False,
) -> dict[str, Any]:
    """The part of a run that ``train`` and ``distill`` share once their loop is built: resume
    the state of ``loop``'s optimisation, settle the run's files, run :func:`~.loop.fit` with logs
    and atomic checkpoints of ``model`` (the score under ``best_<score name without val_>`` in the
    state), close the logs. Returns the last log row, that best score and the paths. With a
    weight average (``loop.average``), the model files hold the average, which is what was
    validated."""
    optimisation = Optimisation(loop.module, loop.optimizer, loop.scheduler, loop.scaler, loop.average)
    best_key = "best_" + loop.score.name.removeprefix("val_")
    start_epoch, best = 0, loop.score.worst
    if resume:
        state = optimisation.resume(output / "last.pt", ctx)
        # A run saved before its score existed (a prompted run validated on the union alone) lets
        # its first validated epoch after the resume become the best.
        start_epoch, best = state["epoch"], state.get(best_key, loop.score.worst)
    if ctx.is_main:
        settle_run_files(
            output, config, split=split, resume=resume, changes=changes, completed_epochs=start_epoch
        )
    logger = RunLogger(output, completed_epochs=start_epoch, columns=log_columns) if ctx.is_main else None

    def save(epoch: int, improved: bool, best: float, rng_states: list[dict[str, Any]]) -> None:
        state = optimisation.state(epoch=epoch, rng=rng_states, **{best_key: best})
        saved = model if loop.average is None else loop.average.module
        write_checkpoints(output, saved, improved=improved, state=state, encoder_only=encoder_only)

    row, best = fit(
        loop, config.epochs, save, start_epoch=start_epoch, best=best, is_main=ctx.is_main, output=output,
        command=command, log_row=logger.log if logger else None, progress=progress, on_epoch_end=on_epoch_end,
    )  # fmt: skip
    if not finish_run(ctx, logger, output):
        return {}
    return {"last": row, best_key: best, "output": str(output), "best": str(output / "best.safetensors")}
