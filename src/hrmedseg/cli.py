"""Command line: a thin layer over the Python API. ``hrmedseg --help`` lists the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .data.io import DEFAULT_MAX_PIXELS, pixel_limit
from .errors import ConfigError, HRMedSegError, MissingDependencyError
from .output import FAILURES_FILE


def _cmd_models(args: argparse.Namespace) -> int:
    from .build import create_model, list_models
    from .complexity import SAM_VIT_H_PARAMS, count_flops, count_parameters

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


def _run_overrides(args: argparse.Namespace) -> dict:
    """The options of the run parent parser (train and distill), as config fields."""
    names = ("data", "output", "img_size", "epochs", "batch_size", "lr", "amp", "accumulate", "clip_grad",
             "val_every", "seed", "num_workers", "device", "compile")  # fmt: skip
    return {
        **{n: getattr(args, n) for n in names},
        "grad_checkpointing": True if args.grad_checkpointing else None,
    }


def _train_config(args: argparse.Namespace):
    from .training.config import TrainConfig

    overrides = {
        **_run_overrides(args), "model": args.model, "num_classes": args.num_classes,
        "init_encoder": args.init_encoder, "input_scale": args.input_scale,
        "folds": args.folds, "fold": args.fold,
    }  # fmt: skip
    config = _run_config(args, TrainConfig, overrides)
    for name in ("data", "output"):
        if not getattr(config, name):
            raise ConfigError(f"--{name} is required (on the command line or in the config file)")
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.engine import train

    config = _train_config(args)
    result = train(config, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if result:
        if "best_object_dice" in result:  # promptable models: chosen by each object's own Dice
            print(f"best validation per-object Dice {result['best_object_dice']:.4f}")
        else:
            print(f"best validation Dice {result['best_dice']:.4f}")
        print(f"outputs in {result['output']} (best model: {result['best']})")
    return 0


def _run_config(args: argparse.Namespace, config_class: type, overrides: dict):
    """The config of a run: ``--config`` with the command-line options on top, or on ``--resume``
    without ``--config`` the run's stored config with them on top (the run then checks them)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not args.resume or args.config is not None:
        from .training.config import load_config

        return load_config(args.config, config_class, **given)
    if args.output is None:
        raise ConfigError("--resume needs --output (the run folder to continue)")
    from .training.run_folder import stored_config

    return dataclasses.replace(stored_config(Path(args.output), config_class), **given)


def _cmd_distill(args: argparse.Namespace) -> int:
    from .distillation import DistillConfig, distill

    overrides = {
        **_run_overrides(args), "teacher": args.teacher, "teacher_checkpoint": args.teacher_checkpoint,
        "student": args.student, "cache": args.cache,
    }  # fmt: skip
    config = _run_config(args, DistillConfig, overrides)
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


def _tiling(args: argparse.Namespace):
    """The sliding-window settings of --tile, or None (resize each image to the model size)."""
    if not args.tile:
        if args.overlap is not None or args.blend is not None:
            raise ConfigError("--overlap and --blend set up --tile; add --tile")
        return None
    from .inference.tiling import Tiling

    given = {"overlap": args.overlap, "blend": args.blend}
    return Tiling(**{k: v for k, v in given.items() if v is not None})


def _postprocessing(args: argparse.Namespace):
    """The mask clean-up of --min-size, --keep-largest and --fill-holes."""
    from .inference.postprocess import Postprocessing

    return Postprocessing(args.min_size, args.keep_largest, args.fill_holes)


def _volume_options(args: argparse.Namespace, volumes: bool) -> tuple[int, tuple[float, float] | None]:
    """--axis and --window, which only NIfTI volumes take."""
    if not volumes and (args.axis is not None or args.window is not None):
        raise ConfigError("--axis and --window are for NIfTI volumes (.nii, .nii.gz)")
    from .data.volumes import check_window

    return (-1 if args.axis is None else args.axis), check_window(args.window)


