"""The ``hrmedseg`` command: a thin layer over the Python API. ``hrmedseg --help`` lists the
commands; each lives in its own module here, with ``register(commands)`` and ``run(args)``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..data.io import DEFAULT_MAX_PIXELS, pixel_limit
from ..errors import HRMedSegError
from . import demo, distill, evaluate, export, inspect_data, models, predict, serve, train
from .options import HelpFormatter

# In the order `hrmedseg --help` lists them: the everyday commands first.
COMMANDS = (train, evaluate, predict, inspect_data, serve, export, distill, demo, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrmedseg",
        description="Memory-efficient high-resolution medical image segmentation (HRMedSeg).",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def _log_to_stdout() -> None:
    """The engines report through ``logging`` (per-epoch lines, resumes); the command line shows
    those messages on stdout. Replaces the handler of an earlier call in the same process."""
    logger = logging.getLogger("hrmedseg")
    for handler in [h for h in logger.handlers if getattr(h, "hrmedseg_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.hrmedseg_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stdout()
    try:
        with pixel_limit(getattr(args, "max_pixels", DEFAULT_MAX_PIXELS) or None):
            return args.run(args)
    except HRMedSegError as err:  # the user can fix it; anything else is a bug: keep its traceback
        print(f"hrmedseg {args.command}: error: {err}", file=sys.stderr)
        return 2
