"""Evaluation: per-case metrics at original resolution and summaries."""

from .evaluate import evaluate
from .metrics import METRIC_NAMES, case_metrics

__all__ = ["METRIC_NAMES", "case_metrics", "evaluate"]
