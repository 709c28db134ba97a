"""``hrmedseg inspect``: a dataset's fingerprint, its problems and the options it needs."""

from __future__ import annotations

import argparse
import json

from ..atomic import write_text
from ..output import ensure_output_file
from .options import add_command
from .values import positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "inspect",
        "a dataset's fingerprint (sizes, masks, objects), its problems and the options it needs", run=run,
    )  # fmt: skip
    parser.add_argument("--data", metavar="DIR", required=True, help="dataset folder")
    parser.add_argument(
        "--num-classes", metavar="K", type=positive_int, default=1,
        help="as for train: 1 = binary (any non-zero mask value), K = classes 0..K-1",
    )  # fmt: skip
    parser.add_argument("--output", help="also write the fingerprint as JSON to this file (default: none)")


def run(args: argparse.Namespace) -> int:
    from ..data.inspect import fingerprint_markdown, inspect_dataset

    if args.output:
        ensure_output_file(args.output)  # before the scan, which can take minutes
    fingerprint = inspect_dataset(args.data, args.num_classes, progress=not args.quiet)
    print(fingerprint_markdown(fingerprint), end="")
    if args.output:
        write_text(args.output, json.dumps(fingerprint.as_dict(), indent=2))
        print(f"fingerprint written to {args.output}")
    return 1 if fingerprint.problems else 0
