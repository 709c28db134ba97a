"""The options every training run shares (``hrmedseg train`` and ``hrmedseg distill``), and the
config they make with a ``--config`` file or a stored run. Imports no PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .options import COMPILE_HELP, DEVICE_HELP
from .values import non_negative_int, positive_float, positive_int


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
