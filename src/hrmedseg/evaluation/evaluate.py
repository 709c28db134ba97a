"""Evaluate a trained model on a dataset split at each image's original resolution.

Writes ``metrics.csv`` (one row per case and class), ``summary.json`` (mean, std, median, n per
class and over all classes) and ``summary.md``, and optionally ``overlays/<case>.png``. A case whose
files cannot be used is skipped and named in ``summary.json`` (``failures``) and
``failures.txt``; the others are scored.

HRMedSegSAM models are prompted per object: with boxes and/or points derived from the ground
truth (``prompts="box"``, the default, ``"point"`` or ``"box+point"``), or with the prompts of
``<prompt_dir>/<case>.json`` (``prompts="json"``). Two scores are written: the union of the object
masks against the whole truth (the paper's protocol; ``metrics.csv`` and the summary's ``mean``),
and each object's mask against its own truth (``objects.csv``, the summary's ``per_object``, and
per-case means in ``metrics.csv``), with the leak of box prompts; see :mod:`.objects`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_write, write_text
from ..data import DatasetIndex, Sample, find_dataset, read_image, read_mask, sample_problems
from ..data.io import write_png
from ..data.splits import read_split_file
from ..errors import ConfigError, DataError
from ..inference.options import SegmenterOptions
from ..inference.overlay import overlay
from ..inference.postprocess import Postprocessing
from ..inference.prompted import (
    GT_PROMPT_KINDS,
    PromptedSegmenter,
    prompted_model_file,
    prompts_for_objects,
    read_prompt_file,
)
from ..inference.segmenter import Segmenter
from ..output import FAILURES_FILE, ensure_output_folder, raise_if_nothing_done, write_failures
from .metrics import DEFAULT_NSD_TOLERANCE, METRIC_NAMES, PHYSICAL_METRIC_NAMES, case_metrics, summarise
from .objects import (
    OBJECT_COLUMNS,
    OBJECT_METRIC_NAMES,
    OBJECTS_FILE,
    OBJECTS_FROM_COMPONENTS,
    OBJECTS_FROM_INSTANCES,
    case_object_means,
    instance_problems,
    object_labels,
    score_objects,
    truth_object_of,
)


def _load_segmenter(
    checkpoint: str | Path | list[str | Path] | Segmenter | PromptedSegmenter,
    options: SegmenterOptions | None,
    prompts: str | None,
) -> tuple[Segmenter | PromptedSegmenter, str | None]:
    """The segmenter for a model file (or the one given) and the prompt kind it will use."""
    if isinstance(checkpoint, Segmenter | PromptedSegmenter):
        if options is not None:
            raise ConfigError("a ready segmenter brings its own settings; leave options out")
        segmenter = checkpoint
    else:
        options = options or SegmenterOptions()
        paths = checkpoint if isinstance(checkpoint, list) else [checkpoint]
        prompted = prompted_model_file(paths)
        segmenter = options.segmenter(paths) if prompted is None else options.prompted_segmenter(prompted)
    if isinstance(segmenter, Segmenter):
        if prompts is not None:
            raise ConfigError("prompts are for HRMedSegSAM models; this model segments without prompts")
        return segmenter, None
    prompts = prompts or "box"
    if prompts not in (*GT_PROMPT_KINDS, "json"):
        raise ConfigError(f"prompts must be one of {(*GT_PROMPT_KINDS, 'json')}, got {prompts!r}")
    return segmenter, prompts


def _models(checkpoint: str | list[str]) -> str:
    if isinstance(checkpoint, list):
        return f"the ensemble of {' + '.join(f'`{c}`' for c in checkpoint)}"
    return f"`{checkpoint}`"


def _predictions(
    segmenter: Segmenter | PromptedSegmenter,
    samples: list[Sample],
    prompts: str | None,
    prompt_dir: Path | None,
    object_rows: list[dict[str, Any]],
) -> Iterator[np.ndarray]:
    """Each sample's predicted mask at its original size, in order; a prompted model's per-object
    scores are appended to ``object_rows`` as each image is segmented."""
    if isinstance(segmenter, Segmenter):
        for probs in segmenter.iter_probabilities([s.image for s in samples]):
            yield segmenter.probabilities_to_mask(probs)
        return
    for sample in samples:
        labels = object_labels(read_mask(sample.mask), sample)
        if prompts == "json":
            objects = read_prompt_file(prompt_dir / f"{sample.stem}.json", labels.shape)
            matches = [truth_object_of(o, labels) for o in objects]
        else:
            objects = prompts_for_objects(labels, prompts)
            matches = list(range(1, len(objects) + 1))
        union, object_masks, _ = segmenter.segment(sample.image, objects)
        scores = score_objects(object_masks, objects, labels, matches=matches)
        object_rows.extend({"case": sample.stem, "object": k, **row} for k, row in enumerate(scores, 1))
        yield union


def _objects_from(samples: list[Sample]) -> str:
    with_instances = sum(s.instances is not None for s in samples)
    if with_instances == len(samples):
        return OBJECTS_FROM_INSTANCES
    if with_instances == 0:
        return OBJECTS_FROM_COMPONENTS
    return (f"{OBJECTS_FROM_INSTANCES} for {with_instances} case(s), "
            f"{OBJECTS_FROM_COMPONENTS} for {len(samples) - with_instances}")  # fmt: skip


def usable_cases(
    data: str | Path, *, split: str, num_classes: int, split_file: str | Path | None = None
) -> tuple[DatasetIndex, list[Sample], list[str]]:
    """The dataset's index, the usable cases of ``split`` (``"all"``: every case) and the problem
    of each unusable one (each names its file); raises when no case is usable. ``split_file``
    (e.g. the ``split.json`` a training run wrote) replaces the dataset's own split."""
    index = find_dataset(data)
    if split_file is not None:
        index.split, index.split_file = read_split_file(split_file, index.samples), Path(split_file)
    if split == "all":
        stems = sorted(index.samples)
    elif index.split is None:
        raise DataError(
            f"{data} has no split file; pass split='all' (--split all) to evaluate every case, or the "
            "split a training run wrote: split_file='RUN/split.json' (--split-file RUN/split.json)"
        )
    elif split not in index.split or not index.split[split]:
        raise DataError(
            f"{index.split_file} has no '{split}' cases; available: {sorted(index.split)} or 'all'"
        )
    else:
        stems = index.split[split]
    samples, failures = [], []
    for sample in index.subset(stems):  # every usable case is scored; the others are reported
        problems = sample_problems(sample, num_classes)
        failures.extend(problems)
        if not problems:
            samples.append(sample)
    raise_if_nothing_done(len(samples), failures, f"'{split}' cases of {data}")
    return index, samples, failures