def _is_volume_input(path: str) -> bool:
    from .data.volumes import is_volume, volumes_in

    return is_volume(path) or bool(volumes_in(path))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.volumes import is_volume_dataset
    from .evaluation.evaluate import evaluate

    if args.predictions is not None:
        return _evaluate_predictions(args)
    if args.num_classes != 1:
        raise ConfigError("--num-classes is for --predictions; a model file knows its classes")
    if is_volume_dataset(args.data):
        return _evaluate_volumes(args)
    _volume_options(args, volumes=False)
    summary = evaluate(
        args.checkpoint, args.data, args.output, args.split, args.overlays, args.device, args.batch_size,
        progress=not args.quiet, prompts=args.prompts, prompt_dir=args.prompt_dir, tiling=_tiling(args),
        compile_mode=args.compile, tta=args.tta, nsd_tolerance=args.nsd_tolerance,
        postprocessing=_postprocessing(args), split_file=args.split_file,
    )  # fmt: skip
    print(Path(args.output, "summary.md").read_text())
    scores = "per-case metrics" + (", per-object scores (objects.csv)" if "per_object" in summary else "")
    print(f"{summary['cases']} cases; {scores}, summary.json and summary.md in {args.output}")
    return _report_failures(summary["failures"], args.output)


def _evaluate_predictions(args: argparse.Namespace) -> int:
    from .data.volumes import is_volume_dataset
    from .evaluation.predictions import evaluate_predictions

    model_options = {
        "--prompts": args.prompts is not None, "--prompt-dir": args.prompt_dir is not None,
        "--tile": args.tile, "--tta": args.tta != "none", "--compile": args.compile != "none",
        "--axis": args.axis is not None, "--window": args.window is not None,
    }  # fmt: skip
    given = [flag for flag, used in model_options.items() if used]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: options of a model's prediction; --predictions scores masks as they are"
        )
    if is_volume_dataset(args.data):
        from .evaluation.volumes import evaluate_volume_predictions

        if args.overlays:
            raise ConfigError("--overlays is for 2-D images")
        summary = evaluate_volume_predictions(
            args.predictions, args.data, args.output, args.split, args.num_classes, not args.quiet,
            args.nsd_tolerance, _postprocessing(args), args.split_file,
        )  # fmt: skip
        what = "volumes"
    else:
        summary = evaluate_predictions(
            args.predictions, args.data, args.output, args.split, args.num_classes, args.overlays,
            not args.quiet, args.nsd_tolerance, _postprocessing(args), args.split_file,
        )  # fmt: skip
        what = "cases"
    print(Path(args.output, "summary.md").read_text())
    print(f"{summary['cases']} {what}; per-case metrics, summary.json and summary.md in {args.output}")
    return _report_failures(summary["failures"], args.output)


