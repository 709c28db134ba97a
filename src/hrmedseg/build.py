"""Model registry: named configurations and ``create_model``.

Hyper-parameters live only here. A :class:`ModelConfig` fully describes a model, so a checkpoint
that stores it can rebuild the exact architecture (see :mod:`hrmedseg.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from .errors import ConfigError, UnknownOptionError
from .modeling import ECMDecoder, HRMedSeg, HRMedSegSAM, LGViT, PromptEncoder
from .modeling.config import ARCHITECTURES, ModelConfig
from .modeling.detail import DetailDecoder, DetailStem
from .modeling.hrmedseg_detail import HRMedSegDetail

__all__ = ["ARCHITECTURES", "ModelConfig", "build_model", "create_model", "get_model_config", "list_models"]

_SIZES: dict[str, dict[str, Any]] = {
    # Head counts keep every head's width even, so no RoPE pair is split between two heads.
    "t": {"embed_dim": 24, "num_heads": (3, 6, 12)},
    "s": {"embed_dim": 48, "num_heads": (6, 12, 24)},
    "b": {"embed_dim": 96, "num_heads": (6, 12, 24)},  # the paper's configuration
    "l": {"embed_dim": 192, "num_heads": (6, 12, 24)},
}

# The detail path chosen by the ablation in docs/benchmarks.md.
_DETAIL = {"detail": ("early_convs", "skips", "full_res_head"), "deep_supervision": 0.4}

_REGISTRY: dict[str, ModelConfig] = {}
for _size, _kwargs in _SIZES.items():
    for _arch in ARCHITECTURES:
        _name = f"{_arch}_{_size}"
        _extra = _DETAIL if _arch == "hrmedseg_detail" else {}
        _REGISTRY[_name] = ModelConfig(name=_name, arch=_arch, **_kwargs, **_extra)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("*sam*")``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"name", "arch"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UnknownOptionError(f"unknown option(s) {unknown} for {name}; valid options: {sorted(known)}")
    return dataclasses.replace(_REGISTRY[name], **overrides)


def build_model(config: ModelConfig) -> HRMedSeg | HRMedSegSAM:
    """Instantiate the model a config describes (random initialisation)."""
    if config.arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {config.arch!r}; expected one of {ARCHITECTURES}")
    early_convs = "early_convs" in config.detail
    encoder = LGViT(
        in_chans=config.detail_chans[1] if early_convs else config.in_chans,
        embed_dim=config.embed_dim,
        patch_size=config.patch_size // 4 if early_convs else config.patch_size,
        num_mbconv=config.num_mbconv,
        depths=config.depths,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=config.drop_path_rate,
        out_chans=config.decoder_dim,
    )
    sam = config.arch == "hrmedseg_sam"
    decoder_options = {
        "num_mask_tokens": 1 + config.num_multimask_outputs if sam else config.num_classes,
        "transformer_dim": config.decoder_dim,
        "transformer_depth": config.decoder_depth,
        "num_heads": config.decoder_heads,
        "mlp_dim": config.decoder_mlp_dim,
        "pool_sizes": config.pool_sizes,
    }
    if config.detail:
        decoder = DetailDecoder(
            skip_chans=config.detail_chans,
            skips="skips" in config.detail,
            full_res_head="full_res_head" in config.detail,
            head_dim=config.detail_head_dim,
            **decoder_options,
        )
        return HRMedSegDetail(DetailStem(config.in_chans, config.detail_chans), encoder, decoder, config)
    decoder = ECMDecoder(**decoder_options)
    if sam:
        prompt_encoder = PromptEncoder(config.decoder_dim, config.mask_in_chans, config.box_region_prompt)
        return HRMedSegSAM(encoder, prompt_encoder, decoder, config)
    return HRMedSeg(encoder, decoder, config)


def create_model(
    name: str, num_classes: int = 1, img_size: int | tuple[int, int] = 1024, **overrides: Any
) -> HRMedSeg | HRMedSegSAM:
    """Build a registered model by name.

    Args:
        name: one of :func:`list_models`, e.g. ``"hrmedseg_b"``, ``"hrmedseg_detail_b"`` or
            ``"hrmedseg_sam_b"``.
        num_classes: 1 for binary (sigmoid), K >= 2 for K-class softmax output.
        img_size: native input size (int or (H, W)) the data pipeline resizes to.
        overrides: any other :class:`ModelConfig` field, e.g. ``drop_path_rate=0.0`` or
            ``pool_sizes=()`` to switch the multiscale pooling off.

    Example:
        >>> model = create_model("hrmedseg_b", num_classes=4, img_size=512)
    """
    return build_model(get_model_config(name, num_classes=num_classes, img_size=img_size, **overrides))
