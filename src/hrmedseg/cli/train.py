"""``hrmedseg train``: fine-tune a model on a folder of images and masks."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .options import add_command
from .run_options import add_run_options, run_config, run_overrides
from .values import non_negative_int, positive_int

# TrainConfig's defaults, shown in the help (the parser imports no PyTorch; a test compares them).
DEFAULTS = {
    "img_size": 1024, "epochs": 200, "batch_size": 16, "lr": 0.002, "amp": "none", "accumulate": 1,
    "val_every": 1, "seed": 0, "num_workers": 2, "device": "auto", "compile": "none",
}  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(commands, "train", "fine-tune a model on a folder of images and masks", run=run)
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="dataset folder: images/ + masks/ (+ split.json), or image_1024/ + mask_1024/ (required)",
    )
    parser.add_argument(
        "--model", metavar="NAME", help="registered model name (`hrmedseg models`) (default hrmedseg_b)"
    )
    parser.add_argument(
        "--num-classes",
        metavar="K",
        type=positive_int,
        help="1 = binary (any non-zero mask value); K = classes 0..K-1 (default 1)",
    )
    parser.add_argument(
        "--init-encoder",
        metavar="MODEL",
        help="model file whose encoder weights (with the detail stem of a detail model) initialise the "
        "model's (default: none)",
    )
    parser.add_argument(
        "--input-scale", choices=("resized", "native"),
        help="resized (default): each image resized to --img-size; native: random --img-size windows "
        "at each image's own resolution, validated and predicted tiled (small objects in large or "
        "mixed-size images)",
    )  # fmt: skip
    parser.add_argument(
        "--ema-decay", type=float, metavar="D",
        help="validate and save an exponential moving average of the weights, with decay D per "
        "optimiser step, e.g. 0.99: it spans about 1/(1-D) steps (default: the weights themselves)",
    )  # fmt: skip
    folds = parser.add_argument_group("cross-validation")
    folds.add_argument(
        "--folds", type=non_negative_int, metavar="N",
        help="N folds over the split's train and val cases (test stays), dealt with --seed; train "
        "each fold K with --fold K into its own --output, then ensemble them (default 0: no folds)",
    )  # fmt: skip
    folds.add_argument(
        "--fold",
        type=non_negative_int,
        metavar="K",
        help="with --folds: the fold to validate on, 0..N-1 (required with --folds)",
    )
    add_run_options(parser, DEFAULTS)


def run(args: argparse.Namespace) -> int:
    from ..training.config import TrainConfig
    from ..training.engine import train

    overrides = {
        **run_overrides(args), "model": args.model, "num_classes": args.num_classes,
        "init_encoder": args.init_encoder, "input_scale": args.input_scale,
        "folds": args.folds, "fold": args.fold, "ema_decay": args.ema_decay,
    }  # fmt: skip
    config = run_config(args, TrainConfig, overrides)
    for name in ("data", "output"):
        if not getattr(config, name):
            raise ConfigError(f"--{name} is required (on the command line or in the config file)")
    result = train(config, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if result:
        if "best_object_dice" in result:  # promptable models: chosen by each object's own Dice
            print(f"best validation per-object Dice {result['best_object_dice']:.4f}")
        else:
            print(f"best validation Dice {result['best_dice']:.4f}")
        print(f"outputs in {result['output']} (best model: {result['best']})")
    return 0
