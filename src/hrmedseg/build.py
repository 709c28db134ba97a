"""Model registry: named configurations and ``create_model``.

Hyper-parameters live only here. A :class:`ModelConfig` fully describes a model, so a checkpoint
that stores it can rebuild the exact architecture (see :mod:`hrmedseg.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any

from torch import nn

from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .modeling import ECMDecoder, HRMedSeg, HRMedSegSAM, LGViT, PromptEncoder

ARCHITECTURES = ("hrmedseg", "hrmedseg_sam")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and feed it. ``img_size`` is the (H, W) the data
    pipeline resizes to, and ``pixel_mean``/``pixel_std`` normalise RGB values in [0, 1]; the
    network itself accepts any multiple of 16."""

    name: str
    arch: str = "hrmedseg"
    num_classes: int = 1
    img_size: tuple[int, int] = (1024, 1024)
    in_chans: int = 3
    embed_dim: int = 96
    num_mbconv: int = 2
    depths: tuple[int, ...] = (2, 6, 2)
    num_heads: tuple[int, ...] = (6, 12, 24)
    mlp_ratio: float = 2.0
    drop_path_rate: float = 0.1
    decoder_dim: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 256
    pool_sizes: tuple[int, ...] = (5, 9, 13)
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, ...] = IMAGENET_MEAN
    pixel_std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHITECTURES}")
        size = self.img_size
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if len(size) != 2 or any(s <= 0 or s % 16 for s in size):
            raise ValueError(f"img_size must be positive multiples of 16, got {self.img_size}")
        object.__setattr__(self, "img_size", size)
        for name in ("depths", "num_heads", "pool_sizes", "pixel_mean", "pixel_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.arch == "hrmedseg_sam" and self.num_classes != 1:
            raise ValueError(
                "HRMedSegSAM is class-agnostic (one mask per prompt); "
                "use num_classes=1 and one prompt per object"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)


_SIZES: dict[str, dict[str, Any]] = {
    # Head counts keep every head's width even, so no RoPE pair is split between two heads.
    "t": {"embed_dim": 24, "num_heads": (3, 6, 12)},
    "s": {"embed_dim": 48, "num_heads": (6, 12, 24)},
    "b": {"embed_dim": 96, "num_heads": (6, 12, 24)},  # the paper's configuration
    "l": {"embed_dim": 192, "num_heads": (6, 12, 24)},
}

_REGISTRY: dict[str, ModelConfig] = {}
for _size, _kwargs in _SIZES.items():
    for _arch in ARCHITECTURES:
        _name = f"{_arch}_{_size}"
        _REGISTRY[_name] = ModelConfig(name=_name, arch=_arch, **_kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. ``list_models("*sam*")``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"name", "arch"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {name}; valid options: {sorted(known)}")
    return dataclasses.replace(_REGISTRY[name], **overrides)


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the model a config describes (random initialisation)."""
    encoder = LGViT(
        in_chans=config.in_chans,
        embed_dim=config.embed_dim,
        num_mbconv=config.num_mbconv,
        depths=config.depths,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=config.drop_path_rate,
        out_chans=config.decoder_dim,
    )
    sam = config.arch == "hrmedseg_sam"
    decoder = ECMDecoder(
        num_mask_tokens=1 + config.num_multimask_outputs if sam else config.num_classes,
        transformer_dim=config.decoder_dim,
        transformer_depth=config.decoder_depth,
        num_heads=config.decoder_heads,
        mlp_dim=config.decoder_mlp_dim,
        pool_sizes=config.pool_sizes,
    )
    model = (
        HRMedSegSAM(encoder, PromptEncoder(config.decoder_dim), decoder)
        if sam
        else HRMedSeg(encoder, decoder)
    )
    model.config = config
    return model


def create_model(
    name: str, num_classes: int = 1, img_size: int | tuple[int, int] = 1024, **overrides: Any
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: one of :func:`list_models`, e.g. ``"hrmedseg_b"`` or ``"hrmedseg_sam_b"``.
        num_classes: 1 for binary (sigmoid), K >= 2 for K-class softmax output.
        img_size: native input size (int or (H, W)) the data pipeline resizes to.
        overrides: any other :class:`ModelConfig` field, e.g. ``drop_path_rate=0.0`` or
            ``pool_sizes=()`` to switch the multiscale pooling off.

    Example:
        >>> model = create_model("hrmedseg_b", num_classes=4, img_size=512)
    """
    return build_model(get_model_config(name, num_classes=num_classes, img_size=img_size, **overrides))
