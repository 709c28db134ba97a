"""Evaluation: per-case metrics at original resolution and summaries, of a model or of a folder
of predicted masks."""

from .evaluate import evaluate
from .metrics import METRIC_NAMES, case_metrics
from .predictions import evaluate_predictions

__all__ = ["METRIC_NAMES", "case_metrics", "evaluate", "evaluate_predictions"]
