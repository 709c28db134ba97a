"""Model registry: named configurations and ``create_model``.

Hyper-parameters live only here. A :class:`ModelConfig` fully describes a model, so a checkpoint
that stores it can rebuild the exact architecture (see :mod:`hrmedseg.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, UnknownOptionError
from .modeling import ECMDecoder, HRMedSeg, HRMedSegSAM, LGViT, PromptEncoder, SegmentationModel
from .modeling.config import ARCHITECTURES, ModelConfig
from .modeling.detail import DetailDecoder, DetailStem
from .modeling.hrmedseg_detail import HRMedSegDetail
from .modeling.hrmedseg_sam_detail import HRMedSegSAMDetail
from .schema import checked_fields

__all__ = [
    "ARCHITECTURES",
    "ModelConfig",
    "build_model",
    "create_model",
    "get_model_config",
    "is_promptable",
    "list_models",
    "register_architecture",
]

_SIZES: dict[str, dict[str, Any]] = {
    # Head counts keep every head's width even, so no RoPE pair is split between two heads.
    "t": {"embed_dim": 24, "num_heads": (3, 6, 12)},
    "s": {"embed_dim": 48, "num_heads": (6, 12, 24)},
    "b": {"embed_dim": 96, "num_heads": (6, 12, 24)},  # the paper's configuration
    "l": {"embed_dim": 192, "num_heads": (6, 12, 24)},
}

# The detail path chosen by the ablation in docs/benchmarks.md. ModelConfig's default block at 1/2
# resolution stays "ln_gelu", which model files saved before the field existed were trained with.
_DETAIL_PATH = {"detail": ("early_convs", "skips", "full_res_head"), "detail_half_res_block": "relu"}
_DETAIL_AUTOMATIC = {"arch": "hrmedseg_detail", **_DETAIL_PATH, "deep_supervision": 0.4}

# Registered names are <family>_<size>.
_FAMILIES: dict[str, dict[str, Any]] = {
    "hrmedseg": {"arch": "hrmedseg"},
    "hrmedseg_sam": {"arch": "hrmedseg_sam"},
    "hrmedseg_detail": _DETAIL_AUTOMATIC,
    # ... with two residual blocks in the stem at 1/4 resolution, what thin structures (retinal
    # vessels) need, at a longer training step; and with normalised mask features, without which
    # its output level swings between empty and full masks for tens of epochs (docs/benchmarks.md).
    "hrmedseg_detail_deepstem": {
        **_DETAIL_AUTOMATIC,
        "detail": (*_DETAIL_PATH["detail"], "feature_norm"),
        "detail_stem_blocks": 2,
    },
    # HRMedSegSAM that also takes each box as a map of its region, so its mask follows the box
    # (docs/benchmarks.md, prompt-following); the paper's hrmedseg_sam_* stay as they are.
    "hrmedseg_sam_region": {"arch": "hrmedseg_sam", "box_region_prompt": True},
    # ... and with the detail path, so that its masks are drawn at the input resolution.
    "hrmedseg_sam_detail": {"arch": "hrmedseg_sam_detail", "box_region_prompt": True, **_DETAIL_PATH},
}
_REGISTRY: dict[str, ModelConfig] = {
    f"{family}_{size}": ModelConfig(name=f"{family}_{size}", **size_options, **options)
    for size, size_options in _SIZES.items()
    for family, options in _FAMILIES.items()
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("*sam*")``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a registered model, with some fields changed.

    Args:
        name: one of :func:`list_models`.
        overrides: :class:`ModelConfig` fields, e.g. ``num_classes=3`` or ``img_size=512``;
            an unknown field is refused, naming the valid ones.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"name", "arch"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UnknownOptionError(f"unknown option(s) {unknown} for {name}; valid options: {sorted(known)}")
    return dataclasses.replace(_REGISTRY[name], **checked_fields(ModelConfig, overrides, source=name))


@dataclass(frozen=True)
class Architecture:
    """How to build the models of one ``ModelConfig.arch``, and whether they take prompts."""

    build: Callable[[ModelConfig], SegmentationModel]
    promptable: bool


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(
    name: str, *, promptable: bool = False
) -> Callable[[Callable[[ModelConfig], SegmentationModel]], Callable[[ModelConfig], SegmentationModel]]:
    """Register a builder ``(config) -> model`` for the configs whose ``arch`` is ``name``, so that
    :func:`build_model` and :func:`hrmedseg.load_model` rebuild its models.

    Args:
        name: the ``ModelConfig.arch`` value the builder handles.
        promptable: whether the models implement
            :class:`~hrmedseg.modeling.PromptableSegmentationModel` (else
            :class:`~hrmedseg.modeling.AutomaticSegmentationModel`).

    Example:
        >>> @register_architecture("my_unet")
        ... def build_my_unet(config: ModelConfig) -> MyUNet:
        ...     return MyUNet(config)
    """

    def register(
        build: Callable[[ModelConfig], SegmentationModel],
    ) -> Callable[[ModelConfig], SegmentationModel]:
        if name in _ARCHITECTURES:
            raise ConfigError(f"architecture {name!r} is registered already")
        _ARCHITECTURES[name] = Architecture(build, promptable)
        return build

    return register


def is_promptable(config: ModelConfig) -> bool:
    """Whether the models of ``config`` take prompts, from their registered architecture."""
    return _architecture(config).promptable


def _architecture(config: ModelConfig) -> Architecture:
    if config.arch not in _ARCHITECTURES:
        raise ConfigError(
            f"unknown arch {config.arch!r}; registered architectures: {', '.join(sorted(_ARCHITECTURES))}"
        )
    return _ARCHITECTURES[config.arch]


def build_model(config: ModelConfig) -> SegmentationModel:
    """Instantiate the model a config describes (random initialisation)."""
    return _architecture(config).build(config)


def _encoder(config: ModelConfig) -> LGViT:
    early_convs = "early_convs" in config.detail
    return LGViT(
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


def _decoder_options(config: ModelConfig, num_mask_tokens: int) -> dict[str, Any]:
    return {
        "num_mask_tokens": num_mask_tokens,
        "transformer_dim": config.decoder_dim,
        "transformer_depth": config.decoder_depth,
        "num_heads": config.decoder_heads,
        "mlp_dim": config.decoder_mlp_dim,
        "pool_sizes": config.pool_sizes,
    }


@register_architecture("hrmedseg")
def _build_hrmedseg(config: ModelConfig) -> HRMedSeg:
    return HRMedSeg(_encoder(config), ECMDecoder(**_decoder_options(config, config.num_classes)), config)


@register_architecture("hrmedseg_sam", promptable=True)
def _build_hrmedseg_sam(config: ModelConfig) -> HRMedSegSAM:
    # Parts built in this order, so that a seed gives the same initial weights as ever.
    encoder = _encoder(config)
    # One single-mask token plus the multimask ones, as in SAM.
    decoder = ECMDecoder(**_decoder_options(config, 1 + config.num_multimask_outputs))
    prompt_encoder = PromptEncoder(config.decoder_dim, config.mask_in_chans, config.box_region_prompt)
    return HRMedSegSAM(encoder, prompt_encoder, decoder, config)


@register_architecture("hrmedseg_detail")
def _build_hrmedseg_detail(config: ModelConfig) -> HRMedSegDetail:
    encoder = _encoder(config)
    decoder = _detail_decoder(config, config.num_classes)
    return HRMedSegDetail(_detail_stem(config), encoder, decoder, config)


@register_architecture("hrmedseg_sam_detail", promptable=True)
def _build_hrmedseg_sam_detail(config: ModelConfig) -> HRMedSegSAMDetail:
    encoder = _encoder(config)
    decoder = _detail_decoder(config, 1 + config.num_multimask_outputs)
    prompt_encoder = PromptEncoder(config.decoder_dim, config.mask_in_chans, config.box_region_prompt)
    return HRMedSegSAMDetail(_detail_stem(config), encoder, prompt_encoder, decoder, config)


def _detail_decoder(config: ModelConfig, num_mask_tokens: int) -> DetailDecoder:
    return DetailDecoder(
        skip_chans=config.detail_chans,
        skips="skips" in config.detail,
        full_res_head="full_res_head" in config.detail,
        feature_norm="feature_norm" in config.detail,
        head_dim=config.detail_head_dim,
        half_res_block=config.detail_half_res_block,
        **_decoder_options(config, num_mask_tokens),
    )


def _detail_stem(config: ModelConfig) -> DetailStem:
    return DetailStem(
        config.in_chans, config.detail_chans, config.detail_half_res_block, config.detail_stem_blocks
    )


def create_model(
    name: str, num_classes: int = 1, img_size: int | tuple[int, int] = 1024, **overrides: Any
) -> SegmentationModel:
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
