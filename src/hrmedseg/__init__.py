"""hrmedseg: memory-efficient high-resolution medical image segmentation (HRMedSeg / HER-Seg).

The public names load on first use, so that ``import hrmedseg`` and the torch-free parts (the
ONNX predictor, image I/O) do not import PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        (
            "ModelConfig",
            "build_model",
            "create_model",
            "get_model_config",
            "is_promptable",
            "list_models",
            "register_architecture",
        ),
        ".build",
    ),
    **dict.fromkeys(
        (
            "CheckpointMismatchError",
            "load_encoder_weights",
            "load_model",
            "load_sam_prompt_encoder",
            "save_model",
        ),
        ".checkpoint",
    ),
    **dict.fromkeys(("count_flops", "count_parameters"), ".complexity"),
    **dict.fromkeys(
        (
            "CheckpointError",
            "ConfigError",
            "DataError",
            "HRMedSegError",
            "InputNotFoundError",
            "MissingDependencyError",
            "OutputError",
        ),
        ".errors",
    ),  # fmt: skip
    "Predictor": ".inference.sam_predictor",
    "ImagePrompter": ".inference.image_prompter",
    "SegmenterOptions": ".inference.options",
    "predict_files": ".inference.files",
    "evaluate_dataset": ".evaluation.entry",
    "PromptedSegmenter": ".inference.prompted",
    "Segmenter": ".inference.segmenter",
    **dict.fromkeys(
        (
            "AutomaticSegmentationModel",
            "HRMedSeg",
            "HRMedSegDetail",
            "HRMedSegSAM",
            "HRMedSegSAMDetail",
            "PromptableSegmentationModel",
            "SegmentationModel",
        ),
        ".modeling",
    ),
}

__all__ = [
    "AutomaticSegmentationModel",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DataError",
    "HRMedSeg",
    "HRMedSegDetail",
    "HRMedSegError",
    "HRMedSegSAM",
    "HRMedSegSAMDetail",
    "ImagePrompter",
    "InputNotFoundError",
    "MissingDependencyError",
    "ModelConfig",
    "OutputError",
    "Predictor",
    "PromptableSegmentationModel",
    "PromptedSegmenter",
    "SegmentationModel",
    "Segmenter",
    "SegmenterOptions",
    "build_model",
    "count_flops",
    "count_parameters",
    "create_model",
    "evaluate_dataset",
    "get_model_config",
    "is_promptable",
    "list_models",
    "load_encoder_weights",
    "load_model",
    "load_sam_prompt_encoder",
    "predict_files",
    "register_architecture",
    "save_model",
]  # the keys of _EXPORTS (a test checks)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hrmedseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what static analysis and IDEs see
    from .build import (
        ModelConfig,
        build_model,
        create_model,
        get_model_config,
        is_promptable,
        list_models,
        register_architecture,
    )
    from .checkpoint import (
        CheckpointMismatchError,
        load_encoder_weights,
        load_model,
        load_sam_prompt_encoder,
        save_model,
    )
    from .complexity import count_flops, count_parameters
    from .errors import (
        CheckpointError,
        ConfigError,
        DataError,
        HRMedSegError,
        InputNotFoundError,
        MissingDependencyError,
        OutputError,
    )
    from .evaluation.entry import evaluate_dataset
    from .inference.files import predict_files
    from .inference.image_prompter import ImagePrompter
    from .inference.options import SegmenterOptions
    from .inference.prompted import PromptedSegmenter
    from .inference.sam_predictor import Predictor
    from .inference.segmenter import Segmenter
    from .modeling import (
        AutomaticSegmentationModel,
        HRMedSeg,
        HRMedSegDetail,
        HRMedSegSAM,
        HRMedSegSAMDetail,
        PromptableSegmentationModel,
        SegmentationModel,
    )
