"""``train``: a segmentation model's data, objective, validation and recipe, run by the shared
harness (:mod:`.harness`: process group, resume, checkpoints, logs).

Outputs in ``config.output``: ``config.yaml`` (resolved), ``split.json``, ``log.csv``,
``curves.png``, ``last.pt`` (resumable state), ``last.safetensors`` and ``best.safetensors``
(model files for ``hrmedseg.load_model``; best = highest validation Dice; with ``ema_decay``,
both hold the weight average, which is what validation scored).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..build import create_model
from ..checkpoint import load_encoder_weights
from ..data import DatasetIndex, Sample, SegmentationDataset, check_samples, find_dataset, make_split
from ..data.splits import cross_validation_split
from ..data.volume_slices import slice_case, slice_volume_dataset
from ..data.volumes import is_volume_dataset
from ..errors import ConfigError, DataError
from ..inference.segmenter import sliding_window_logits
from ..inference.tiling import native_tiling
from ..losses import DEFAULT_LOSS, SegmentationLoss, build_loss, hard_masks, one_hot, overlap_scores
from ..modeling import PromptableSegmentationModel
from ..runtime import compile_model
from .averaging import WeightAverage
from .config import TrainConfig
from .harness import Distributed, amp_dtype_for, loader_generator, run_epochs, setup_distributed
from .loop import EpochLoop, Score
from .objectives import AutomaticObjective
from .optim import build_optimizer, build_scheduler, optimizer_steps_per_epoch
from .prompted import PromptConfig, PromptedObjective
from .run_folder import check_resume, prepare_output, resumed_model, stored_split
from .run_log import COLUMNS, PROMPTED_COLUMNS


def resolve_split(config: TrainConfig, index: DatasetIndex, slices: bool = False) -> dict[str, list[str]]:
    """The dataset's own split, else a new seeded split (a resumed run reads its stored one);
    with ``config.folds``, its fold ``config.fold`` of a cross-validation over the train and val
    cases (``slices``: the dataset holds a volume dataset's slices, kept together by scan)."""
    if index.split is not None:
        split = index.split
    else:
        split = make_split(index.samples, config.seed, tuple(config.split_fractions))
    if config.folds:
        group = slice_case if slices else (lambda stem: stem)
        split = cross_validation_split(split, config.folds, config.fold, seed=config.seed, group=group)
    for name in ("train", "val"):
        if not split.get(name):
            source = index.split_file or "the generated split"
            raise DataError(f"the '{name}' split is empty ({source}); it needs at least one case")
    return split


def make_loaders(
    config: TrainConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    *,
    pixel_mean: tuple[float, ...],
    pixel_std: tuple[float, ...],
    ctx: Distributed | None = None,
    objects: bool = False,
) -> tuple[SegmentationDataset, DistributedSampler, DataLoader, DataLoader]:
    """Augmented, sharded training data (reshuffled per epoch via ``sampler.set_epoch``) and
    plain validation data: resized to the configured input size, or for ``input_scale: native``
    random windows of it for training and whole images, one per batch, for validation (a
    prompted model: one fixed window per image).
    ``objects``: the masks hold object labels (prompted training; see :class:`SegmentationDataset`)."""
    ctx = ctx or Distributed()
    native = config.input_scale == "native"
    train_set = SegmentationDataset(
        train_samples, config.size, num_classes=config.num_classes, pixel_mean=pixel_mean,
        pixel_std=pixel_std, augmentation=config.augmentation(), seed=config.seed,
        sampling="window" if native else "resize", foreground=config.foreground_windows, objects=objects,
    )  # fmt: skip
    # A prompted model decodes objects in windows, not whole images: at native scale it is
    # validated on one window per image, placed on an object and the same every epoch.
    val_sampling = ("window" if objects else "whole") if native else "resize"
    val_set = SegmentationDataset(
        val_samples, config.size, num_classes=config.num_classes, pixel_mean=pixel_mean,
        pixel_std=pixel_std, seed=config.seed, sampling=val_sampling, foreground=1.0, objects=objects,
    )  # fmt: skip
    sampler = DistributedSampler(
        train_set, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    per_rank_batch = max(1, config.batch_size // ctx.world_size)
    drop_last = len(train_set) // ctx.world_size >= per_rank_batch  # keep tiny data sets trainable
    train_loader = DataLoader(
        train_set, per_rank_batch, sampler=sampler, num_workers=config.num_workers, drop_last=drop_last,
        generator=loader_generator(config.seed),
    )  # fmt: skip
    val_loader = DataLoader(
        val_set, 1 if val_sampling == "whole" else per_rank_batch, num_workers=config.num_workers,
        generator=loader_generator(config.seed),
    )  # fmt: skip
    return train_set, sampler, train_loader, val_loader


def make_objective(model: nn.Module, config: TrainConfig, amp_dtype: torch.dtype | None) -> nn.Module:
    """The training objective for ``model`` with the config's loss: prompted for a promptable
    model, automatic otherwise."""
    loss_fn = build_loss(config.loss, config.num_classes, **config.loss_weights())
    if isinstance(model, PromptableSegmentationModel):
        if not isinstance(loss_fn, SegmentationLoss):  # its terms are computed object by object
            raise ConfigError(f"promptable models train with the {DEFAULT_LOSS} loss, not {config.loss!r}")
        prompts = PromptConfig.from_dict(config.prompts)
        return PromptedObjective(
            model, loss_fn, quality_weight=config.quality_weight, prompt_config=prompts, amp_dtype=amp_dtype
        )
    return AutomaticObjective(model, loss_fn, quality_weight=config.quality_weight, amp_dtype=amp_dtype)


def per_image_dice_iou(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU (B,) of hard predictions, averaged over foreground classes; 1 if both empty."""
    num_classes = logits.shape[1]
    pred = hard_masks(logits)
    truth = one_hot(masks, num_classes).bool()
    if num_classes > 1:
        pred, truth = pred[:, 1:], truth[:, 1:]
    dice, iou = overlap_scores(pred, truth)
    return dice.mean(1), iou.mean(1)


@torch.no_grad()
def validate(
    objective: nn.Module, loader: DataLoader, device: torch.device, *, windows_per_pass: int = 16
) -> dict[str, float]:
    """``val_loss`` and the mean per-image ``val_dice`` and ``val_iou`` over ``loader``: at the
    model's input resolution, or for a native-scale model each whole image (batch 1) by sliding
    windows at its own resolution, as its Segmenter predicts; the loss is then the segmentation
    loss of the blended logits (no IoU-head term). A prompted objective's Dice and IoU are those of
    the union of its object masks, and ``val_object_dice`` is the mean Dice of each object's mask
    against its own object, over all objects (1 when no image has one)."""
    tiling = native_tiling(objective.model.config.input_scale)
    prompted = isinstance(objective, PromptedObjective)
    objective.eval()
    total_loss, dices, ious, object_dices = 0.0, [], [], []
    for batch in loader:
        images, masks = batch["image"].to(device), batch["mask"].to(device)
        if prompted:
            loss, logits, object_dice = objective.score_objects(images, masks)
            object_dices.append(object_dice)
        elif tiling is None:
            loss, logits = objective(images, masks)
        else:
            with objective.autocast(device.type):
                logits = sliding_window_logits(
                    objective.model,
                    images[0],
                    objective.model.config.img_size,
                    tiling=tiling,
                    batch_size=windows_per_pass,
                    device=device,
                )[None].to(device)
            loss = objective.loss_fn(logits, masks)
        total_loss += loss.item() * len(images)
        dice, iou = per_image_dice_iou(logits.float(), masks)
        dices.append(dice)
        ious.append(iou)
    metrics = {
        "val_loss": total_loss / len(loader.dataset),
        "val_dice": torch.cat(dices).mean().item(),
        "val_iou": torch.cat(ious).mean().item(),
    }
    if prompted:
        object_dice = torch.cat(object_dices)
        metrics["val_object_dice"] = object_dice.mean().item() if len(object_dice) else 1.0
    return metrics


def validation_score(model: nn.Module) -> Score:
    """The validation metric that picks ``best.safetensors``: the Dice of each object's mask for a
    promptable model, whose union Dice would not see a mask that ignores its prompt; else Dice."""
    promptable = isinstance(model, PromptableSegmentationModel)
    return Score("val_object_dice" if promptable else "val_dice", maximize=True)


def recipe_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, batches_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The config's learning-rate schedule, stepped once per optimiser step."""
    return build_scheduler(
        optimizer, config.schedule,
        steps_per_epoch=optimizer_steps_per_epoch(batches_per_epoch, config.accumulate),
        epochs=config.epochs, lr_gamma=config.lr_gamma, warmup=config.warmup,
        min_lr_ratio=config.min_lr_ratio,
    )  # fmt: skip


def training_data(config: TrainConfig, output: Path, ctx: Distributed) -> Path:
    """The 2-D dataset folder to train on: ``config.data``, or for a folder of NIfTI volumes the
    slices that the main process writes to ``<output>/slices`` (see :mod:`..data.volume_slices`)."""
    data = Path(config.data)
    if not is_volume_dataset(data):
        return data
    slices = output / "slices"
    if ctx.is_main:
        window = tuple(config.volume_window) if config.volume_window else None
        slice_volume_dataset(
            data, slices, axis=config.volume_axis, window=window, empty_share=config.empty_slice_share,
            seed=config.seed, split_fractions=tuple(config.split_fractions),
        )  # fmt: skip
    if ctx.world_size > 1:
        dist.barrier()
    return slices


def train(
    config: TrainConfig,
    *,
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
    prepare_output(output, resume=resume, overwrite=overwrite, command="train")
    changes = check_resume(output, config) if resume else {}
    torch.manual_seed(config.seed)

    data = training_data(config, output, ctx)
    index = find_dataset(data)
    split = stored_split(output) if resume else resolve_split(config, index, is_volume_dataset(config.data))
    train_samples, val_samples = index.subset(split["train"]), index.subset(split["val"])

    if resume:
        model = resumed_model(output)
    else:
        model = create_model(
            config.model, num_classes=config.num_classes, img_size=config.size,
            input_scale=config.input_scale, **config.model_options,
        )  # fmt: skip
    promptable = isinstance(model, PromptableSegmentationModel)
    check_samples(train_samples + val_samples, config.num_classes, objects=promptable)
    if config.init_encoder and not resume:
        load_encoder_weights(model, config.init_encoder)
    model.set_grad_checkpointing(config.grad_checkpointing)
    model.to(device)
    # Copied before compiling: the average is validated and saved eagerly.
    average = None if config.ema_decay is None else WeightAverage(model, config.ema_decay)
    compile_model(model, config.compile)
    train_set, sampler, train_loader, val_loader = make_loaders(
        config,
        train_samples,
        val_samples,
        pixel_mean=model.config.pixel_mean,
        pixel_std=model.config.pixel_std,
        ctx=ctx,
        objects=promptable,
    )
    optimizer = build_optimizer(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = recipe_scheduler(optimizer, config, len(train_loader))
    amp_dtype = amp_dtype_for(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    objective = make_objective(model, config, amp_dtype)
    validated = objective if average is None else make_objective(average.module, config, amp_dtype)
    trained = objective
    if ctx.world_size > 1:
        # Prompted batches may leave some prompt embeddings unused, which DDP must be told.
        trained = DistributedDataParallel(
            objective, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=isinstance(model, PromptableSegmentationModel),
        )  # fmt: skip

    loop = EpochLoop(
        trained=trained, module=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        train_loader=train_loader,
        validate=lambda: validate(validated, val_loader, device, windows_per_pass=config.batch_size),
        score=validation_score(model),
        device=device, epoch_aware=(sampler, train_set), accumulate=config.accumulate,
        clip_grad=config.clip_grad, val_every=config.val_every, average=average,
    )  # fmt: skip
    columns = PROMPTED_COLUMNS if isinstance(model, PromptableSegmentationModel) else COLUMNS
    return run_epochs(
        loop, model, config, output=output, ctx=ctx, split=split, resume=resume, changes=changes,
        command="train", progress=progress,
        on_epoch_end=on_epoch_end, log_columns=columns,
    )  # fmt: skip
