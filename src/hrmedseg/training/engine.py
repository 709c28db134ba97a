"""The training loop: data, model, optimisation, validation, checkpoints, resume and DDP.

Outputs in ``config.output``: ``config.yaml`` (resolved), ``split.json``, ``log.csv``,
``curves.png``, ``last.pt`` (resumable state), ``last.safetensors`` and ``best.safetensors``
(model files for ``hrmedseg.load_model``; best = highest validation Dice).

Multi-GPU and multi-node runs use ``torchrun``; the process group is set up from its
environment variables (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..build import create_model
from ..checkpoint import load_encoder_weights, load_state_dict_checked, save_model
from ..data import Sample, SegmentationDataset, check_samples, find_dataset, make_split
from ..data.io import DataError
from ..losses import SegmentationLoss, hard_masks, one_hot
from ..modeling import HRMedSegSAM
from ..runtime import resolve_device
from .config import TrainConfig
from .guards import check_finite_loss, check_finite_state, divergence_advice, optimizer_step
from .logging import RunLogger, plot_curves
from .objectives import AutomaticObjective
from .optim import build_optimizer, build_scheduler
from .prompted import PromptConfig, PromptedObjective
from .run_folder import check_resume, prepare_output, record_resume_changes, stored_split, write_new_run
from .state import all_rng_states, load_training_state, restore_rng_state, save_training_state


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


def resolve_split(config: TrainConfig) -> dict[str, list[str]]:
    """The dataset's own split, else a new seeded split (a resumed run reads its stored one)."""
    index = find_dataset(config.data)
    if index.split is not None:
        split = index.split
    else:
        split = make_split(index.samples, config.seed, tuple(config.split_fractions))
    for name in ("train", "val"):
        if not split.get(name):
            source = index.split_file or "the generated split"
            raise DataError(f"the '{name}' split is empty ({source}); it needs at least one case")
    return split