def _evaluate_volumes(args: argparse.Namespace) -> int:
    from .evaluation.volumes import evaluate_volumes
    from .inference.segmenter import Segmenter

    axis, window = _volume_options(args, volumes=True)
    if args.prompts is not None or args.overlays:
        raise ConfigError("--prompts and --overlays are for 2-D images; volumes are segmented automatically")
    segmenter = Segmenter.from_checkpoint(
        args.checkpoint, args.device, args.batch_size, _tiling(args), args.compile, args.tta,
        _postprocessing(args),
    )  # fmt: skip
    summary = evaluate_volumes(
        segmenter, args.data, args.output, args.split, axis, window, not args.quiet,
        " + ".join(args.checkpoint), args.nsd_tolerance, args.split_file,
    )  # fmt: skip
    print(Path(args.output, "summary.md").read_text())
    print(f"{summary['cases']} volumes; per-case metrics, summary.json and summary.md in {args.output}")
    return _report_failures(summary["failures"], args.output)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .inference.predict import predict_prompted_to_folder, predict_to_folder

    volumes = _is_volume_input(args.input)
    axis, window = _volume_options(args, volumes)
    if volumes:
        from .inference.segmenter import Segmenter
        from .inference.volumes import predict_volumes_to_folder

        if args.onnx is not None or args.prompts is not None:
            raise ConfigError(
                "NIfTI volumes are segmented by an automatic --checkpoint (no --onnx, no --prompts)"
            )
        segmenter = Segmenter.from_checkpoint(
            args.checkpoint, args.device, args.batch_size, _tiling(args), args.compile, args.tta,
            _postprocessing(args),
        )  # fmt: skip
        report = predict_volumes_to_folder(segmenter, args.input, args.output, axis, window, not args.quiet)
        print(f"{len(report.written)} mask volume(s) written to {args.output}")
        return _report_failures(report.failures, args.output)

    if args.onnx is not None:  # onnxruntime only: nothing on this path imports PyTorch
        from .deployment.onnx_segmenter import OnnxSegmenter

        if args.prompts is not None:
            raise ConfigError("--prompts needs a --checkpoint; --onnx runs automatic models")
        segmenter = OnnxSegmenter(
            args.onnx,
            args.batch_size,
            tta=args.tta,
            postprocessing=_postprocessing(args),
            tiling=_tiling(args),
        )
        report = predict_to_folder(
            segmenter, args.input, args.output, args.probabilities, args.overlays, progress=not args.quiet
        )
        print(f"{len(report.written)} mask(s) written to {args.output}")
        return _report_failures(report.failures, args.output)
    from .inference.prompted import PromptedSegmenter, prompted_model_file, refuse_automatic_options
    from .inference.segmenter import Segmenter

    tiling = _tiling(args)
    prompted = prompted_model_file(args.checkpoint)
    if prompted is not None:
        refuse_automatic_options(tiling, args.tta, _postprocessing(args))
        if args.prompts is None:
            raise ConfigError(
                "an HRMedSegSAM model needs prompts: --prompts FOLDER of <stem>.json files (or one file)"
            )
        segmenter = PromptedSegmenter.from_checkpoint(prompted, args.device)
        report = predict_prompted_to_folder(
            segmenter, args.input, args.prompts, args.output, args.overlays, progress=not args.quiet
        )
    else:
        if args.prompts is not None:
            raise ConfigError("--prompts is for HRMedSegSAM models; this model segments without prompts")
        segmenter = Segmenter.from_checkpoint(
            args.checkpoint,
            args.device,
            args.batch_size,
            tiling,
            args.compile,
            args.tta,
            _postprocessing(args),
        )
        report = predict_to_folder(
            segmenter, args.input, args.output, args.probabilities, args.overlays, progress=not args.quiet
        )
    print(f"{len(report.written)} mask(s) written to {args.output}")
    return _report_failures(report.failures, args.output)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data.inspect import fingerprint_markdown, inspect_dataset

    fingerprint = inspect_dataset(args.data, args.num_classes, progress=not args.quiet)
    print(fingerprint_markdown(fingerprint), end="")
    if args.output:
        Path(args.output).write_text(json.dumps(fingerprint.as_dict(), indent=2))
        print(f"fingerprint written to {args.output}")
    return 1 if fingerprint.problems else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .deployment.export_onnx import export_onnx

    for path in export_onnx(load_model(args.checkpoint), args.output, args.opset):
        print(f"wrote {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401  (the app's framework; checked here for a clear message)
        import uvicorn
    except ImportError:
        raise MissingDependencyError(
            "hrmedseg serve needs fastapi and uvicorn: pip install 'hrmedseg[serve]'"
        ) from None
    from .checkpoint import load_model
    from .serve.app import create_app

    app = create_app(
        load_model(args.checkpoint), args.device, int(args.max_upload_mb * 2**20),
        tiling=_tiling(args), tta=args.tta, postprocessing=_postprocessing(args),
    )  # fmt: skip
    print(f"hrmedseg serve: http://{args.host}:{args.port} (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _report_failures(failures: list[str], output: str) -> int:
    """Name every input that could not be used (also in failures.txt); exit status 1 if any."""
    if not failures:
        return 0
    print(f"hrmedseg: {len(failures)} input(s) could not be used (listed in {Path(output, FAILURES_FILE)}):",
          file=sys.stderr)  # fmt: skip
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    return 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), progress=not args.quiet)
    return 0


