"""``hrmedseg models``: the registered models, with parameter counts (and FLOPs)."""

from __future__ import annotations

import argparse

from .options import add_command
from .values import positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands,
        "models",
        "list registered models with parameter counts (and FLOPs)",
        run=run,
        reads_images=False,
    )
    parser.add_argument(
        "pattern", nargs="?", default="*", help="shell-style name filter, e.g. '*sam*' (default: all)"
    )
    parser.add_argument("--flops", action="store_true", help="also count forward FLOPs (2 per multiply-add)")
    parser.add_argument("--img-size", type=positive_int, default=1024, help="square input size for --flops")


def run(args: argparse.Namespace) -> int:
    from ..build import create_model, list_models
    from ..complexity import SAM_VIT_H_PARAMS, count_flops, count_parameters

    names = list_models(args.pattern)
    width = max([len("name"), *map(len, names)])
    header = f"{'name':<{width}} {'params':>10} {'% of SAM-H':>11}"
    if args.flops:
        header += f" {'GFLOPs @ ' + str(args.img_size):>16}"
    print(header)
    for name in names:
        model = create_model(name)
        params = count_parameters(model)
        row = f"{name:<{width}} {params / 1e6:>9.3f}M {100 * params / SAM_VIT_H_PARAMS:>10.2f}%"
        if args.flops:
            row += f" {count_flops(model, (args.img_size, args.img_size)) / 1e9:>16.2f}"
        print(row)
    return 0
