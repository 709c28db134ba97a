"""Evaluate a trained model on a dataset split at each image's original resolution.

Writes ``metrics.csv`` (one row per case and class), ``summary.json`` (mean, std, n per class
and over all classes) and ``summary.md``, and optionally ``overlays/<case>.png``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data import DataError, check_samples, find_dataset, read_image, read_mask
from ..inference.overlay import overlay
from ..inference.segmenter import Segmenter
from .metrics import METRIC_NAMES, case_metrics


def _summarise(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    return {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        for k in keys
        if (v := [r[k] for r in rows])
    }


def evaluate(
    checkpoint: str | Path | Segmenter,
    data: str | Path,
    output: str | Path,
    split: str = "test",
    overlays: bool = False,
    device: str = "auto",
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment the ``split`` cases of ``data`` (``"all"``: every case) and score them.

    ``checkpoint`` is a model file, or a ready :class:`Segmenter` (then ``device`` and
    ``batch_size`` are its own). Returns the summary that is also written to ``summary.json``.
    """
    if isinstance(checkpoint, Segmenter):
        segmenter, checkpoint = checkpoint, "(in-memory model)"
    else:
        segmenter = Segmenter.from_checkpoint(checkpoint, device, batch_size)
    index = find_dataset(data)
    if split == "all":
        stems = sorted(index.samples)
    elif index.split is None:
        raise DataError(f"{data} has no split file; pass split='all' (--split all) to evaluate every case")
    elif split not in index.split or not index.split[split]:
        raise DataError(
            f"{index.split_file} has no '{split}' cases; available: {sorted(index.split)} or 'all'"
        )
    else:
        stems = index.split[split]
    samples = index.subset(stems)
    check_samples(samples, segmenter.num_classes)

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if overlays:
        (output / "overlays").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    probabilities = segmenter.iter_probabilities([s.image for s in samples])
    pairs = zip(samples, probabilities, strict=True)
    for sample, probs in tqdm(pairs, total=len(samples), disable=not progress, desc="evaluate", unit="image"):
        pred = segmenter.probabilities_to_mask(probs)
        truth = read_mask(sample.mask)
        spacing = index.spacing.get(sample.stem)
        for row in case_metrics(pred, truth, segmenter.num_classes, spacing):
            rows.append({"case": sample.stem, "height": truth.shape[0], "width": truth.shape[1], **row})
        if overlays:
            picture = overlay(read_image(sample.image), pred, truth)
            Image.fromarray(picture).save(output / "overlays" / f"{sample.stem}.png")

    has_mm = any("hd95_mm" in r for r in rows)
    columns = ["case", "class", "height", "width", *METRIC_NAMES] + (["hd95_mm", "asd_mm"] if has_mm else [])
    with (output / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)

    metric_keys = list(METRIC_NAMES) + (["hd95_mm", "asd_mm"] if has_mm else [])
    classes = sorted({r["class"] for r in rows})
    summary = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "cases": len(samples),
        "mean": _summarise(rows, metric_keys),
        "per_class": {str(c): _summarise([r for r in rows if r["class"] == c], metric_keys) for c in classes},
        "conventions": "distances in pixels at original resolution (_mm: physical units); empty-mask "
        "rules in hrmedseg.evaluation.metrics",
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"Evaluation of `{checkpoint}` on `{data}` ({split}: {len(samples)} cases)",
        "",
        "| class | " + " | ".join(metric_keys) + " |",
        "|---|" + "---|" * len(metric_keys),
    ]
    for c in classes:
        stats = summary["per_class"][str(c)]
        lines.append(
            f"| {c} | "
            + " | ".join(f"{stats[k]['mean']:.4f} ± {stats[k]['std']:.4f}" for k in metric_keys)
            + " |"
        )
    (output / "summary.md").write_text("\n".join(lines) + "\n")
    return summary
