"""The description of a model: everything needed to rebuild it and to feed it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError
from ..schema import checked_fields

ARCHITECTURES = ("hrmedseg", "hrmedseg_sam", "hrmedseg_detail", "hrmedseg_sam_detail")
# The promptable ones: class-agnostic, one mask per prompt, prompts in the resized image's pixels.
PROMPTABLE_ARCHITECTURES = ("hrmedseg_sam", "hrmedseg_sam_detail")
# The ones with the detail path (modeling/detail.py).
DETAIL_ARCHITECTURES = ("hrmedseg_detail", "hrmedseg_sam_detail")
INPUT_SCALES = ("resized", "native")
# The detail path's components (modeling/detail.py); DETAIL_ARCHITECTURES use a non-empty set.
DETAIL_COMPONENTS = ("early_convs", "skips", "full_res_head", "feature_norm")
# Blocks of the detail path's layers at 1/2 resolution (modeling/detail.py).
HALF_RES_BLOCKS = ("ln_gelu", "relu")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and feed it.

    ``img_size`` is the (H, W) of the network's input, and ``pixel_mean``/``pixel_std``
    normalise RGB values in [0, 1]. ``input_scale`` says how an image becomes that input, which
    is how the model was trained: ``"resized"`` (the whole image resized to ``img_size``) or
    ``"native"`` (windows of ``img_size`` at the image's own resolution, so prediction tiles; an
    HRMedSegSAM model then decodes each prompted object in such a window around it).
    ``patch_size`` is the encoder's stride: the image embedding is an (H / patch_size,
    W / patch_size) grid, and the network accepts any input whose sides are multiples of it.
    ``arch`` names the registered architecture that :func:`hrmedseg.build_model` builds (see
    :func:`hrmedseg.register_architecture`); the fields from ``embed_dim`` to
    ``num_multimask_outputs`` are the hyper-parameters of the built-in ones.
    ``detail`` to ``deep_supervision`` describe the detail path of the ``DETAIL_ARCHITECTURES``
    (:mod:`hrmedseg.modeling.detail`): its components (``DETAIL_COMPONENTS``; of the registered
    models only ``hrmedseg_detail_deepstem_*`` use ``feature_norm``), the stem's widths at 1/2 and
    1/4 resolution, the width of the full-resolution head, the block of the layers at 1/2
    resolution (``HALF_RES_BLOCKS``: ``"ln_gelu"``, or ``"relu"`` without a norm), the number of
    residual blocks in the stem at 1/4 resolution, and the weight of the loss on the
    1/4-resolution logits during training (0: none; ``hrmedseg_detail`` only).
    """

    name: str
    arch: str = "hrmedseg"
    num_classes: int = 1
    img_size: tuple[int, int] | int = (1024, 1024)  # an int is a square; kept as (H, W)
    in_chans: int = 3
    patch_size: int = 16
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
    mask_in_chans: int = 16  # hidden channels of the prompt encoder's mask downscaling (SAM's)
    # HRMedSegSAM: a box also enters as a dense map of its region (modeling/prompt_encoder.py).
    box_region_prompt: bool = False
    pixel_mean: tuple[float, ...] = IMAGENET_MEAN
    pixel_std: tuple[float, ...] = IMAGENET_STD
    input_scale: str = "resized"
    detail: tuple[str, ...] = ()
    detail_chans: tuple[int, ...] = (16, 32)
    detail_head_dim: int = 16
    detail_half_res_block: str = "ln_gelu"
    detail_stem_blocks: int = 0
    deep_supervision: float = 0.0

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ConfigError(f"patch_size must be >= 1, got {self.patch_size}")
        size = self.img_size
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if len(size) != 2 or any(s <= 0 or s % self.patch_size for s in size):
            raise ConfigError(
                f"img_size must be positive multiples of {self.patch_size} (the patch size), "
                f"got {self.img_size}"
            )
        object.__setattr__(self, "img_size", size)
        for name in (
            "depths",
            "num_heads",
            "pool_sizes",
            "pixel_mean",
            "pixel_std",
            "detail",
            "detail_chans",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        # Normalisation divides by pixel_std: 0, NaN or infinity would turn every input into NaN.
        for name in ("pixel_mean", "pixel_std"):
            values = getattr(self, name)
            if len(values) != self.in_chans or not all(math.isfinite(v) for v in values):
                raise ConfigError(
                    f"{name} must be {self.in_chans} finite numbers (one per channel), got {values}"
                )
        if not all(v > 0 for v in self.pixel_std):
            raise ConfigError(f"pixel_std must be above 0 for every channel, got {self.pixel_std}")
        if self.input_scale not in INPUT_SCALES:
            raise ConfigError(f"input_scale must be one of {INPUT_SCALES}, got {self.input_scale!r}")
        if self.box_region_prompt and self.arch not in PROMPTABLE_ARCHITECTURES:
            raise ConfigError("box_region_prompt is for HRMedSegSAM models, which take box prompts")
        if self.arch in PROMPTABLE_ARCHITECTURES and self.num_classes != 1:
            raise ConfigError(
                "HRMedSegSAM is class-agnostic (one mask per prompt); "
                "use num_classes=1 and one prompt per object"
            )

        self._check_detail()

    def _check_detail(self) -> None:
        unknown = sorted(set(self.detail) - set(DETAIL_COMPONENTS))
        if unknown:
            raise ConfigError(f"unknown detail components {unknown}; known: {list(DETAIL_COMPONENTS)}")
        if (self.arch in DETAIL_ARCHITECTURES) != bool(self.detail):
            raise ConfigError(
                f"{' and '.join(DETAIL_ARCHITECTURES)} models need at least one detail component and "
                "other models none; "
                f"got arch {self.arch!r} with detail {list(self.detail)}"
            )
        if len(self.detail_chans) != 2 or min(self.detail_chans) < 1 or self.detail_head_dim < 1:
            raise ConfigError(
                f"detail_chans must be two positive widths (1/2 and 1/4) and detail_head_dim positive, "
                f"got {self.detail_chans} and {self.detail_head_dim}"
            )
        if self.detail_half_res_block not in HALF_RES_BLOCKS:
            raise ConfigError(
                f"detail_half_res_block must be one of {list(HALF_RES_BLOCKS)}, "
                f"got {self.detail_half_res_block!r}"
            )
        if self.detail_stem_blocks < 0:
            raise ConfigError(f"detail_stem_blocks must be >= 0, got {self.detail_stem_blocks}")
        if "early_convs" in self.detail and self.patch_size % 4:
            raise ConfigError(
                f"early_convs needs a patch size that is a multiple of 4, got {self.patch_size}"
            )
        if not self.deep_supervision >= 0.0 or (self.deep_supervision and self.arch != "hrmedseg_detail"):
            raise ConfigError(
                "deep_supervision must be >= 0 and only set for hrmedseg_detail models, "
                f"got {self.deep_supervision}"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        """The image embedding's (h, w) for an ``img_size`` input."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def encoder_parts(self) -> tuple[str, ...]:
        """The submodules that turn images into the image embedding, in the order they run:
        what distillation trains, an encoder file holds and ``--init-encoder`` loads. With
        ``early_convs`` the encoder reads the detail stem's 1/4 map, so the stem is one of them."""
        return ("detail_stem", "image_encoder") if "early_convs" in self.detail else ("image_encoder",)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model config fields {unknown}; known fields: {sorted(known)}")
        return cls(**checked_fields(cls, values))