def make_loaders(
    config: TrainConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    pixel_mean: tuple[float, ...],
    pixel_std: tuple[float, ...],
    ctx: Distributed | None = None,
) -> tuple[SegmentationDataset, DistributedSampler, DataLoader, DataLoader]:
    """Augmented, sharded training data (reshuffled per epoch via ``sampler.set_epoch``) and
    plain validation data, both at the configured input size."""
    ctx = ctx or Distributed()
    train_set = SegmentationDataset(
        train_samples,
        config.size,
        config.num_classes,
        pixel_mean,
        pixel_std,
        config.augmentation(),
        config.seed,
    )
    val_set = SegmentationDataset(val_samples, config.size, config.num_classes, pixel_mean, pixel_std)
    sampler = DistributedSampler(
        train_set, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    per_rank_batch = max(1, config.batch_size // ctx.world_size)
    drop_last = len(train_set) // ctx.world_size >= per_rank_batch  # keep tiny data sets trainable
    train_loader = DataLoader(
        train_set, per_rank_batch, sampler=sampler, num_workers=config.num_workers, drop_last=drop_last
    )
    val_loader = DataLoader(val_set, per_rank_batch, num_workers=config.num_workers)
    return train_set, sampler, train_loader, val_loader


def make_objective(
    model: nn.Module, config: TrainConfig, loss_fn: SegmentationLoss, amp_dtype: torch.dtype | None
) -> nn.Module:
    """The training objective for ``model``: prompted for HRMedSegSAM, automatic otherwise."""
    if isinstance(model, HRMedSegSAM):
        prompts = PromptConfig.from_dict(config.prompts)
        return PromptedObjective(model, loss_fn, config.quality_weight, prompts, amp_dtype)
    return AutomaticObjective(model, loss_fn, config.quality_weight, amp_dtype)


def per_image_dice_iou(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU (B,) of hard predictions, averaged over foreground classes; 1 if both empty."""
    num_classes = logits.shape[1]
    pred = hard_masks(logits)
    truth = one_hot(masks, num_classes).bool()
    if num_classes > 1:
        pred, truth = pred[:, 1:], truth[:, 1:]
    inter = (pred & truth).sum((2, 3)).float()
    total = pred.sum((2, 3)).float() + truth.sum((2, 3)).float()
    empty = total == 0
    dice = torch.where(empty, torch.ones_like(total), 2 * inter / total.clamp(min=1))
    iou = torch.where(empty, torch.ones_like(total), inter / (total - inter).clamp(min=1))
    return dice.mean(1), iou.mean(1)


@torch.no_grad()
def validate(objective: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float, float]:
    """Mean loss, per-image Dice and IoU over ``loader`` (at the model's input resolution)."""
    objective.eval()
    total_loss, dices, ious = 0.0, [], []
    for batch in loader:
        images, masks = batch["image"].to(device), batch["mask"].to(device)
        loss, logits = objective(images, masks)
        total_loss += loss.item() * len(images)
        dice, iou = per_image_dice_iou(logits.float(), masks)
        dices.append(dice)
        ious.append(iou)
    n = len(loader.dataset)
    return total_loss / n, torch.cat(dices).mean().item(), torch.cat(ious).mean().item()


def train_one_epoch(
    objective: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    accumulate: int,
    device: torch.device,
    desc: str = "train",
    show_progress: bool = True,
    prepare: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    clip_grad: float | None = None,
    epoch: int = 1,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """One pass over ``loader`` with gradient accumulation; returns the mean training loss.

    ``objective(inputs, targets)`` returns (loss, predictions); it may be wrapped in DDP.
    ``prepare(batch)`` gives (inputs, targets) on ``device``; by default the batch's image and mask.
    ``scheduler`` is stepped after every optimiser step (see :mod:`.optim`).
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
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=desc, unit="batch", disable=not show_progress, leave=False)
    for step, batch in enumerate(bar):
        images, targets = prepare(batch)
        last_micro_step = (step + 1) % accumulate == 0 or step + 1 == len(loader)
        # Under DDP, gradients are all-reduced only on the micro-step that updates the weights.
        defer_sync = isinstance(objective, DistributedDataParallel) and not last_micro_step
        with objective.no_sync() if defer_sync else nullcontext():
            loss, _ = objective(images, targets)
            scaler.scale(loss / accumulate).backward()
        loss_value = loss.item()
        check_finite_loss(loss_value, epoch, step, len(loader))
        if last_micro_step:
            optimizer_step(optimizer, scaler, clip_grad, epoch, step, len(loader))
            if scheduler is not None:
                scheduler.step()
        running += loss_value * len(images)
        seen += len(images)
        bar.set_postfix(loss=f"{running / seen:.4f}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
    return running / max(seen, 1)


def recipe_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, batches_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The config's learning-rate schedule, stepped once per optimiser step."""
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate)
    return build_scheduler(
        optimizer, config.schedule, steps_per_epoch, config.epochs, lr_gamma=config.lr_gamma,
        warmup=config.warmup, min_lr_ratio=config.min_lr_ratio,
    )  # fmt: skip


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting (none, bf16, fp16) on ``device``."""
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp fp16 needs a CUDA device; use bf16 on the CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass
class Optimisation:
    """The parts of a run that a resumable state saves besides its epoch, best score and RNG."""

    module: nn.Module  # whose weights are trained
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def state(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), **extra,
        }  # fmt: skip

    def resume(self, path: Path, ctx: Distributed) -> dict[str, Any]:
        """Load a saved state and restore this rank's RNG; returns the state (epoch, best score)."""
        state = load_training_state(path)
        load_state_dict_checked(self.module, state["model"], source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], ctx.rank, ctx.world_size)
        return state


def write_checkpoints(
    output: Path, model: nn.Module, improved: bool, state: dict[str, Any], encoder_only: bool = False
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


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run (or resume) training as ``config`` describes; returns the final epoch's log row and paths.

    A new run refuses an output folder that already holds a run, unless ``overwrite``.
    ``on_epoch_end(epoch, row)`` is called on the main process after each epoch's checkpoints
    are written.
    """
    ctx, device = setup_distributed(config.device)
    output = Path(config.output)
    prepare_output(output, resume, overwrite, "train")
    changes = check_resume(output, config) if resume else {}
    torch.manual_seed(config.seed)

    split = stored_split(output) if resume else resolve_split(config)
    index = find_dataset(config.data)
    train_samples, val_samples = index.subset(split["train"]), index.subset(split["val"])
    check_samples(train_samples + val_samples, config.num_classes)

    model = create_model(
        config.model, num_classes=config.num_classes, img_size=config.size, **config.model_options
    )
    if config.init_encoder and not resume:
        load_encoder_weights(model, config.init_encoder)
    model.set_grad_checkpointing(config.grad_checkpointing)
    model.to(device)
    train_set, sampler, train_loader, val_loader = make_loaders(
        config, train_samples, val_samples, model.config.pixel_mean, model.config.pixel_std, ctx
    )
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    scheduler = recipe_scheduler(optimizer, config, len(train_loader))
    amp_dtype = amp_dtype_for(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = SegmentationLoss(config.num_classes, config.dice_weight, config.focal_weight)
    objective = make_objective(model, config, loss_fn, amp_dtype)
    trained = objective
    if ctx.world_size > 1:
        # Prompted batches may leave some prompt embeddings unused, which DDP must be told.
        trained = DistributedDataParallel(
            objective, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=isinstance(model, HRMedSegSAM),
        )  # fmt: skip

    start_epoch, best_dice = 0, -math.inf
    optimisation = Optimisation(model, optimizer, scheduler, scaler)
    if resume:
        state = optimisation.resume(output / "last.pt", ctx)
        start_epoch, best_dice = state["epoch"], state["best_dice"]
    if ctx.is_main:
        if resume:
            record_resume_changes(output, changes, start_epoch)
        else:
            write_new_run(output, config, split)
        if start_epoch >= config.epochs:
            print(f"{output} has finished its {config.epochs} epochs; nothing to do "
                  "(a larger --epochs extends it)", flush=True)  # fmt: skip
    logger = RunLogger(output, completed_epochs=start_epoch) if ctx.is_main else None

    row: dict[str, float] = {}
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        lr = scheduler.get_last_lr()[0]  # at the epoch's first step
        with divergence_advice(output, "train"):
            train_loss = train_one_epoch(
                trained, train_loader, optimizer, scaler, config.accumulate, device,
                desc=f"epoch {epoch + 1}/{config.epochs}", show_progress=progress and ctx.is_main,
                clip_grad=config.clip_grad, epoch=epoch + 1, scheduler=scheduler,
            )  # fmt: skip
            check_finite_state(model, epoch + 1)
        if ctx.is_main:
            val_loss, val_dice, val_iou = validate(objective, val_loader, device)
        rng_states = all_rng_states()  # every rank's, after validation (its loader draws a seed)
        if not ctx.is_main:
            continue
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
            "val_dice": val_dice, "val_iou": val_iou, "epoch_seconds": time.perf_counter() - started,
        }  # fmt: skip
        logger.log(row)  # before the state: a crash in between re-runs this epoch, whose row is then dropped
        improved = val_dice > best_dice
        best_dice = max(best_dice, val_dice)
        state = optimisation.state(epoch=epoch + 1, best_dice=best_dice, rng=rng_states)
        write_checkpoints(output, model, improved, state)
        if progress:
            print(
                f"epoch {epoch + 1}/{config.epochs}  loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                f"val Dice {val_dice:.4f}  IoU {val_iou:.4f}  ({row['epoch_seconds']:.1f}s)"
                + ("  *best*" if improved else ""),
                flush=True,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)

    if not finish_run(ctx, logger, output):
        return {}
    return {
        "last": row,
        "best_dice": best_dice,
        "output": str(output),
        "best": str(output / "best.safetensors"),
    }
