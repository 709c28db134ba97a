"""Option groups that several commands share, and their conversion into the API's settings.

Nothing here imports PyTorch: ``hrmedseg predict --onnx`` runs without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.io import DEFAULT_MAX_PIXELS
from ..errors import ConfigError
from ..inference.options import SegmenterOptions
from ..output import FAILURES_FILE
from .values import non_negative_int, positive_float, positive_int

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
    commands: argparse._SubParsersAction, name: str, help_text: str, *, run, reads_images: bool = True
) -> argparse.ArgumentParser:
    """The parser of one command, whose ``run(args)`` returns the exit status; with --quiet, and
    --max-pixels for the commands that read images."""
    parser = commands.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
    parser.set_defaults(run=run)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    if reads_images:
        parser.add_argument(
            "--max-pixels", type=non_negative_int, default=DEFAULT_MAX_PIXELS, metavar="N",
            help=f"largest image read, in pixels (default {DEFAULT_MAX_PIXELS:,}: 8000 x 8000; "
            "0: no limit); larger ones are reported, to be tiled or allowed",
        )  # fmt: skip
    return parser


def add_run_options(parser: argparse.ArgumentParser, defaults: dict[str, object]) -> None:
    """The options every training run shares (``training.config.RunConfig``). They default to
    None here so that a ``--config`` file's values stand; ``defaults`` are the config class's
    own, shown in the help (a test checks them against the class)."""
    group = parser.add_argument_group("run (each overrides the --config file)")

    def default(name: str) -> str:
        return f"(default {defaults[name]})"

    group.add_argument("--output", help="run folder for checkpoints, logs, config and curves (required)")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (see configs/); command-line options override it (default: none)",
    )
    group.add_argument(
        "--img-size", type=positive_int, metavar="PIXELS",
        help=f"square input size: images are resized to it, or cut into windows of it {default('img_size')}",
    )  # fmt: skip
    group.add_argument(
        "--epochs",
        metavar="N",
        type=positive_int,
        help=f"passes over the training images {default('epochs')}",
    )
    group.add_argument(
        "--batch-size", metavar="N", type=positive_int, help=f"images per step {default('batch_size')}"
    )
    group.add_argument("--lr", type=positive_float, help=f"peak learning rate {default('lr')}")
    group.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], help=f"mixed precision (fp16: CUDA only) {default('amp')}"
    )
    group.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory",
    )
    group.add_argument(
        "--accumulate", type=positive_int, metavar="N",
        help=f"gradient accumulation: one optimiser step per N batches {default('accumulate')}",
    )  # fmt: skip
    group.add_argument(
        "--clip-grad", type=positive_float, metavar="NORM",
        help="clip the gradients' total norm to NORM, e.g. 1.0 (default: no clipping)",
    )  # fmt: skip
    group.add_argument(
        "--val-every", type=positive_int, metavar="N",
        help=f"validate every N epochs and after the last {default('val_every')}",
    )  # fmt: skip
    group.add_argument(
        "--seed",
        metavar="N",
        type=non_negative_int,
        help=f"random seed of weights, split and batches {default('seed')}",
    )
    group.add_argument(
        "--num-workers",
        metavar="N",
        type=non_negative_int,
        help=f"data-loading processes {default('num_workers')}",
    )
    group.add_argument("--device", help=f"{DEVICE_HELP} {default('device')}")
    group.add_argument("--compile", metavar="MODE", help=f"{COMPILE_HELP} {default('compile')}")
    group.add_argument(
        "--resume", action="store_true", help="continue the run in --output from its last epoch"
    )
    group.add_argument("--overwrite", action="store_true", help="start over in an --output that holds a run")


def run_overrides(args: argparse.Namespace) -> dict:
    """The run options as config fields (None: not given)."""
    names = ("data", "output", "img_size", "epochs", "batch_size", "lr", "amp", "accumulate", "clip_grad",
             "val_every", "seed", "num_workers", "device", "compile")  # fmt: skip
    return {
        **{n: getattr(args, n) for n in names},
        "grad_checkpointing": True if args.grad_checkpointing else None,
    }


def run_config(args: argparse.Namespace, config_class: type, overrides: dict):
    """The config of a run: ``--config`` with the command-line options on top, or on ``--resume``
    without ``--config`` the run's stored config with them on top (the run then checks them)."""
    import dataclasses

    given = {k: v for k, v in overrides.items() if v is not None}
    if not args.resume or args.config is not None:
        from ..training.config import load_config

        return load_config(args.config, config_class, **given)
    if args.output is None:
        raise ConfigError("--resume needs --output (the run folder to continue)")
    from ..training.run_folder import stored_config

    return dataclasses.replace(stored_config(Path(args.output), config_class), **given)


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
        "(detail for large images) instead of resizing it to the model size (context)",
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
