"""``hrmedseg demo``: the whole workflow on generated data, in about a minute."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_command


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "demo",
        "train, evaluate and predict on a generated synthetic dataset (about a minute on 2 CPU cores)",
        run=run,
    )  # fmt: skip
    parser.add_argument("--output", default="hrmedseg_demo", help="folder for the demo's data and results")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(Path(args.output), progress=not args.quiet)
    return 0
