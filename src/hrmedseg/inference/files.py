"""Predict masks for a file or a folder of images, each at its original size.

This module imports no PyTorch itself: with an :class:`~hrmedseg.deployment.onnx_segmenter.OnnxSegmenter`
a folder is segmented by onnxruntime alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..atomic import write_text
from ..data.io import IMAGE_SUFFIXES, read_image, write_mask, write_npy, write_png
from ..errors import ConfigError, DataError
from ..output import ensure_output_folder, in_the_way, raise_if_nothing_done, write_failures
from .options import SegmenterOptions
from .overlay import overlay
from .segmenter_base import SegmenterBase

if TYPE_CHECKING:  # imported only for the annotation, so the ONNX path runs without PyTorch
    from .prompted import PromptedSegmenter


def list_images(path: str | Path) -> list[Path]:
    """The image file itself, or the images directly inside a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def list_unique_images(inputs: str | Path) -> list[Path]:
    """:func:`list_images`, refused by name when two images share a stem (their outputs would too)."""
    images = list_images(inputs)
    stems = [p.stem for p in images]
    duplicated = sorted({s for s in stems if stems.count(s) > 1})
    if duplicated:
        raise DataError(
            f"{inputs}: several files share the stem(s) {duplicated}; masks would overwrite each other"
        )
    return images


@dataclass
class FolderReport:
    """What a folder run produced: the files written and, per unreadable input, its problem."""

    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _readable(paths: list[Path], report: FolderReport) -> tuple[list[Path], list[np.ndarray]]:
    """The decoded images among ``paths``; each unreadable one is recorded in ``report``."""
    readable, arrays = [], []
    for path in paths:
        try:
            arrays.append(read_image(path))
        except DataError as err:
            report.failures.append(str(err))
            continue
        readable.append(path)
    return readable, arrays


def _writable(images: list[Path], output: Path, names: list[str], report: FolderReport) -> list[Path]:
    """The images whose output files (``names``, formatted with the stem) can be written in
    ``output``; each other one is recorded in ``report`` as a failure."""
    writable = []
    for path in images:
        problem = in_the_way(output / name.format(path.stem) for name in names)
        if problem:
            report.failures.append(problem)
        else:
            writable.append(path)
    return writable


def predict_to_folder(
    segmenter: SegmenterBase,
    inputs: str | Path,
    output: str | Path,
    *,
    probabilities: bool = False,
    overlays: bool = False,
    progress: bool = True,
) -> FolderReport:
    """Write ``<stem>.png`` per image: 0/255 for a binary model, class indices 0..K-1 otherwise.

    ``probabilities`` adds ``<stem>_prob.npy`` (float16, K x H x W); ``overlays`` adds
    ``<stem>_overlay.png``. Every readable image is segmented; unreadable ones are skipped and
    listed in the report and in ``failures.txt``. Images are decoded one batch at a time.
    """
    images = list_unique_images(inputs)
    output = ensure_output_folder(output, inputs=inputs)
    report = FolderReport()
    names = ["{}.png", *(["{}_prob.npy"] if probabilities else []), *(["{}_overlay.png"] if overlays else [])]
    images = _writable(images, output, names, report)
    bar = tqdm(total=len(images), disable=not progress, desc="predict", unit="image")
    step = segmenter.images_per_batch
    for start in range(0, len(images), step):
        paths, arrays = _readable(images[start : start + step], report)
        for path, array, probs in zip(paths, arrays, segmenter.iter_probabilities(arrays), strict=True):
            mask = segmenter.probabilities_to_mask(probs)
            target = output / f"{path.stem}.png"
            write_mask(target, mask * 255 if segmenter.num_classes == 1 else mask)
            report.written.append(target)
            if probabilities:
                write_npy(output / f"{path.stem}_prob.npy", probs.astype(np.float16))
            if overlays:
                write_png(output / f"{path.stem}_overlay.png", overlay(array, mask))
        bar.update(min(step, len(images) - start))
    bar.close()
    write_failures(output, report.failures)
    raise_if_nothing_done(len(report.written), report.failures, "images")
    return report


def prompt_files_for(images: list[Path], prompts: str | Path) -> list[Path]:
    """``<prompts>/<stem>.json`` per image, or the file ``prompts`` itself for a single image;
    every image must have one."""
    prompts = Path(prompts)
    if prompts.is_file():
        if len(images) != 1:
            raise DataError(f"{prompts} is one prompt file but there are {len(images)} images; "
                            "give a folder of <stem>.json files")  # fmt: skip
        return [prompts]
    if not prompts.is_dir():
        raise DataError(f"{prompts}: no such prompt file or folder")
    files = [prompts / f"{image.stem}.json" for image in images]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{prompts}: no prompt file for {len(missing)} image(s): {', '.join(missing[:10])}")
    return files


