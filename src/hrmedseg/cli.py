"""Command line: a thin layer over the Python API. ``hrmedseg --help`` lists the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .build import create_model, list_models
from .complexity import SAM_VIT_H_PARAMS, count_flops, count_parameters


def _cmd_models(args: argparse.Namespace) -> int:
    header = f"{'name':<16} {'params':>10} {'% of SAM-H':>11}"
    if args.flops:
        header += f" {'GFLOPs @ ' + str(args.img_size):>16}"
    print(header)
    for name in list_models(args.pattern):
        model = create_model(name)
        params = count_parameters(model)
        row = f"{name:<16} {params / 1e6:>9.3f}M {100 * params / SAM_VIT_H_PARAMS:>10.2f}%"
        if args.flops:
            row += f" {count_flops(model, (args.img_size, args.img_size)) / 1e9:>16.2f}"
        print(row)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrmedseg", description="Memory-efficient high-resolution medical image segmentation."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list registered models with parameter counts (and FLOPs)")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. '*sam*'")
    models.add_argument(
        "--flops", action="store_true", help="also count forward FLOPs (torch flop counter, 2 per MAC)"
    )
    models.add_argument("--img-size", type=int, default=1024, help="square input size for --flops")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
