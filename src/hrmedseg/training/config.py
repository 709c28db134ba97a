"""Training configuration: a dataclass, read from YAML, overridden from the command line, and
written back next to every run's outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..atomic import write_text
from ..data.transforms import AugmentConfig
from ..data.volumes import check_window
from ..errors import ConfigError
from ..runtime import COMPILE_MODES
from ..schema import checked_fields
from .optim import OPTIMIZERS, SCHEDULES


class ConfigFile:
    """Dataclass configs that are written next to a run's outputs as YAML."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def unused_fields(self) -> dict[str, str]:
        """Fields that this configuration's other choices leave without effect, and why."""
        return {}

    @classmethod
    def sections(cls) -> dict[str, type]:
        """Fields that hold a mapping of another dataclass's fields, by name; their values are
        checked against that dataclass when the config is read."""
        return {}

    def save(self, path: str | Path) -> None:
        """Write the config as YAML; a field without effect (say ``lr_gamma`` under a cosine
        schedule) says so in a comment, so that the file reads as what the run did."""
        unused = self.unused_fields()
        lines = []
        for line in yaml.safe_dump(self.to_dict(), sort_keys=False).splitlines():
            key = line.split(":", 1)[0]
            lines.append(
                f"{line}  # unused: {unused[key]}" if key in unused and not line[0].isspace() else line
            )
        write_text(path, "\n".join(lines) + "\n")


ConfigT = TypeVar("ConfigT", bound=ConfigFile)


@dataclass
class RunConfig(ConfigFile):
    """The options every run shares (``hrmedseg train`` and ``hrmedseg distill``): where its data
    and outputs are, how long and how it optimises, and how it executes."""

    data: str = ""
    output: str = ""
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_gamma: float = 0.98  # exponential schedule: factor per epoch
    accumulate: int = 1  # gradient accumulation steps per optimiser step
    # Validate after every val_every-th epoch and after the last; on large images (tiled
    # validation of a few 8-megapixel fundus photographs) validation can cost more than training.
    val_every: int = 1
    clip_grad: float | None = None  # max total gradient norm (e.g. 1.0); None: no clipping
    amp: str = "none"  # none | bf16 | fp16 (fp16 on CUDA only, with a gradient scaler)
    grad_checkpointing: bool = False
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: str = "none"  # torch.compile's mode (runtime.COMPILE_MODES); none: eager
    model_options: dict[str, Any] = field(default_factory=dict)  # extra ModelConfig fields

    @classmethod
    def sections(cls) -> dict[str, type]:
        from ..modeling.config import ModelConfig

        return {"model_options": ModelConfig}

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        for name in ("epochs", "batch_size", "accumulate", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"clip_grad must be a positive gradient norm (or unset), got {self.clip_grad}")