def score_cases(
    pairs: Iterable[tuple[Sample, np.ndarray]],
    total: int,
    *,
    index: DatasetIndex,
    num_classes: int,
    nsd_tolerance: float,
    output: Path,
    overlays: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Metric rows (one per case and class) of each (case, predicted mask at original size), and
    with ``overlays`` a picture per case in ``output/overlays``."""
    if overlays:
        (output / "overlays").mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    for sample, pred in tqdm(pairs, total=total, disable=not progress, desc="evaluate", unit="image"):
        truth = read_mask(sample.mask)
        spacing = index.spacing.get(sample.stem)
        for row in case_metrics(pred, truth, num_classes, spacing=spacing, nsd_tolerance=nsd_tolerance):
            rows.append({"case": sample.stem, "height": truth.shape[0], "width": truth.shape[1], **row})
        if overlays:
            picture = overlay(read_image(sample.image), pred, truth=truth)
            write_png(output / "overlays" / f"{sample.stem}.png", picture)
    return rows


def evaluate(
    checkpoint: str | Path | list[str | Path] | Segmenter | PromptedSegmenter,
    data: str | Path,
    output: str | Path,
    *,
    split: str = "test",
    split_file: str | Path | None = None,
    options: SegmenterOptions | None = None,
    prompts: str | None = None,
    prompt_dir: str | Path | None = None,
    overlays: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment the ``split`` cases of ``data`` with a model and score them at original size.

    Args:
        checkpoint: a model file, a list of them (automatic models: their ensemble, see
            :class:`Segmenter`), or a ready :class:`Segmenter` / :class:`PromptedSegmenter`
            (which brings its own settings; then ``options`` must be left out).
        data: the dataset folder (``images/``, ``masks/``, optionally ``split.json``).
        output: the folder for ``metrics.csv``, ``summary.json`` and ``summary.md``.
        split: "train", "val", "test" or "all" (every case).
        split_file: a split file to use instead of the dataset's ``split.json`` (e.g. the one a
            training run wrote).
        options: how an automatic model runs (device, batch, tiling, flips, postprocessing; see
            :class:`~hrmedseg.inference.options.SegmenterOptions`); an HRMedSegSAM model takes
            only the device.
        prompts: HRMedSegSAM models: "box" (default), "point" or "box+point" per ground-truth
            object, or "json" for the files in ``prompt_dir`` (see the module docstring).
        prompt_dir: with ``prompts="json"``: the folder of ``<case>.json`` prompt files.
        overlays: also write ``overlays/<case>.png``.
        nsd_tolerance: NSD's tolerance in pixels (and in millimetres for ``nsd_mm``; see
            :mod:`hrmedseg.evaluation.metrics`).
        progress: show a progress bar.

    Returns:
        The summary that is also written to ``summary.json``.
    """
    check_nsd_tolerance(nsd_tolerance)
    segmenter, prompts = _load_segmenter(checkpoint, options, prompts)
    if isinstance(checkpoint, list):
        checkpoint = [str(p) for p in checkpoint] if len(checkpoint) > 1 else str(checkpoint[0])
    elif not isinstance(checkpoint, str | Path):
        checkpoint = "(in-memory model)"
    index, samples, failures = usable_cases(
        data, split=split, num_classes=segmenter.num_classes, split_file=split_file
    )
    if prompts == "json":
        if prompt_dir is None:
            raise ConfigError(
                "prompts='json' needs prompt_dir (--prompt-dir), the folder of <case>.json files"
            )
        prompt_dir = Path(prompt_dir)
        missing = [s.stem for s in samples if not (prompt_dir / f"{s.stem}.json").is_file()]
        if missing:
            raise DataError(f"{prompt_dir}: no prompt file for {len(missing)} case(s): "
                            + ", ".join(f"{m}.json" for m in missing[:10]))  # fmt: skip

    if prompts is not None:  # objects are scored one by one: their instance maps must fit
        bad = {s.stem: problems for s in samples if (problems := instance_problems(s))}
        failures += [problem for problems in bad.values() for problem in problems]
        samples = [s for s in samples if s.stem not in bad]
        raise_if_nothing_done(len(samples), failures, f"'{split}' cases of {data}")

    output = ensure_output_folder(output)
    object_rows: list[dict[str, Any]] = []
    pairs = zip(samples, _predictions(segmenter, samples, prompts, prompt_dir, object_rows), strict=True)
    rows = score_cases(
        pairs, len(samples), index=index, num_classes=segmenter.num_classes, nsd_tolerance=nsd_tolerance,
        output=output, overlays=overlays, progress=progress,
    )  # fmt: skip
    for row in rows if prompts is not None else []:
        row.update(case_object_means([r for r in object_rows if r["case"] == row["case"]]))

    # What the segmenter ran with (a ready one brings its own settings).
    if isinstance(segmenter, Segmenter):
        tiling, tta, postprocessing = segmenter.tiling, segmenter.tta, segmenter.postprocessing
    else:
        tiling, tta, postprocessing = None, "none", Postprocessing()
    window = getattr(segmenter, "window", None)  # a PromptedSegmenter's native-scale windows
    scale = "none (resized to the model size)"
    if window is not None:
        scale = f"each object in a {window[0]} x {window[1]} window at the image's own resolution"
        if segmenter.max_zoom > 1:
            scale += f", small objects' windows enlarged up to {segmenter.max_zoom}x"
    settings = [f"{split}: {len(samples)} cases"]
    if prompts:
        settings.append(f"prompts: {prompts}")
    if tiling is not None:
        settings.append("tiled")
    if window is not None:
        settings.append(scale)
    if tta != "none":
        settings.append(f"test-time flips: {tta}")
    if postprocessing.active:
        settings.append(
            "postprocessed: " + ", ".join(f"{k} {v}" for k, v in postprocessing.describe().items())
        )
    description = f"`{data}` ({'; '.join(settings)})"
    about = {
        "checkpoint": checkpoint if isinstance(checkpoint, list) else str(checkpoint),
        "data": str(data), "split": split,
        "split_file": str(index.split_file) if index.split_file else "none",
        "prompts": prompts or "none (automatic)", "cases": len(samples),
        "tiling": dataclasses.asdict(tiling) if tiling else scale,
        "tta": tta, "postprocessing": postprocessing.describe(),
        "nsd_tolerance": nsd_tolerance,
    }  # fmt: skip
    if prompts is not None:
        about["objects_from"] = _objects_from(samples)
    return write_reports(
        output, rows, size_columns=["height", "width"], about=about, failures=failures,
        description=f"{_models(checkpoint)} on {description}",
        object_rows=object_rows if prompts is not None else None,
    )  # fmt: skip


def check_nsd_tolerance(tolerance: float) -> None:
    if not tolerance >= 0:  # also refuses NaN
        raise ConfigError(f"the NSD tolerance must be a distance of 0 or more, got {tolerance}")


def write_reports(
    output: Path,
    rows: list[dict[str, Any]],
    *,
    size_columns: list[str],
    about: dict[str, Any],
    failures: list[str],
    description: str,
    object_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.csv``, ``summary.json``, ``summary.md`` and ``failures.txt`` of scored
    ``rows`` (one per case and class); ``about`` opens the summary. With ``object_rows`` (prompted
    models: one per object, see :mod:`.objects`) also ``objects.csv``, the per-case object means in
    ``metrics.csv`` and the summary's ``per_object``. Returns the summary."""
    metric_keys = list(METRIC_NAMES)
    if any(PHYSICAL_METRIC_NAMES[0] in r for r in rows):
        metric_keys += PHYSICAL_METRIC_NAMES
    object_columns = [] if object_rows is None else ["objects", *(f"object_{m}" for m in OBJECT_METRIC_NAMES)]
    _write_csv(output / "metrics.csv", ["case", "class", *size_columns, *metric_keys, *object_columns], rows)
    if object_rows is not None:
        _write_csv(output / OBJECTS_FILE, list(OBJECT_COLUMNS), object_rows)

    classes = sorted({r["class"] for r in rows})
    summary = {
        **about,
        "failures": failures,
        "mean": summarise(rows, metric_keys),
        "per_class": {str(c): summarise([r for r in rows if r["class"] == c], metric_keys) for c in classes},
        "conventions": "distances in pixels (voxels) at original resolution (_mm: physical units); "
        f"nsd: share of both surfaces within {about['nsd_tolerance']} of the other (in the units of "
        "each distance); empty-mask rules in hrmedseg.evaluation.metrics",
    }
    if object_rows is not None:
        summary["mean_is"] = "the union of the object masks against the whole truth (the paper's protocol)"
        summary["per_object"] = summarise(object_rows, OBJECT_METRIC_NAMES)
        summary["per_object_is"] = (
            "each object's mask against its own truth, every object counted once; leak: share of a "
            "box-prompted mask outside its box"
        )
    write_text(output / "summary.json", json.dumps(summary, indent=2))
    write_failures(output, failures)
    lines = [
        f"Evaluation of {description}",
        *(
            ["", f"{len(failures)} case(s) could not be scored (listed in {FAILURES_FILE})"]
            if failures
            else []
        ),
        "",
        _units_line(metric_keys, about["nsd_tolerance"]),
        "",
        *([UNION_HEADING, ""] if object_rows is not None else []),
        "| class | " + " | ".join(metric_keys) + " |",
        "|---|" + "---|" * len(metric_keys),
    ]
    for c in classes:  # the median too: a few far-off misses set the mean of a distance
        stats = summary["per_class"][str(c)]
        lines.append(
            f"| {c} | "
            + " | ".join(f"{stats[k]['mean']:.4f} ± {stats[k]['std']:.4f}" for k in metric_keys)
            + " |"
        )
        lines.append(
            f"| {c} (median) | " + " | ".join(f"{stats[k]['median']:.4f}" for k in metric_keys) + " |"
        )
    if object_rows is not None:
        lines += _object_table(summary["per_object"], len(object_rows), about["objects_from"])
    write_text(output / "summary.md", "\n".join(lines) + "\n")
    return summary


def _units_line(metric_keys: list[str], nsd_tolerance: float) -> str:
    """What the numbers of summary.md are in: a distance without its unit is no measurement."""
    physical = any(k.endswith("_mm") for k in metric_keys)
    return (
        "hd95 and asd in pixels (voxels) at original resolution"
        + ("; hd95_mm and asd_mm in millimetres" if physical else "")
        + f"; nsd counts outline within {nsd_tolerance:g} pixels (voxels)"
        + (f" and nsd_mm within {nsd_tolerance:g} mm" if physical else "")
        + " of the other outline; mean ± standard deviation, then the median."
    )


UNION_HEADING = "Union of the object masks against the whole truth (the paper's protocol):"


def _object_table(stats: dict[str, dict[str, float]], count: int, objects_from: str) -> list[str]:
    names = list(stats)
    return [
        "",
        f"Per object ({count} objects, from {objects_from}): each object's mask against its own truth; "
        "leak: share of a box-prompted mask outside its box:",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| mean | " + " | ".join(f"{stats[k]['mean']:.4f} ± {stats[k]['std']:.4f}" for k in names) + " |",
        "| median | " + " | ".join(f"{stats[k]['median']:.4f}" for k in names) + " |",
    ]


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Rows as CSV; a missing or NaN value (a score that does not apply) is an empty cell."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(
                {k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                for row in rows
            )

    atomic_write(path, write)
