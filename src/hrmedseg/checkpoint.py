"""Model files: safetensors weights plus the model config, and loaders for foreign checkpoints.

A model file is one ``.safetensors`` file whose metadata holds the :class:`ModelConfig` as JSON,
so :func:`load_model` rebuilds the exact model from the file alone. Nothing is unpickled. Files
are written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_write
from .build import ModelConfig, build_model
from .errors import CheckpointError, ConfigError, InputNotFoundError
from .modeling import HRMedSeg, HRMedSegSAM, SegmentationModel, embedding_encoder

FORMAT_NAME = "hrmedseg-model"
FORMAT_VERSION = "1"
ENCODER_PREFIX = "image_encoder."


class CheckpointMismatchError(CheckpointError):
    """Weights that do not fit a model: names every missing, unexpected and mis-shaped key."""


def save_model(model: SegmentationModel, path: str | os.PathLike, *, encoder_only: bool = False) -> Path:
    """Write ``model``'s weights and config (``model.config``) to a ``.safetensors`` file,
    atomically (a crash leaves the previous file or none, never half of one).

    Args:
        model: a model with its :class:`ModelConfig` (any registered architecture).
        path: the file to write.
        encoder_only: keep just the weights that compute the image embedding, as distillation
            produces them: ``image_encoder.*`` (LGViT + neck), and ``detail_stem.*`` too for a
            model whose encoder reads the stem's map (``ModelConfig.encoder_parts``). Such a file
            initialises other models (:func:`load_encoder_weights`) but is not a complete model
            for :func:`load_model`.

    Returns:
        ``path``.
    """
    if not isinstance(model, SegmentationModel):
        raise ValueError(
            f"save_model needs an hrmedseg model (a SegmentationModel with its ModelConfig), got "
            f"{type(model).__name__}; build it with hrmedseg.create_model"
        )
    config = model.config
    kept = tuple(f"{part}." for part in config.encoder_parts)
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not encoder_only or k.startswith(kept)
    }
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "contents": "image_encoder" if encoder_only else "model",
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _read_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        if _is_zip(path):  # torch.save's format: last.pt holds a run's state for --resume
            raise CheckpointError(
                f"{path} is training state (torch.save, for --resume), not a model file; use "
                f"{path.with_name('best.safetensors')} or last.safetensors from the same run"
            ) from None
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not an hrmedseg model file (no model config)"
        )
    version = metadata.get("format_version", "?")
    if not version.isdigit() or int(version) > int(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} is a model file of format version {version}; this hrmedseg reads version "
            f"{FORMAT_VERSION} and earlier: upgrade hrmedseg to load it"
        )
    return metadata


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The model config stored in a model file, without reading the weights; a config that is
    not JSON, or not a valid config, is named with the file."""
    try:
        values = json.loads(_read_metadata(path)["config"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its model config is not JSON ({err})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: its model config is not a JSON object")
    try:
        return ModelConfig.from_dict(values)
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from None


def check_finite_weights(weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinite values, naming the file and the first tensors:
    such a model would give NaN probabilities and empty masks without an error."""
    broken = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        raise CheckpointError(
            f"{source}: non-finite weights (NaN or infinite) in {len(broken)} tensor(s): {shown}"
        )


def is_encoder_file(path: str | os.PathLike) -> bool:
    """True for a file holding only encoder weights (e.g. the result of distillation)."""
    return _read_metadata(path).get("contents") == "image_encoder"


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> HRMedSeg | HRMedSegSAM:
    """Rebuild the model stored in a model file and load its weights.

    Args:
        path: a ``.safetensors`` model file from :func:`save_model` or ``hrmedseg train``.
        map_location: the device to load the weights onto.

    Returns:
        The model, of its registered architecture, in eval mode. A file whose weights do not fit
        its config, or hold NaN or infinity, is refused naming the file.
    """
    if is_encoder_file(path):
        raise CheckpointError(
            f"{path} holds only encoder weights (e.g. from distillation), not a whole model; "
            "start a model from it with `hrmedseg train --init-encoder` or hrmedseg.load_encoder_weights"
        )
    model = build_model(read_model_config(path))
    weights = load_file(str(path), device=str(map_location))
    check_finite_weights(weights, str(path))
    load_state_dict_checked(model, weights, source=str(path))
    return model.to(map_location).eval()


def load_encoder_weights(model: HRMedSeg | HRMedSegSAM, path: str | os.PathLike) -> None:
    """Initialise the part of a model that computes its image embedding from another model file.

    That part is ``model.config.encoder_parts``: the ``image_encoder`` (LGViT + neck), and the
    ``detail_stem`` too where the encoder patchifies the stem's map (``early_convs``, as in every
    registered ``hrmedseg_detail_*`` and ``hrmedseg_sam_detail_*`` model). Either every weight
    of that part is loaded or, on an error, none.

    Args:
        model: a model built by hrmedseg (its other weights stay as they are).
        path: a model file with those weights: a distilled encoder or an earlier model.

    Raises:
        CheckpointMismatchError: naming both models, when the encoders differ in size or in what
            they read (the image or a stem's map).
    """
    path = Path(path)
    config = read_model_config(path)
    is_ours = isinstance(model, SegmentationModel)
    parts = model.config.encoder_parts if is_ours else ("image_encoder",)
    target_text = f"{model.config.name} (C={model.config.embed_dim})" if is_ours else "this model"
    if config.encoder_parts != parts:
        reads = {("image_encoder",): "the image", ("detail_stem", "image_encoder"): "a detail stem's map"}
        hint = f"; distil one for it with `hrmedseg distill --student {model.config.name}`" if is_ours else ""
        raise CheckpointMismatchError(
            f"the encoder in {path} ({config.name}) reads {reads[config.encoder_parts]}, the one of "
            f"{target_text} reads {reads[parts]}{hint}"
        )
    # The encoder alone has its own key names; a StemEncoder keeps the model's, prefixes included.
    target = embedding_encoder(model) if is_ours else model.image_encoder
    strip = len(ENCODER_PREFIX) if target is model.image_encoder else 0
    kept = tuple(f"{part}." for part in parts)
    weights = {k[strip:]: v for k, v in load_file(str(path)).items() if k.startswith(kept)}
    if not weights:
        raise CheckpointError(f"{path} holds no {' or '.join(f'{part}.*' for part in parts)} weights")
    check_finite_weights(weights, str(path))
    try:
        load_state_dict_checked(target, weights, source=str(path))
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(
            f"the encoder in {path} is a {config.name} encoder (C={config.embed_dim}); "
            f"it does not fit {target_text}:\n{err}"
        ) from None


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict ``load_state_dict`` whose error lists every mismatching key and shape."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        lines = [f"weights in {source} do not match {type(module).__name__}:"]
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mis_shaped),
        ):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(state_dict, strict=True)


def load_sam_prompt_encoder(prompt_encoder: nn.Module, path: str | os.PathLike) -> None:
    """Load the ``prompt_encoder.*`` weights of an official SAM checkpoint.

    Args:
        prompt_encoder: the ``prompt_encoder`` of an HRMedSegSAM model.
        path: an official SAM checkpoint (``.pth``), read with ``weights_only=True``: tensors
            only, no pickled code runs.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"SAM checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    prefix = "prompt_encoder."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointMismatchError(f"{path} has no '{prefix}*' keys; is it a SAM checkpoint?")
    # SAM has no box-region path; ours keeps its zero start, so the model begins as SAM's.
    own = {k: v for k, v in prompt_encoder.state_dict().items() if k.startswith("box_downscaling.")}
    load_state_dict_checked(prompt_encoder, {**own, **weights}, source=str(path))