def predict_prompted_to_folder(
    segmenter: PromptedSegmenter,
    inputs: str | Path,
    output: str | Path,
    *,
    prompts: str | Path,
    overlays: bool = False,
    progress: bool = True,
) -> FolderReport:
    """Prompted prediction with HRMedSegSAM (prompt JSON format in :mod:`.prompted`).

    Writes per image ``<stem>.png`` (the union of the objects, 0/255), ``<stem>_objects.png``
    (object k labelled k + 1 in prompt order; where objects overlap, the higher predicted IoU
    wins) and ``<stem>_scores.json`` (each object's predicted IoU); ``overlays`` adds
    ``<stem>_overlay.png``. Unreadable images and prompt files are skipped and reported, as in
    :func:`predict_to_folder`.
    """
    from .prompted import read_prompt_file

    images = list_unique_images(inputs)
    output = ensure_output_folder(output, inputs=inputs)
    report = FolderReport()
    names = ["{}.png", "{}_objects.png", "{}_scores.json", *(["{}_overlay.png"] if overlays else [])]
    images = _writable(images, output, names, report)
    prompt_files = prompt_files_for(images, prompts)
    pairs = zip(images, prompt_files, strict=True)
    for path, prompt_file in tqdm(
        pairs, total=len(images), disable=not progress, desc="predict", unit="image"
    ):
        try:
            image = read_image(path)
            objects = read_prompt_file(prompt_file, image.shape[:2])
        except DataError as err:
            report.failures.append(str(err))
            continue
        mask, object_masks, scores = segmenter.segment(image, objects)
        labels = np.zeros(mask.shape, dtype=np.int64)
        for k in np.argsort(scores, kind="stable"):  # higher scores are painted last
            labels[object_masks[k]] = k + 1
        write_mask(output / f"{path.stem}.png", mask * 255)
        write_mask(output / f"{path.stem}_objects.png", labels)
        write_text(output / f"{path.stem}_scores.json", json.dumps({"predicted_iou": scores.tolist()}))
        report.written.append(output / f"{path.stem}.png")
        if overlays:
            write_png(output / f"{path.stem}_overlay.png", overlay(image, mask))
    write_failures(output, report.failures)
    raise_if_nothing_done(len(report.written), report.failures, "images")
    return report


def predict_files(
    inputs: str | Path,
    output: str | Path,
    *,
    checkpoint: str | Path | Sequence[str | Path] | None = None,
    onnx: str | Path | None = None,
    prompts: str | Path | None = None,
    options: SegmenterOptions | None = None,
    probabilities: bool = False,
    overlays: bool = False,
    axis: int = -1,
    window: tuple[float, float] | None = None,
    progress: bool = True,
) -> FolderReport:
    """Segment an image, a folder of images or NIfTI volumes with whatever model is given: what
    ``hrmedseg predict`` runs.

    Args:
        inputs: an image file or a folder of images, or a NIfTI volume (.nii, .nii.gz) or a
            folder of them.
        output: the folder for the masks (see :func:`predict_to_folder`,
            :func:`predict_prompted_to_folder` and
            :func:`~hrmedseg.inference.volumes.predict_volumes_to_folder` for what each writes).
        checkpoint: a model file from ``hrmedseg train``; several automatic ones are an ensemble.
            An HRMedSegSAM model file needs ``prompts``.
        onnx: instead of ``checkpoint``, a graph from ``hrmedseg export`` (onnxruntime only).
        prompts: HRMedSegSAM models: a folder of ``<stem>.json`` prompt files (or one file for
            one image).
        options: how an automatic model runs (device, batch, tiling, flips, postprocessing).
        probabilities: also write ``<stem>_prob.npy`` (automatic models, 2-D images).
        overlays: also write ``<stem>_overlay.png`` (2-D images).
        axis: volumes: the array axis to slice along.
        window: volumes: the intensity window (level, width); None: min-max per volume.
        progress: show a progress bar.

    Returns:
        The files written and the inputs that could not be used.
    """
    from ..data.volumes import check_window, is_volume, volumes_in

    options = options or SegmenterOptions()
    if (checkpoint is None) == (onnx is None):
        raise ConfigError("give a model: checkpoint (a model file) or onnx (an exported graph), not both")
    checkpoints = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint or [])
    if is_volume(inputs) or volumes_in(inputs):
        if onnx is not None or prompts is not None:
            raise ConfigError("NIfTI volumes are segmented by an automatic checkpoint (no onnx, no prompts)")
        from .volumes import predict_volumes_to_folder

        return predict_volumes_to_folder(
            options.segmenter(checkpoints), inputs, output, axis=axis, window=check_window(window),
            progress=progress,
        )  # fmt: skip
    if axis != -1 or window is not None:
        raise ConfigError("axis and window are for NIfTI volumes (.nii, .nii.gz)")
    if onnx is not None:
        if prompts is not None:
            raise ConfigError("prompts need an HRMedSegSAM checkpoint; an ONNX graph runs automatic models")
        segmenter = options.onnx_segmenter(onnx)
        return predict_to_folder(
            segmenter, inputs, output, probabilities=probabilities, overlays=overlays, progress=progress
        )
    from .prompted import prompted_model_file

    prompted = prompted_model_file(checkpoints)
    if prompted is None:
        if prompts is not None:
            raise ConfigError("prompts are for HRMedSegSAM models; this model segments without prompts")
        segmenter = options.segmenter(checkpoints)
        return predict_to_folder(
            segmenter, inputs, output, probabilities=probabilities, overlays=overlays, progress=progress
        )
    segmenter = options.prompted_segmenter(prompted)
    if prompts is None:
        raise ConfigError(
            "an HRMedSegSAM model needs prompts: a folder of <stem>.json files (or one file for one image)"
        )
    return predict_prompted_to_folder(
        segmenter, inputs, output, prompts=prompts, overlays=overlays, progress=progress
    )
