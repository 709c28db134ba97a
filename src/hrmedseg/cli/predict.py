"""``hrmedseg predict``: a mask per image (or volume), each at its original size."""

from __future__ import annotations

import argparse

from .options import (
    CHECKPOINT_HELP,
    add_command,
    add_segmenter_options,
    add_volume_options,
    report_failures,
    segmenter_options,
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(commands, "predict", "write a mask per image, each at its original size", run=run)
    model_source = parser.add_mutually_exclusive_group(required=True)
    model_source.add_argument("--checkpoint", nargs="+", metavar="MODEL", help=CHECKPOINT_HELP)
    model_source.add_argument(
        "--onnx", help="graph from `hrmedseg export` of an automatic model: onnxruntime, no PyTorch"
    )
    parser.add_argument(
        "--input",
        required=True,
        help="an image file or a folder of images, or NIfTI volume(s) (.nii, .nii.gz)",
    )
    parser.add_argument(
        "--output", required=True,
        help="folder for <stem>.png masks (0/255 for a binary model, class indices otherwise; "
        "volumes: <stem>_mask.nii.gz)",
    )  # fmt: skip
    parser.add_argument(
        "--probabilities", action="store_true", help="also write <stem>_prob.npy (float16, K x H x W)"
    )
    parser.add_argument("--overlays", action="store_true", help="also write <stem>_overlay.png")
    parser.add_argument(
        "--prompts",
        help="HRMedSegSAM models: folder of <stem>.json prompt files, or one file for one image "
        "(default: none; an HRMedSegSAM model needs them)",
    )
    add_segmenter_options(parser)
    add_volume_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..inference.files import predict_files

    report = predict_files(
        args.input, args.output, checkpoint=args.checkpoint, onnx=args.onnx, prompts=args.prompts,
        options=segmenter_options(args), probabilities=args.probabilities, overlays=args.overlays,
        axis=args.axis, window=args.window, progress=not args.quiet,
    )  # fmt: skip
    what = "mask volume(s)" if any(p.name.endswith(".nii.gz") for p in report.written) else "mask(s)"
    print(f"{len(report.written)} {what} written to {args.output}")
    return report_failures(report.failures, args.output)
