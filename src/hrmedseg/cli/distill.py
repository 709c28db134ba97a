"""``hrmedseg distill``: pretrain an LGViT encoder to imitate a frozen SAM image encoder."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .options import add_command
from .run_options import add_run_options, run_config, run_overrides

# DistillConfig's defaults, shown in the help (a test compares them with the class).
DEFAULTS = {
    "img_size": 1024, "epochs": 20, "batch_size": 4, "lr": 0.001, "amp": "none", "accumulate": 1,
    "val_every": 1, "seed": 0, "num_workers": 2, "device": "auto", "compile": "none",
}  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "distill",
        "pretrain an LGViT encoder to imitate a frozen SAM image encoder (feature distillation)", run=run,
    )  # fmt: skip
    parser.add_argument(
        "--data", metavar="DIR", help="folder of unlabeled images, searched recursively (required)"
    )
    parser.add_argument(
        "--teacher", choices=["vit_b", "vit_l", "vit_h"], help="SAM image encoder (default vit_h)"
    )
    parser.add_argument(
        "--teacher-checkpoint",
        metavar="FILE",
        help="official SAM checkpoint file (.pth), e.g. sam_vit_h_4b8939.pth (required)",
    )
    parser.add_argument(
        "--student",
        metavar="NAME",
        help="registered model whose encoder + neck (with the detail stem of a detail model) is trained "
        "(default hrmedseg_b)",
    )
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="folder for the teacher-embedding cache: the teacher runs once per image, not per epoch "
        "(default: no cache)",
    )
    add_run_options(parser, DEFAULTS)


def run(args: argparse.Namespace) -> int:
    from ..distillation import DistillConfig, distill

    overrides = {
        **run_overrides(args), "teacher": args.teacher, "teacher_checkpoint": args.teacher_checkpoint,
        "student": args.student, "cache": args.cache,
    }  # fmt: skip
    config = run_config(args, DistillConfig, overrides)
    for name in ("data", "output", "teacher_checkpoint"):
        if not getattr(config, name):
            flag = name.replace("_", "-")
            raise ConfigError(f"--{flag} is required (on the command line or in the config file)")
    result = distill(config, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if result:
        print(f"best validation MSE {result['best_loss']:.6f}")
        print(f"outputs in {result['output']} (distilled encoder: {result['best']}; "
              f"use it with: hrmedseg train --init-encoder {result['best']} ...)")  # fmt: skip
    return 0