CLIP_GRAD_HELP = "clip the gradients' total norm to NORM, e.g. 1.0 (default: no clipping)"
COMPILE_HELP = (
    "torch.compile the model: default, reduce-overhead (CUDA graphs) or max-autotune; the first "
    "batch of each shape compiles (minutes on a CPU)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hrmedseg",
        description="Memory-efficient high-resolution medical image segmentation (HRMedSeg).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, help_text: str, func, reads_images: bool = True, parents: list | None = None
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=parents or [])
        sub.set_defaults(func=func)
        sub.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
        if reads_images:
            sub.add_argument(
                "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                help=f"largest image read, in pixels (default {DEFAULT_MAX_PIXELS:,}: 8000 x 8000; "
                "0: no limit); larger ones are reported, to be tiled or allowed",
            )  # fmt: skip
        return sub

    # The options every run shares, in one parent parser (their fields: training.config.RunConfig).
    run_options = argparse.ArgumentParser(add_help=False)
    run_options.add_argument("--output", help="run folder for checkpoints, logs, config and curves")
    run_options.add_argument("--config", help="YAML config (see configs/); command-line options override it")
    run_options.add_argument("--img-size", type=int, help="square input size the images are resized to")
    run_options.add_argument("--epochs", type=int)
    run_options.add_argument("--batch-size", type=int)
    run_options.add_argument("--lr", type=float)
    run_options.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], help="mixed precision (fp16: CUDA only)"
    )
    run_options.add_argument(
        "--grad-checkpointing", action="store_true", help="recompute activations: less memory"
    )
    run_options.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    run_options.add_argument("--clip-grad", type=float, metavar="NORM", help=CLIP_GRAD_HELP)
    run_options.add_argument(
        "--val-every", type=int, metavar="N", help="validate every N epochs and after the last (default 1)"
    )
    run_options.add_argument("--seed", type=int)
    run_options.add_argument("--num-workers", type=int, help="data-loading processes")
    run_options.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    run_options.add_argument("--compile", metavar="MODE", help=COMPILE_HELP)
    run_options.add_argument(
        "--resume", action="store_true", help="continue the run in --output from its last epoch"
    )
    run_options.add_argument(
        "--overwrite", action="store_true", help="start over in an --output that holds a run"
    )

    train = add(
        "train", "fine-tune a model on a folder of images and masks", _cmd_train, parents=[run_options]
    )
    train.add_argument(
        "--data", help="dataset folder: images/ + masks/ (+ split.json), or image_1024/ + mask_1024/"
    )
    train.add_argument("--model", help="registered model name (hrmedseg models), default hrmedseg_b")
    train.add_argument(
        "--num-classes", type=int, help="1 = binary (any non-zero mask value); K = classes 0..K-1"
    )
    train.add_argument("--init-encoder", help="model file whose image_encoder weights initialise the encoder")
    train.add_argument(
        "--folds", type=int, metavar="N",
        help="cross-validation: N folds over the split's train and val cases (test stays), dealt with "
        "--seed; train each fold K with --fold K into its own --output, then ensemble them",
    )  # fmt: skip
    train.add_argument("--fold", type=int, metavar="K", help="with --folds: the fold to validate on (0..N-1)")
    train.add_argument(
        "--input-scale", choices=("resized", "native"),
        help="resized (default): each image resized to --img-size; native: random --img-size windows "
        "at each image's own resolution, validated and predicted tiled (small objects in large or "
        "mixed-size images)",
    )  # fmt: skip

    distill = add(
        "distill", "pretrain an LGViT encoder to imitate a frozen SAM image encoder (feature distillation)",
        _cmd_distill, parents=[run_options],
    )  # fmt: skip
    distill.add_argument("--data", help="folder of unlabeled images (searched recursively)")
    distill.add_argument(
        "--teacher", choices=["vit_b", "vit_l", "vit_h"], help="SAM image encoder (default vit_h)"
    )
    distill.add_argument(
        "--teacher-checkpoint", help="official SAM checkpoint file (.pth), e.g. sam_vit_h_4b8939.pth"
    )
    distill.add_argument(
        "--student", help="registered model whose encoder + neck is trained, default hrmedseg_b"
    )
    distill.add_argument(
        "--cache",
        help="folder for the teacher-embedding cache: the teacher runs once per image, not per epoch",
    )

    evaluate = add(
        "evaluate", "score a model (or a folder of predicted masks) on a dataset split at original size",
        _cmd_evaluate,
    )  # fmt: skip
    scored = evaluate.add_mutually_exclusive_group(required=True)
    scored.add_argument("--checkpoint", nargs="+", metavar="MODEL", help=CHECKPOINT_HELP)
    scored.add_argument(
        "--predictions", metavar="DIR",
        help="instead of a model: a folder of masks <case>.png (any format read; from predict or "
        "another tool) at original size, scored against the data's masks",
    )  # fmt: skip
    evaluate.add_argument(
        "--num-classes", type=int, default=1,
        help="with --predictions: 1 = binary (any non-zero value), K = class indices 0..K-1 (default 1)",
    )  # fmt: skip
    evaluate.add_argument("--data", required=True, help="dataset folder")
    evaluate.add_argument("--split", default="test", help="split to score (train/val/test) or 'all'")
    evaluate.add_argument(
        "--split-file", metavar="FILE",
        help="use this split instead of the data's split.json, e.g. RUN/split.json that train wrote "
        "(its generated split, or a cross-validation fold's)",
    )  # fmt: skip
    evaluate.add_argument("--output", required=True, help="folder for metrics.csv, summary.json, summary.md")
    evaluate.add_argument("--overlays", action="store_true", help="also write overlay PNGs")
    evaluate.add_argument(
        "--nsd-tolerance", type=float, default=2.0, metavar="D",
        help="NSD counts surface within D of the other surface: pixels (voxels) for nsd, and "
        "millimetres for nsd_mm when the spacing is known (default 2)",
    )  # fmt: skip
    evaluate.add_argument(
        "--prompts", choices=["box", "point", "box+point", "json"],
        help="HRMedSegSAM models: prompts per ground-truth object (default box; objects from the "
        "folder's instances/ if it has them, else connected components), or json from --prompt-dir; "
        "scored as the union of the object masks and object by object",
    )  # fmt: skip
    evaluate.add_argument("--prompt-dir", help="folder of <case>.json prompt files (with --prompts json)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--compile", metavar="MODE", default="none", help=COMPILE_HELP)
    evaluate.add_argument("--batch-size", type=int, default=4, help="images (with --tile: windows) per pass")
    _add_tiling_options(evaluate)
    _add_tta_option(evaluate)
    _add_postprocessing_options(evaluate)
    _add_volume_options(evaluate)

    predict = add("predict", "write a mask per image, each at its original size", _cmd_predict)
    model_source = predict.add_mutually_exclusive_group(required=True)
    model_source.add_argument("--checkpoint", nargs="+", metavar="MODEL", help=CHECKPOINT_HELP)
    model_source.add_argument(
        "--onnx", help="graph from `hrmedseg export` of an automatic model: onnxruntime, no PyTorch"
    )
    predict.add_argument(
        "--input",
        required=True,
        help="an image file or a folder of images, or NIfTI volume(s) (.nii, .nii.gz)",
    )
    predict.add_argument("--output", required=True, help="folder for <stem>.png masks")
    predict.add_argument(
        "--probabilities", action="store_true", help="also write <stem>_prob.npy (K x H x W)"
    )
    predict.add_argument("--overlays", action="store_true", help="also write <stem>_overlay.png")
    predict.add_argument(
        "--prompts", help="HRMedSegSAM models: folder of <stem>.json prompt files (or one file for one image)"
    )
    predict.add_argument("--device", default="auto")
    predict.add_argument("--compile", metavar="MODE", default="none", help=COMPILE_HELP)
    predict.add_argument("--batch-size", type=int, default=4, help="images (with --tile: windows) per pass")
    _add_tiling_options(predict)
    _add_tta_option(predict)
    _add_postprocessing_options(predict)
    _add_volume_options(predict)

    export = add(
        "export", "write a model as ONNX (HRMedSegSAM: <stem>_encoder.onnx and <stem>_decoder.onnx)",
        _cmd_export, False,
    )  # fmt: skip
    export.add_argument("--checkpoint", required=True, help="model file (.safetensors) from train")
    export.add_argument("--output", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")

    serve = add(
        "serve", "an interactive page: prompt an HRMedSegSAM model (or see an HRMedSeg mask) in the browser",
        _cmd_serve,
    )  # fmt: skip
    serve.add_argument("--checkpoint", required=True, help="model file (.safetensors) from train")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--max-upload-mb", type=float, default=50, help="largest upload accepted (default 50)")
    _add_tiling_options(serve)
    _add_tta_option(serve)
    _add_postprocessing_options(serve)

    demo = add(
        "demo",
        "train, evaluate and predict on a generated synthetic dataset (about 40 s on 2 CPU cores)",
        _cmd_demo,
    )
    demo.add_argument("--output", default="hrmedseg_demo", help="folder for the demo's data and results")

    inspect = add(
        "inspect", "a dataset's fingerprint (sizes, masks, objects), its problems and the options it needs",
        _cmd_inspect,
    )  # fmt: skip
    inspect.add_argument("--data", required=True, help="dataset folder")
    inspect.add_argument(
        "--num-classes", type=int, default=1,
        help="as for train: 1 = binary (any non-zero mask value), K = classes 0..K-1 (default 1)",
    )  # fmt: skip
    inspect.add_argument("--output", help="also write the fingerprint as JSON to this file")

    models = add("models", "list registered models with parameter counts (and FLOPs)", _cmd_models, False)
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. '*sam*'")
    models.add_argument("--flops", action="store_true", help="also count forward FLOPs (2 per multiply-add)")
    models.add_argument("--img-size", type=int, default=1024, help="square input size for --flops")
    return parser


def _add_tiling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile", action="store_true",
        help="segment each image at its own resolution with overlapping windows of the model size "
        "(detail for large images) instead of resizing it to the model size (context)",
    )  # fmt: skip
    parser.add_argument(
        "--overlap", type=float, help="with --tile: fraction of a window shared (default 0.25)"
    )
    parser.add_argument(
        "--blend", choices=["gaussian", "linear", "constant"],
        help="with --tile: weights of overlapping windows (default gaussian, MONAI's convention)",
    )  # fmt: skip


