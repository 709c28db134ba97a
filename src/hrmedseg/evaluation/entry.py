"""What ``hrmedseg evaluate`` runs, for Python users too: one call that scores a model or a folder
of predicted masks on 2-D images or NIfTI volumes, choosing the evaluation the inputs need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.volumes import check_window, is_volume_dataset
from ..errors import ConfigError
from ..inference.options import SegmenterOptions
from .metrics import DEFAULT_NSD_TOLERANCE


def evaluate_dataset(
    data: str | Path,
    output: str | Path,
    *,
    checkpoint: str | Path | list[str | Path] | None = None,
    predictions: str | Path | None = None,
    split: str = "test",
    split_file: str | Path | None = None,
    options: SegmenterOptions | None = None,
    num_classes: int = 1,
    prompts: str | None = None,
    prompt_dir: str | Path | None = None,
    overlays: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
    axis: int = -1,
    window: tuple[float, float] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a model (``checkpoint``) or a folder of predicted masks (``predictions``) on the
    ``split`` cases of ``data``, at each case's original size; a dataset of NIfTI volumes is
    scored in 3-D.

    Args:
        data: the dataset folder: ``images/`` and ``masks/`` of 2-D images or of NIfTI volumes.
        output: the folder for ``metrics.csv``, ``summary.json`` and ``summary.md``.
        checkpoint: a model file from ``hrmedseg train``; several automatic ones are an ensemble.
        predictions: instead of a model, a folder of masks named by case (any tool's).
        split: "train", "val", "test" or "all".
        split_file: a split file to use instead of the dataset's ``split.json``.
        options: how an automatic model runs; with ``predictions`` only its postprocessing
            applies.
        num_classes: with ``predictions``: 1 = binary (any non-zero value), K = indices 0..K-1
            (a model file knows its own).
        prompts: HRMedSegSAM models: "box" (default), "point", "box+point" or "json".
        prompt_dir: with ``prompts="json"``: the folder of ``<case>.json`` prompt files.
        overlays: also write overlay PNGs (2-D images).
        nsd_tolerance: NSD's tolerance in pixels or voxels (millimetres for ``nsd_mm``).
        axis: volumes: the array axis to slice along for the model.
        window: volumes: the intensity window (level, width); None: min-max per volume.
        progress: show a progress bar.

    Returns:
        The summary that is also written to ``summary.json``.
    """
    if (checkpoint is None) == (predictions is None):
        raise ConfigError("give what to score: checkpoint (a model file) or predictions (a folder), not both")
    options = options or SegmenterOptions()
    volumes = is_volume_dataset(data)
    window = check_window(window)
    if not volumes and (axis != -1 or window is not None):
        raise ConfigError("axis and window are for NIfTI volumes (.nii, .nii.gz)")
    if predictions is not None:
        return _score_predictions(
            predictions, data, output, volumes=volumes, split=split, split_file=split_file,
            options=options, num_classes=num_classes, prompts=prompts, prompt_dir=prompt_dir,
            overlays=overlays, slicing=axis != -1 or window is not None, nsd_tolerance=nsd_tolerance,
            progress=progress,
        )  # fmt: skip
    if num_classes != 1:
        raise ConfigError("num_classes is for predictions; a model file knows its classes")
    if not volumes:
        from .evaluate import evaluate

        return evaluate(
            checkpoint, data, output, split=split, split_file=split_file, options=options,
            prompts=prompts, prompt_dir=prompt_dir, overlays=overlays, nsd_tolerance=nsd_tolerance,
            progress=progress,
        )  # fmt: skip
    if prompts is not None or overlays:
        raise ConfigError("prompts and overlays are for 2-D images; volumes are segmented automatically")
    from .volumes import evaluate_volumes

    checkpoints = checkpoint if isinstance(checkpoint, list) else [checkpoint]
    return evaluate_volumes(
        options.segmenter(checkpoints), data, output, split=split, split_file=split_file, axis=axis,
        window=window, nsd_tolerance=nsd_tolerance, checkpoint=" + ".join(map(str, checkpoints)),
        progress=progress,
    )  # fmt: skip


def _score_predictions(
    predictions: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    volumes: bool,
    options: SegmenterOptions,
    prompts: str | None,
    prompt_dir: str | Path | None,
    overlays: bool,
    slicing: bool,
    **scoring: Any,
) -> dict[str, Any]:
    """Masks scored as they are: the settings of a model's prediction are refused by name."""
    model_settings = {  # each named as the API and the command line call it
        "prompts (--prompts)": prompts is not None, "prompt_dir (--prompt-dir)": prompt_dir is not None,
        "tiling (--tile)": options.tiling is not None, "tta (--tta)": options.tta != "none",
        "compile_mode (--compile)": options.compile_mode != "none",
        "axis and window (--axis, --window)": slicing,
    }  # fmt: skip
    given = [name for name, used in model_settings.items() if used]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: settings of a model's prediction; predictions are scored as they are"
        )
    if not volumes:
        from .predictions import evaluate_predictions

        return evaluate_predictions(
            predictions, data, output, postprocessing=options.postprocessing, overlays=overlays, **scoring
        )
    if overlays:
        raise ConfigError("overlays are for 2-D images")
    from .volumes import evaluate_volume_predictions

    return evaluate_volume_predictions(
        predictions, data, output, postprocessing=options.postprocessing, **scoring
    )
