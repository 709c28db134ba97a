"""Feature-distillation pretraining of LGViT from a frozen SAM image encoder (paper section 3)."""

from .cache import CacheMismatchError, EmbeddingCache
from .engine import DistillConfig, distill
from .teacher import SAM_TEACHERS, TeacherSpec, load_teacher

__all__ = [
    "SAM_TEACHERS",
    "CacheMismatchError",
    "DistillConfig",
    "EmbeddingCache",
    "TeacherSpec",
    "distill",
    "load_teacher",
]