@dataclass
class TrainConfig(RunConfig):
    """Everything a training run depends on beyond :class:`RunConfig`.

    The optimiser and schedule default to the winner of the recipe study (docs/benchmarks.md,
    "Recipe study"), chosen by validation Dice for training from scratch: AdamW, lr 2e-3, weight
    decay 0.05 (none on biases and norms), a linear warm-up over 5 % of the steps, then a cosine
    decay to 0. The rest follows the paper: 0.8 Dice + 0.2 focal (binary; multi-class: 0.2
    cross-entropy), batch 16, 200 epochs, 1024 x 1024. The paper's own optimiser and schedule
    (Adam 1e-3, ExponentialLR 0.98 per epoch) are ``configs/paper.yaml``."""

    lr: float = 2e-3
    weight_decay: float = 0.05
    model: str = "hrmedseg_b"
    num_classes: int = 1
    img_size: int | list[int] = 1024
    # resized: each image resized to img_size; native: random img_size windows at each image's own
    # resolution (for small objects in large or mixed-size images), validated and predicted tiled.
    input_scale: str = "resized"
    foreground_windows: float = 0.33  # native: share of windows placed on a foreground pixel
    optimizer: str = "adamw"  # adam | adamw
    schedule: str = "cosine"  # exponential (lr_gamma per epoch) | cosine (warm-up, then cosine)
    warmup: float = 0.05  # cosine: fraction of all optimiser steps with a linear warm-up
    min_lr_ratio: float = 0.0  # cosine: final learning rate as a fraction of lr
    # Validate and save an exponential moving average of the weights with this decay per optimiser
    # step (training.averaging; spans about 1 / (1 - decay) steps); None: the weights themselves.
    ema_decay: float | None = None
    # A registered loss (hrmedseg.losses.register_loss); dice_focal: Dice + focal (binary) or
    # Dice + cross-entropy (multi-class), weighted by the fields below.
    loss: str = "dice_focal"
    dice_weight: float = 0.8
    focal_weight: float = 0.2  # focal term (binary models)
    ce_weight: float = 0.2  # cross-entropy term (multi-class models)
    # Boundary term (hrmedseg.losses.boundary_term): each wrong pixel costs by its distance to the
    # true outline; 0: off (the paper's loss). Automatic models only.
    boundary_weight: float = 0.0
    quality_weight: float = 1.0  # MSE of the IoU head against the achieved IoU
    init_encoder: str | None = None  # model file whose encoder (ModelConfig.encoder_parts) starts the model
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])  # when no split.json
    # Cross-validation: fold `fold` of `folds` (> 1) over the split's train and val cases, dealt
    # with `seed` (the same for every fold); test stays. 0: the split as it is.
    folds: int = 0
    fold: int = 0
    # A data folder of NIfTI volumes trains on their slices (hrmedseg.data.volume_slices).
    volume_axis: int = -1  # the array axis to slice along
    volume_window: list[float] | None = None  # [level, width] intensity window (CT); none: min-max
    empty_slice_share: float = 0.25  # empty slices kept, as a fraction of the slices with foreground
    augment: dict[str, Any] = field(default_factory=dict)  # AugmentConfig fields
    prompts: dict[str, Any] = field(default_factory=dict)  # PromptConfig fields (HRMedSegSAM models)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.volume_axis not in (-3, -2, -1, 0, 1, 2):
            raise ConfigError(f"volume_axis must be an axis of a 3-D volume (-3..2), got {self.volume_axis}")
        check_window(self.volume_window, "volume_window")
        if not self.empty_slice_share >= 0:
            raise ConfigError(f"empty_slice_share must be >= 0, got {self.empty_slice_share}")
        if not self.boundary_weight >= 0:
            raise ConfigError(f"boundary_weight must be >= 0, got {self.boundary_weight}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1) (or unset), got {self.ema_decay}")
        if not 0 <= self.foreground_windows <= 1:
            raise ConfigError(f"foreground_windows must be in [0, 1], got {self.foreground_windows}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"warmup must be in [0, 1) and min_lr_ratio in [0, 1], got {self.warmup}, {self.min_lr_ratio}"
            )
        if self.folds == 1 or self.folds < 0 or not 0 <= self.fold < max(self.folds, 1):
            raise ConfigError(
                f"cross-validation needs folds >= 2 and fold in 0..folds-1 (folds 0: off), "
                f"got fold {self.fold} of {self.folds}"
            )
        self.augmentation()  # fail early on unknown augmentation fields

    @classmethod
    def sections(cls) -> dict[str, type]:
        from .prompted import PromptConfig

        return {**super().sections(), "augment": AugmentConfig, "prompts": PromptConfig}

    def unused_fields(self) -> dict[str, str]:
        unused = {}
        if self.schedule == "cosine":
            unused["lr_gamma"] = "the schedule is cosine"
        else:
            unused.update(dict.fromkeys(("warmup", "min_lr_ratio"), f"the schedule is {self.schedule}"))
        if self.loss == "dice_focal" and self.num_classes == 1:
            unused["ce_weight"] = "binary models use focal_weight"
        elif self.loss == "dice_focal":
            unused["focal_weight"] = "multi-class models use ce_weight"
        if self.folds == 0:
            unused["fold"] = "no cross-validation (folds 0)"
        if self.input_scale != "native":
            unused["foreground_windows"] = "input_scale is resized"
        return unused

    def loss_weights(self) -> dict[str, float]:
        """The term weights a registered loss is built with (hrmedseg.losses.build_loss)."""
        return {
            "dice_weight": self.dice_weight,
            "focal_weight": self.focal_weight,
            "ce_weight": self.ce_weight,
            "boundary_weight": self.boundary_weight,
        }

    def augmentation(self) -> AugmentConfig:
        known = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = sorted(set(self.augment) - known)
        if unknown:
            raise ConfigError(f"unknown augment option(s) {unknown}; known: {sorted(known)}")
        return AugmentConfig(**checked_fields(AugmentConfig, self.augment, source="augment"))

    @property
    def size(self) -> tuple[int, int]:
        s = self.img_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))


def load_config(
    path: str | Path | None = None, config_class: type[ConfigT] = TrainConfig, **overrides: Any
) -> ConfigT:
    """A ``config_class`` from a YAML file (optional) with ``overrides`` on top; ``None`` values
    are ignored."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            reason = " ".join(str(err).split())  # YAML's messages span lines
            raise ConfigError(f"{path}: unreadable config ({reason})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of option: value")
        values.update(_checked_file_values(config_class, loaded, path))
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(checked_fields(config_class, given, source="options"))
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config option(s) {unknown}; known: {sorted(known)}")
    return config_class(**values)


def _checked_file_values(
    config_class: type[ConfigFile], values: dict[str, Any], path: Path
) -> dict[str, Any]:
    """A config file's values and those of its sections, checked against their declared types,
    so that a wrong one is named with the file."""
    values = checked_fields(config_class, values, source=str(path))
    for name, section_class in config_class.sections().items():
        if isinstance(values.get(name), dict):
            checked_fields(section_class, values[name], source=f"{path}: {name}")
    return values
