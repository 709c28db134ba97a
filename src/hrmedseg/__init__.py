"""hrmedseg: memory-efficient high-resolution medical image segmentation (HRMedSeg / HER-Seg)."""

from .build import ModelConfig, build_model, create_model, get_model_config, list_models
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
from .inference.predictor import Predictor
from .inference.prompted import PromptedSegmenter
from .inference.segmenter import Segmenter
from .modeling import AutomaticSegmentationModel, HRMedSeg, HRMedSegSAM, SegmentationModel

__version__ = "0.1.0"

__all__ = [
    "AutomaticSegmentationModel",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DataError",
    "HRMedSeg",
    "HRMedSegError",
    "HRMedSegSAM",
    "InputNotFoundError",
    "MissingDependencyError",
    "ModelConfig",
    "OutputError",
    "Predictor",
    "PromptedSegmenter",
    "SegmentationModel",
    "Segmenter",
    "build_model",
    "count_flops",
    "count_parameters",
    "create_model",
    "get_model_config",
    "list_models",
    "load_encoder_weights",
    "load_model",
    "load_sam_prompt_encoder",
    "save_model",
]
