"""``hrmedseg evaluate``: score a model, or a folder of predicted masks, on a dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    CHECKPOINT_HELP,
    add_command,
    add_segmenter_options,
    add_volume_options,
    report_failures,
    segmenter_options,
)
from .values import non_negative_float, positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "evaluate",
        "score a model (or a folder of predicted masks) on a dataset split at original size", run=run,
    )  # fmt: skip
    scored = parser.add_mutually_exclusive_group(required=True)
    scored.add_argument("--checkpoint", nargs="+", metavar="MODEL", help=CHECKPOINT_HELP)
    scored.add_argument(
        "--predictions", metavar="DIR",
        help="instead of a model: a folder of masks <case>.png (any format read; from predict or "
        "another tool) at original size, scored against the data's masks",
    )  # fmt: skip
    parser.add_argument(
        "--num-classes", metavar="K", type=positive_int, default=1,
        help="with --predictions: 1 = binary (any non-zero value), K = class indices 0..K-1",
    )  # fmt: skip
    parser.add_argument("--data", metavar="DIR", required=True, help="dataset folder")
    parser.add_argument(
        "--split", metavar="NAME", default="test", help="split to score (train/val/test) or 'all'"
    )
    parser.add_argument(
        "--split-file", metavar="FILE",
        help="use this split instead of the data's split.json, e.g. RUN/split.json that train wrote "
        "(its generated split, or a cross-validation fold's) (default: the data's split.json)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, help="folder for metrics.csv, summary.json, summary.md")
    parser.add_argument("--overlays", action="store_true", help="also write overlay PNGs")
    parser.add_argument(
        "--nsd-tolerance", type=non_negative_float, default=2.0, metavar="D",
        help="NSD counts surface within D of the other surface: pixels (voxels) for nsd, and "
        "millimetres for nsd_mm when the spacing is known",
    )  # fmt: skip
    prompted = parser.add_argument_group("HRMedSegSAM models")
    prompted.add_argument(
        "--prompts", choices=["box", "point", "box+point", "json"],
        help="prompts per ground-truth object (default box; objects from the folder's instances/ if "
        "it has them, else connected components), or json from --prompt-dir; scored as the union of "
        "the object masks and object by object",
    )  # fmt: skip
    prompted.add_argument(
        "--prompt-dir",
        metavar="DIR",
        help="folder of <case>.json prompt files (with --prompts json; default: none)",
    )
    add_segmenter_options(parser)
    add_volume_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..data.volumes import is_volume_dataset
    from ..evaluation.entry import evaluate_dataset

    summary = evaluate_dataset(
        args.data, args.output, checkpoint=args.checkpoint, predictions=args.predictions,
        split=args.split, split_file=args.split_file, options=segmenter_options(args),
        num_classes=args.num_classes, prompts=args.prompts, prompt_dir=args.prompt_dir,
        overlays=args.overlays, nsd_tolerance=args.nsd_tolerance, axis=args.axis, window=args.window,
        progress=not args.quiet,
    )  # fmt: skip
    print(Path(args.output, "summary.md").read_text())
    what = "volumes" if is_volume_dataset(args.data) else "cases"
    scores = "per-case metrics" + (", per-object scores (objects.csv)" if "per_object" in summary else "")
    print(f"{summary['cases']} {what}; {scores}, summary.json and summary.md in {args.output}")
    return report_failures(summary["failures"], args.output)