CHECKPOINT_HELP = (
    "model file (.safetensors) from train; several automatic models: their ensemble (the mean of "
    "their logits; same classes, input size and normalisation)"
)


def _add_postprocessing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "postprocessing of automatic models' masks, per class, in this order (volumes: in 3-D)"
    )
    group.add_argument(
        "--min-size", type=int, default=0, metavar="PIXELS",
        help="remove objects (connected components, 8-connected) of fewer pixels (voxels)",
    )  # fmt: skip
    group.add_argument(
        "--keep-largest", action="store_true", help="keep only the largest object (one per image)"
    )
    group.add_argument("--fill-holes", action="store_true", help="fill background enclosed by an object")


def _add_tta_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta", choices=["none", "hflip", "flips"], default="none",
        help="test-time augmentation of automatic models: average the logits over a left-right flip "
        "(hflip: 2 passes) or over every flip (flips: 4 passes); default none",
    )  # fmt: skip


def _add_volume_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--axis", type=int, choices=[0, 1, 2, -1, -2, -3],
        help="NIfTI volumes: the array axis to slice along (default -1, the last)",
    )  # fmt: skip
    parser.add_argument(
        "--window", type=float, nargs=2, metavar=("LEVEL", "WIDTH"),
        help="NIfTI volumes: intensity window, e.g. 40 400 for CT soft tissue (default: min-max per volume)",
    )  # fmt: skip


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
            return args.func(args)
    except HRMedSegError as err:  # the user can fix it; anything else is a bug: keep its traceback
        print(f"hrmedseg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
