"""The frozen SAM image encoder that distillation imitates.

The teacher is ``segment_anything``'s ``ImageEncoderViT`` (ViT-B, ViT-L or ViT-H with SAM's neck,
256 output channels), built locally and filled from an official SAM checkpoint
(``sam_vit_h_4b8939.pth`` and friends; keys ``image_encoder.*``) read with ``weights_only=True``.
It is built with the student's patch size (the student's ``ModelConfig.patch_size``, which is
SAM's for every registered model), so both embed an image on the same grid.

SAM was trained at 1024 x 1024, so its absolute position embedding is a 64 x 64 grid and its
global-attention blocks hold relative-position tables for 64 positions. For another input size
both are resized on loading (bicubic over the grid, linear over the relative offsets), so the
teacher's embedding always has the student's grid: 256 x N/p x N/p for an N x N input and
patch size p.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import ENCODER_PREFIX, CheckpointMismatchError, load_state_dict_checked
from ..errors import (
    CheckpointError,
    ConfigError,
    InputNotFoundError,
    MissingDependencyError,
    UnknownOptionError,
)


@dataclass(frozen=True)
class TeacherSpec:
    """The shape of a SAM ViT image encoder (all end in a 256-channel neck)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "global_attn_indexes", tuple(self.global_attn_indexes))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "global_attn_indexes": list(self.global_attn_indexes)}


# Published SAM configurations (segment_anything/build_sam.py).
SAM_TEACHERS: dict[str, TeacherSpec] = {
    "vit_b": TeacherSpec(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": TeacherSpec(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": TeacherSpec(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


def resolve_teacher(teacher: str | Mapping[str, Any]) -> tuple[str, TeacherSpec]:
    """A teacher given by SAM name (``vit_b``, ``vit_l``, ``vit_h``) or as a mapping of
    :class:`TeacherSpec` fields (for other SAM-architecture encoders, e.g. in tests)."""
    if isinstance(teacher, str):
        if teacher not in SAM_TEACHERS:
            raise ConfigError(f"unknown teacher {teacher!r}; choose one of {', '.join(SAM_TEACHERS)}")
        return teacher, SAM_TEACHERS[teacher]
    known = set(TeacherSpec.__dataclass_fields__)
    unknown = sorted(set(teacher) - known)
    if unknown:
        raise UnknownOptionError(f"unknown teacher field(s) {unknown}; known: {sorted(known)}")
    return "custom", TeacherSpec(**teacher)


def build_teacher(spec: TeacherSpec, img_size: int, patch_size: int) -> nn.Module:
    """An untrained SAM image encoder with ``patch_size`` patches for square ``img_size`` inputs
    (a multiple of ``patch_size``)."""
    try:
        from segment_anything.modeling import ImageEncoderViT
    except ImportError:
        raise MissingDependencyError(
            "distillation needs the SAM teacher from the segment-anything package: "
            "pip install 'hrmedseg[distill]' (or pip install segment-anything)"
        ) from None
    if img_size % patch_size:
        raise ConfigError(f"the teacher's input size must be a multiple of {patch_size}, got {img_size}")
    return ImageEncoderViT(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        out_chans=spec.out_chans,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=spec.window_size,
        global_attn_indexes=spec.global_attn_indexes,
    )


def read_sam_encoder_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` tensors of a SAM checkpoint, without the prefix (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"teacher checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several error types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    weights = {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if not weights:
        raise CheckpointMismatchError(f"{path} has no '{ENCODER_PREFIX}*' keys; is it a SAM checkpoint?")
    return weights


def _describe(weights: Mapping[str, torch.Tensor]) -> str:
    """What a checkpoint's encoder is (width, depth and the matching SAM name)."""
    width = weights["patch_embed.proj.weight"].shape[0] if "patch_embed.proj.weight" in weights else None
    depth = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
    names = [n for n, s in SAM_TEACHERS.items() if (s.embed_dim, s.depth) == (width, depth)]
    return f"width {width}, depth {depth}" + (f" (SAM {names[0]})" if names else "")


def resize_position_tables(
    weights: Mapping[str, torch.Tensor], spec: TeacherSpec, grid: int
) -> dict[str, torch.Tensor]:
    """Fit the absolute position embedding and the global blocks' relative-position tables of a
    checkpoint to a ``grid`` x ``grid`` patch grid; windowed blocks are size-independent and kept."""
    out = dict(weights)
    pos = out.get("pos_embed")
    if pos is not None and pos.shape[1:3] != (grid, grid):
        resized = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic")
        out["pos_embed"] = resized.permute(0, 2, 3, 1).to(pos.dtype)
    for index in spec.global_attn_indexes:
        for axis in ("h", "w"):
            key = f"blocks.{index}.attn.rel_pos_{axis}"
            table = out.get(key)
            if table is not None and table.shape[0] != 2 * grid - 1:
                resized = F.interpolate(table.T[None].float(), size=2 * grid - 1, mode="linear")
                out[key] = resized[0].T.to(table.dtype)
    return out


def load_teacher(
    teacher: str | Mapping[str, Any], checkpoint: str | os.PathLike, *, img_size: int, patch_size: int
) -> tuple[nn.Module, TeacherSpec]:
    """The frozen teacher (eval mode, no gradients) for ``img_size`` inputs, from a SAM checkpoint
    whose patches must be ``patch_size`` wide (the student's)."""
    name, spec = resolve_teacher(teacher)
    weights = read_sam_encoder_weights(checkpoint)
    patch_weight = weights.get("patch_embed.proj.weight")
    if patch_weight is not None and tuple(patch_weight.shape[-2:]) != (patch_size, patch_size):
        raise CheckpointMismatchError(
            f"{checkpoint} embeds {patch_weight.shape[-1]} x {patch_weight.shape[-2]} patches, the student "
            f"{patch_size} x {patch_size}: their embeddings would not share a grid"
        )
    model = build_teacher(spec, img_size, patch_size)
    try:
        load_state_dict_checked(
            model, resize_position_tables(weights, spec, img_size // patch_size), source=str(checkpoint)
        )
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(
            f"{checkpoint} holds a SAM image encoder of {_describe(weights)}, which is not the "
            f"requested teacher {name} (width {spec.embed_dim}, depth {spec.depth}):\n{err}"
        ) from None
    model.eval().requires_grad_(False)
    return model, spec
