"""Training: the run's config, the recipes, the shared epoch loop and the train command's engine."""

from .config import TrainConfig, load_config
from .engine import train
from .guards import TrainingDivergedError

__all__ = ["TrainConfig", "TrainingDivergedError", "load_config", "train"]
