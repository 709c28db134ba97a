"""``hrmedseg serve``: the interactive page."""

from __future__ import annotations

import argparse

from ..errors import ConfigError, MissingDependencyError
from .options import add_command, add_segmenter_options, segmenter_options
from .values import port, positive_float

# 5000 x 5000: an upload decodes and is embedded in memory (about 40 bytes a pixel), and a small
# compressed file can hold a huge image.
UPLOAD_MAX_PIXELS = 25_000_000


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "serve",
        "an interactive page: prompt an HRMedSegSAM model (or see an HRMedSeg mask) in the browser", run=run,
        max_pixels=UPLOAD_MAX_PIXELS,
    )  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="model file (.safetensors) from train")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=port, default=7860, help="port to listen on")
    parser.add_argument(
        "--max-upload-mb",
        metavar="MB",
        type=positive_float,
        default=50,
        help="largest upload accepted, in MB",
    )
    parser.add_argument(
        "--input", metavar="DIR",
        help="a folder of images to annotate with an HRMedSegSAM model (default: none, uploads only)",
    )  # fmt: skip
    parser.add_argument(
        "--output", metavar="DIR",
        help="where --input's objects go: <stem>.png, <stem>_objects.png, <stem>.json (default: none)",
    )  # fmt: skip
    add_segmenter_options(parser, batch=False)


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401  (the app's framework; checked here for a clear message)
        import uvicorn
    except ImportError:
        raise MissingDependencyError(
            "hrmedseg serve needs fastapi and uvicorn: pip install 'hrmedseg[serve]'"
        ) from None
    from ..checkpoint import load_model
    from ..serve.annotations import AnnotationFolder
    from ..serve.app import create_app

    if (args.input is None) != (args.output is None):
        raise ConfigError("--input and --output go together: the folder to annotate and where its objects go")
    options = segmenter_options(args)
    annotations = None if args.input is None else AnnotationFolder(args.input, args.output)
    app = create_app(
        load_model(args.checkpoint), options.device, max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_upload_pixels=args.max_pixels or None, tiling=options.tiling, tta=options.tta,
        postprocessing=options.postprocessing, annotations=annotations, max_zoom=options.max_zoom,
    )  # fmt: skip
    if annotations is not None:
        print(f"annotating {len(annotations.images)} images of {args.input}; objects go to {args.output}")
    print(f"hrmedseg serve: http://{args.host}:{args.port} (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
