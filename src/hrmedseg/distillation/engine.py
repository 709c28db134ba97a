"""Feature-distillation pretraining (paper section 3): LGViT + neck learns to reproduce a frozen
SAM image encoder's embedding (256 x N/p x N/p for an N x N input and patch size p) under an MSE loss.
Where the student's encoder patchifies its detail stem's map (``early_convs``), the stem learns
with it: together they map the image to the embedding.

Outputs in ``config.output``: ``config.yaml`` (resolved), ``split.json`` (relative image paths),
``log.csv`` (train/val MSE and the validation cosine similarity per epoch), ``curves.png``,
``last.pt`` (resumable state) and ``last.safetensors`` / ``best.safetensors`` (best = lowest
validation MSE): encoder files that ``hrmedseg train --init-encoder`` and
:func:`hrmedseg.load_encoder_weights` load into a model of the same size whose encoder reads
the same input (the image, or a stem's map).

With ``cache`` set, the teacher embeds every image once before the first epoch (see
:mod:`.cache`) and is not even loaded once the cache is complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..build import create_model, get_model_config
from ..errors import ConfigError, DataError, InputNotFoundError
from ..modeling import embedding_encoder
from ..runtime import compile_model
from ..training.config import RunConfig
from ..training.harness import (
    Distributed,
    amp_dtype_for,
    loader_generator,
    run_epochs,
    setup_distributed,
)
from ..training.loop import EpochLoop, Score
from ..training.optim import build_optimizer, build_scheduler, optimizer_steps_per_epoch
from ..training.run_folder import check_resume, prepare_output, resumed_model, stored_split
from .cache import EmbeddingCache, file_sha256
from .data import UnlabeledImages, find_images, split_images
from .teacher import load_teacher, resolve_teacher

LOG_COLUMNS = (
    "epoch", "lr", "train_loss", "grad_norm", "grad_norm_max", "val_loss", "val_cosine", "epoch_seconds",
)  # fmt: skip
RESIZE = "stretch to img_size x img_size, bilinear, antialiased"


@dataclass
class DistillConfig(RunConfig):
    """A distillation run beyond :class:`RunConfig`. Defaults follow the authors' recipe: ViT-H
    teacher, 1024 x 1024, Adam lr 1e-3 without weight decay, ExponentialLR 0.98 per epoch,
    batch 4, 20 epochs. ``data`` is a folder of unlabeled images, searched recursively;
    ``model_options`` are extra ModelConfig fields of the student."""

    epochs: int = 20
    batch_size: int = 4
    teacher: str | dict[str, Any] = "vit_h"  # vit_b | vit_l | vit_h, or TeacherSpec fields
    teacher_checkpoint: str = ""  # official SAM checkpoint (.pth) with image_encoder.* keys
    student: str = "hrmedseg_b"  # registered model name; its LGViT + neck (and stem) is trained
    img_size: int = 1024
    val_fraction: float = 0.05
    cache: str | None = None  # folder for the teacher-embedding cache
    cache_shard_size: int = 256  # images per cache file (about 0.5 GB at 1024 x 1024)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cache_shard_size < 1:
            raise ConfigError(f"cache_shard_size must be >= 1, got {self.cache_shard_size}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        resolve_teacher(self.teacher)
        # The student's config checks img_size against its patch size.
        get_model_config(self.student, img_size=self.img_size, **self.model_options)


class DistillationObjective(nn.Module):
    """forward(images, teacher_embeddings) -> (MSE over all elements, student embeddings)."""

    def __init__(self, student: nn.Module, amp_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.student = student
        self.amp_dtype = amp_dtype

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(images.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            predicted = self.student(images)
        return F.mse_loss(predicted.float(), targets.float()), predicted


def _teacher_embed(
    teacher: nn.Module, amp_dtype: torch.dtype | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return teacher(images).float()

    return embed


def fill_cache(
    cache: EmbeddingCache,
    root: Path,
    embed: Callable[[torch.Tensor], torch.Tensor],
    *,
    pixel_mean: tuple[float, ...],
    pixel_std: tuple[float, ...],
    batch_size: int,
    num_workers: int,
    device: torch.device,
    ctx: Distributed,
    progress: bool = True,
) -> int:
    """Compute this rank's share of the missing shards; returns the number of images embedded."""
    size = tuple(cache.header["img_size"])
    shards = [k for k in cache.missing_shards() if k % ctx.world_size == ctx.rank]
    total = sum(len(cache.shard_files(k)) for k in shards)
    bar = tqdm(total=total, desc="teacher -> cache", unit="img", disable=not progress or not total)
    for shard in shards:
        images = UnlabeledImages(
            root, cache.shard_files(shard), size=size, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        outputs = []
        for batch in DataLoader(images, batch_size, num_workers=num_workers):
            outputs.append(embed(batch["image"].to(device)).to("cpu", torch.float16))
            bar.update(len(batch["image"]))
        cache.write_shard(shard, torch.cat(outputs))
    bar.close()
    return total


@torch.no_grad()
def validate_distillation(
    objective: DistillationObjective,
    loader: DataLoader,
    prepare: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, float]:
    """``val_loss``, the mean MSE, and ``val_cosine``, the mean per-position cosine similarity of
    student and teacher embeddings."""
    objective.eval()
    total_loss, total_cosine, count = 0.0, 0.0, 0
    for batch in loader:
        images, targets = prepare(batch)
        loss, predicted = objective(images, targets)
        cosine = F.cosine_similarity(predicted.float(), targets.float(), dim=1).mean((1, 2))
        total_loss += loss.item() * len(images)
        total_cosine += cosine.sum().item()
        count += len(images)
    return {"val_loss": total_loss / count, "val_cosine": total_cosine / count}


def _resolve_split(
    config: DistillConfig, files: list[str], output: Path, resume: bool
) -> dict[str, list[str]]:
    if resume:
        split = stored_split(output)
        gone = sorted(set(split["train"] + split["val"]) - set(files))
        if gone:
            raise DataError(f"{output / 'split.json'}: {len(gone)} image(s) of the run are no longer "
                            f"in {config.data}: {gone[:5]}")  # fmt: skip
        return split
    if len(files) < 2:
        raise DataError(f"{config.data}: distillation needs at least 2 images (one for validation)")
    return split_images(files, config.seed, config.val_fraction)


def distill(
    config: DistillConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) distillation as ``config`` describes; returns the final log row and paths."""
    if not Path(config.teacher_checkpoint).is_file():
        raise InputNotFoundError(f"teacher checkpoint not found: '{config.teacher_checkpoint}'")
    ctx, device = setup_distributed(config.device)
    output = Path(config.output)
    prepare_output(output, resume=resume, overwrite=overwrite, command="distill")
    changes = check_resume(output, config) if resume else {}
    torch.manual_seed(config.seed)
    root = Path(config.data)
    files = find_images(root)
    split = _resolve_split(config, files, output, resume)
    size = (config.img_size, config.img_size)

    if resume:
        model = resumed_model(output)
    else:
        model = create_model(config.student, img_size=size, **config.model_options)
    student = embedding_encoder(model)
    student.set_grad_checkpointing(config.grad_checkpointing)
    compile_model(student, config.compile)
    student.to(device)
    mean, std = model.config.pixel_mean, model.config.pixel_std
    teacher_name, spec = resolve_teacher(config.teacher)
    if spec.out_chans != model.config.decoder_dim:
        raise ConfigError(
            f"the teacher embeds {spec.out_chans} channels but {config.student}'s neck gives "
            f"{model.config.decoder_dim}"
        )
    amp_dtype = amp_dtype_for(config.amp, device)
    teacher: nn.Module | None = None

    def get_teacher() -> nn.Module:
        nonlocal teacher
        if teacher is None:
            teacher, _ = load_teacher(
                config.teacher,
                config.teacher_checkpoint,
                img_size=config.img_size,
                patch_size=model.config.patch_size,
            )
            teacher = teacher.to(device)
        return teacher

    cache = None
    if config.cache:
        header = {
            "teacher": teacher_name,
            "teacher_spec": spec.to_dict(),
            "teacher_checkpoint_sha256": file_sha256(config.teacher_checkpoint),
            "img_size": list(size),
            "resize": RESIZE,
            "pixel_mean": list(mean),
            "pixel_std": list(std),
            "value_range": [0.0, 1.0],
            "amp": config.amp,
            "embedding_shape": [spec.out_chans, *model.config.grid_size],
            "dtype": "float16",
        }
        if ctx.is_main:
            cache = EmbeddingCache.open(config.cache, header, files, shard_size=config.cache_shard_size)
        if ctx.world_size > 1:
            dist.barrier()  # the main process writes a new manifest first
        if not ctx.is_main:
            cache = EmbeddingCache.open(config.cache, header, files, shard_size=config.cache_shard_size)
        if not cache.complete:
            started = time.perf_counter()
            done = fill_cache(
                cache, root, _teacher_embed(get_teacher(), amp_dtype), pixel_mean=mean, pixel_std=std,
                batch_size=config.batch_size, num_workers=config.num_workers, device=device, ctx=ctx,
                progress=progress and ctx.is_main,
            )  # fmt: skip
            if progress and ctx.is_main:
                print(f"teacher embeddings of {done} image(s) cached in {cache.root} "
                      f"({time.perf_counter() - started:.1f}s)", flush=True)  # fmt: skip
            if ctx.world_size > 1:
                dist.barrier()
        teacher = None  # the cache replaces it from here on; free its memory
        index = {name: i for i, name in enumerate(files)}

        def prepare(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return batch["image"].to(device), batch["target"].to(device).float()
    else:
        index, embed = {}, _teacher_embed(get_teacher(), amp_dtype)

        def prepare(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            images = batch["image"].to(device)
            return images, embed(images)

    images = {"size": size, "pixel_mean": mean, "pixel_std": std, "cache": cache, "cache_index": index}
    train_set = UnlabeledImages(root, split["train"], **images)
    val_set = UnlabeledImages(root, split["val"], **images)
    sampler = DistributedSampler(
        train_set, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    per_rank_batch = max(1, config.batch_size // ctx.world_size)
    drop_last = len(train_set) // ctx.world_size >= per_rank_batch
    train_loader = DataLoader(
        train_set, per_rank_batch, sampler=sampler, num_workers=config.num_workers, drop_last=drop_last,
        generator=loader_generator(config.seed),
    )  # fmt: skip
    val_loader = DataLoader(
        val_set, per_rank_batch, num_workers=config.num_workers, generator=loader_generator(config.seed)
    )

    optimizer = build_optimizer(student, "adam", lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = optimizer_steps_per_epoch(len(train_loader), config.accumulate)
    scheduler = build_scheduler(
        optimizer,
        "exponential",
        steps_per_epoch=steps_per_epoch,
        epochs=config.epochs,
        lr_gamma=config.lr_gamma,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    objective = DistillationObjective(student, amp_dtype)
    trained = objective
    if ctx.world_size > 1:
        trained = DistributedDataParallel(objective, device_ids=[device] if device.type == "cuda" else None)

    loop = EpochLoop(
        trained=trained, module=student, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        train_loader=train_loader,
        validate=lambda: validate_distillation(objective, val_loader, prepare),
        score=Score("val_loss", maximize=False), device=device, epoch_aware=(sampler,),
        accumulate=config.accumulate, clip_grad=config.clip_grad, val_every=config.val_every, prepare=prepare,
    )  # fmt: skip
    return run_epochs(
        loop, model, config, output=output, ctx=ctx, split=split, resume=resume, changes=changes,
        command="distill", progress=progress,
        on_epoch_end=on_epoch_end, log_columns=LOG_COLUMNS, encoder_only=True,
    )  # fmt: skip
