"""Evaluation: per-case metrics at original resolution and summaries."""
