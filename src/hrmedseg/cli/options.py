"""Option groups that several commands share, and their conversion into the API's settings.

Nothing here imports PyTorch: ``hrmedseg predict --onnx`` runs without it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..data.io import DEFAULT_MAX_PIXELS
from ..errors import ConfigError
from ..inference.options import SegmenterOptions
from ..output import FAILURES_FILE
from .values import non_negative_int, positive_int

CHECKPOINT_HELP = (
    "model file (.safetensors) from train; several automatic models: their ensemble (the mean of "
    "their logits; same classes, input size and normalisation)"
)
COMPILE_HELP = (
    "torch.compile the model: default, reduce-overhead (CUDA graphs) or max-autotune; the first "
    "batch of each shape compiles (minutes on a CPU)"
)
DEVICE_HELP = "auto (CUDA when there is one), cpu, cuda or cuda:N"


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already (or has none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # identity, not equality: a default of 0 is shown, False (a flag that is off) is not
        shown = action.default is not None and action.default is not False and not action.required
        shown = shown and action.default is not argparse.SUPPRESS
        if shown and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    *,
    run,
    reads_images: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> argparse.ArgumentParser:
    """The parser of one command, whose ``run(args)`` returns the exit status; with --quiet, and
    --max-pixels (default ``max_pixels``) for the commands that read images."""
    parser = commands.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
    parser.set_defaults(run=run)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    if reads_images:
        parser.add_argument(
            "--max-pixels", type=non_negative_int, default=max_pixels, metavar="N",
            help=f"largest image read, in pixels (default {max_pixels:,}: {math.isqrt(max_pixels)} x "
            f"{math.isqrt(max_pixels)}; 0: no limit); larger ones are reported, to be tiled or allowed",
        )  # fmt: skip
    return parser


def add_segmenter_options(parser: argparse.ArgumentParser, *, batch: bool = True) -> None:
    """How an automatic model runs: device, compile, batch, tiling, flips and postprocessing."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    if batch:
        parser.add_argument("--compile", metavar="MODE", default="none", help=COMPILE_HELP)
        parser.add_argument(
            "--batch-size",
            metavar="N",
            type=positive_int,
            default=4,
            help="images (with --tile: windows) per pass",
        )
    tiling = parser.add_argument_group("large images")
    tiling.add_argument(
        "--tile", action="store_true",
        help="segment each image at its own resolution with overlapping windows of the model size "
        "(detail for large images) instead of resizing it to the model size (context); HRMedSegSAM "
        "models decode each prompted object in one such window around it",
    )  # fmt: skip
    tiling.add_argument(
        "--overlap",
        metavar="FRACTION",
        type=float,
        help="with --tile: fraction of a window shared (default 0.25)",
    )
    tiling.add_argument(
        "--blend", choices=["gaussian", "linear", "constant"],
        help="with --tile: weights of overlapping windows (default gaussian, MONAI's convention)",
    )  # fmt: skip
    tiling.add_argument(
        "--zoom", type=positive_int, metavar="N",
        help="HRMedSegSAM models decoding in windows: decode a small object's box in a window up "
        "to N times smaller, enlarged to the model size, so it covers more of the model's output "
        "(a power of two; default 4, or 2 for models with the detail path; 1: off)",
    )  # fmt: skip
    parser.add_argument(
        "--tta", choices=["none", "hflip", "flips"], default="none",
        help="test-time augmentation of automatic models: average the logits over a left-right flip "
        "(hflip: 2 passes) or over every flip (flips: 4 passes)",
    )  # fmt: skip
    group = parser.add_argument_group(
        "postprocessing of automatic models' masks, per class, in this order (volumes: in 3-D)"
    )
    group.add_argument(
        "--min-size", type=non_negative_int, default=0, metavar="PIXELS",
        help="remove objects (connected components, 8-connected) of fewer pixels (voxels)",
    )  # fmt: skip
    group.add_argument(
        "--keep-largest", action="store_true", help="keep only the largest object (one per image)"
    )
    group.add_argument("--fill-holes", action="store_true", help="fill background enclosed by an object")


def segmenter_options(args: argparse.Namespace) -> SegmenterOptions:
    """The :class:`SegmenterOptions` of the options of :func:`add_segmenter_options`."""
    from ..inference.postprocess import Postprocessing

    return SegmenterOptions(
        device=args.device,
        batch_size=getattr(args, "batch_size", 1),
        tiling=_tiling(args),
        compile_mode=getattr(args, "compile", "none"),
        tta=args.tta,
        postprocessing=Postprocessing(args.min_size, args.keep_largest, args.fill_holes),
        max_zoom=args.zoom,
    )


def _tiling(args: argparse.Namespace):
    """The sliding-window settings of --tile, or None (resize each image to the model size)."""
    if not args.tile:
        if args.overlap is not None or args.blend is not None:
            raise ConfigError("--overlap and --blend set up --tile; add --tile")
        return None
    from ..inference.tiling import Tiling

    given = {"overlap": args.overlap, "blend": args.blend}
    return Tiling(**{k: v for k, v in given.items() if v is not None})


def add_volume_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("NIfTI volumes (.nii, .nii.gz)")
    group.add_argument(
        "--axis", type=int, choices=[0, 1, 2, -1, -2, -3], default=-1,
        help="the array axis to slice along (-1: the last)",
    )  # fmt: skip
    group.add_argument(
        "--window", type=float, nargs=2, metavar=("LEVEL", "WIDTH"),
        help="intensity window, e.g. 40 400 for CT soft tissue (default: min-max per volume)",
    )  # fmt: skip


def report_failures(failures: list[str], output: str) -> int:
    """Name every input that could not be used (also in failures.txt); exit status 1 if any."""
    if not failures:
        return 0
    print(f"hrmedseg: {len(failures)} input(s) could not be used (listed in {Path(output, FAILURES_FILE)}):",
          file=sys.stderr)  # fmt: skip
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    return 1
