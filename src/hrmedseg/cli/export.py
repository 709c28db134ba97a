"""``hrmedseg export``: write a model as ONNX."""

from __future__ import annotations

import argparse

from .options import add_command
from .values import positive_int


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "export",
        "write a model as ONNX (HRMedSegSAM: <stem>_encoder.onnx and <stem>_decoder.onnx)", run=run,
        reads_images=False,
    )  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="model file (.safetensors) from train")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", metavar="N", type=positive_int, default=18, help="ONNX opset")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..deployment.export_onnx import export_onnx

    for path in export_onnx(load_model(args.checkpoint), args.output, args.opset):
        print(f"wrote {path}")
    return 0
