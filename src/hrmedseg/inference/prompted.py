"""Prompted segmentation of whole images with HRMedSegSAM: one mask per prompted object, and the
union of the object masks as the image's mask (the paper's protocol for box-prompted evaluation).

Prompts come from the ground truth (for benchmarking: one box and/or one interior point per
connected component) or from a JSON file per image, in the original image's pixels::

    {"objects": [
        {"box": [x0, y0, x1, y1]},
        {"points": [[x, y], [x, y]], "labels": [1, 0]},
        {"box": [x0, y0, x1, y1], "points": [[x, y]], "labels": [1]}
    ]}

Each object is one prompt set. Labels are 1 (foreground) or 0 (background); boxes are XYXY with
inclusive pixel indices; (x, y) is (column, row). An object given by points alone is ambiguous,
so it is decoded with the three multimask outputs and the one with the highest predicted IoU is
kept (SAM's convention); an object with a box uses the single-mask output, as in training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..build import is_promptable
from ..checkpoint import read_model_config
from ..data.io import as_float_rgb, read_image
from ..data.prompts import label_objects, prompts_from_labels
from ..errors import ConfigError, DataError
from ..modeling import ModelConfig
from ..modeling.config import DETAIL_ARCHITECTURES
from .postprocess import Postprocessing
from .sam_predictor import Predictor
from .tiling import Tiling

GT_PROMPT_KINDS = ("box", "point", "box+point")
# The default largest zoom of windowed decoding, measured on dsb2018's nuclei in 256² windows: a
# model with 1/4-resolution logits drew small boxes best at 4x (8 added nothing); one with the
# detail path's full-resolution logits at 2x (4 cost it 0.9 union and 0.8 per-object points).
DEFAULT_MAX_ZOOM = 4
DETAIL_DEFAULT_MAX_ZOOM = 2


@dataclass
class ObjectPrompt:
    """The prompt set of one object, in original-image pixels."""

    box: np.ndarray | None = None  # (4,) XYXY
    points: np.ndarray | None = None  # (N, 2) (x, y)
    labels: np.ndarray | None = None  # (N,) 1 = foreground, 0 = background


def prompted_model_file(paths: Sequence[str | Path]) -> str | Path | None:
    """The HRMedSegSAM model file when ``paths`` is one, None when every file is an automatic
    model (several: an ensemble); a prompted model in an ensemble is refused by name."""
    prompted = [path for path in paths if is_promptable(read_model_config(path))]
    if prompted and len(paths) > 1:
        raise ConfigError(
            f"an ensemble is of automatic models; {', '.join(map(str, prompted))} segment prompts"
        )
    return prompted[0] if prompted else None


def refuse_automatic_options(
    tiling: Tiling | None, tta: str, postprocessing: Postprocessing | None = None
) -> None:
    """HRMedSegSAM models segment prompts: refuse the options only automatic models take."""
    options = {
        "tiled prediction": tiling is not None,
        "test-time flips": tta != "none",
        "postprocessing": postprocessing is not None and postprocessing.active,
    }
    given = [name for name, used in options.items() if used]
    if given:
        verb = "is" if len(given) == 1 and given[0] != "test-time flips" else "are"
        raise ConfigError(
            f"{' and '.join(given)} {verb} for automatic models; HRMedSegSAM models segment prompts"
        )


def windows_of_tiling(tiling: Tiling | None) -> bool | None:
    """What ``--tile`` asks of a promptable model: True (decode each object in a native-scale
    window) or None (as the model was trained). The windows' overlap and blending are refused by
    name: they belong to automatic models' sliding windows."""
    if tiling is None:
        return None
    if tiling != Tiling():
        raise ConfigError(
            "--overlap and --blend are for automatic models; HRMedSegSAM decodes each object "
            "in one window (--tile alone)"
        )
    return True


def prompt_window(config: ModelConfig, native_windows: bool | None) -> tuple[int, int] | None:
    """The window a promptable model decodes each object in: its input size when
    ``native_windows``, or when None and the model was trained on native windows; else None
    (the whole image, resized)."""
    if native_windows is None:
        native_windows = config.input_scale == "native"
    return tuple(config.img_size) if native_windows else None


def prompts_from_ground_truth(mask: np.ndarray, kind: str = "box") -> list[ObjectPrompt]:
    """One prompt set per connected component of ``mask > 0``: its exact box, its interior point
    (the pixel farthest from the border), or both."""
    return prompts_for_objects(label_objects(mask)[0], kind)


def prompts_for_objects(labels: np.ndarray, kind: str = "box") -> list[ObjectPrompt]:
    """One prompt set per object of a label image (0 = background, objects 1..N), in label order;
    as :func:`prompts_from_ground_truth`."""
    if kind not in GT_PROMPT_KINDS:
        raise ConfigError(f"ground-truth prompts are one of {GT_PROMPT_KINDS}, got {kind!r}")
    boxes, points = prompts_from_labels(labels)
    return [
        ObjectPrompt(
            box=box if "box" in kind else None,
            points=point[None] if "point" in kind else None,
            labels=np.ones(1, dtype=np.int64) if "point" in kind else None,
        )
        for box, point in zip(boxes, points, strict=True)
    ]


def read_prompt_file(path: str | Path, image_hw: tuple[int, int]) -> list[ObjectPrompt]:
    """The objects of a prompt JSON file (format in the module docstring), checked against the
    image size (:func:`object_prompt`); errors name the file and the object."""
    return checked_prompts(prompt_entries(path), image_hw, source=path)


def checked_prompts(entries: list, image_hw: tuple[int, int], *, source: str | Path) -> list[ObjectPrompt]:
    """Each entry of a prompt file as :func:`object_prompt` checks it; errors name ``source``."""
    return [object_prompt(entry, image_hw, f"{source}: object {i}") for i, entry in enumerate(entries)]


def prompt_entries(path: str | Path) -> list:
    """The JSON entries of a prompt file's objects, unchecked (see :func:`read_prompt_file`); a
    file that is missing, unreadable or not ``{"objects": [...]}`` is refused by name."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: prompt file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable prompt file ({err})") from None
    if not isinstance(content, dict) or not isinstance(content.get("objects"), list):
        raise DataError(f'{path}: expected {{"objects": [...]}} with one entry per object')
    return content["objects"]


def object_prompt(entry: object, image_hw: tuple[int, int], where: str) -> ObjectPrompt:
    """One object's prompt from its JSON form (``{"box": [...], "points": [[x, y], ...],
    "labels": [...]}``, a box and/or points), checked: finite pixel coordinates on the image, a
    box with x0 <= x1 and y0 <= y1, one label (0 or 1) per point. The one check for prompt files
    and the ``serve`` page alike; a :class:`DataError` starts with ``where``."""
    height, width = image_hw
    if not isinstance(entry, dict) or not ({"box", "points"} & set(entry)):
        raise DataError(f"{where}: needs a 'box' and/or 'points'")
    unknown = sorted(set(entry) - {"box", "points", "labels"})
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}")
    if "labels" in entry and "points" not in entry:
        raise DataError(f"{where}: 'labels' without 'points'")
    prompt = ObjectPrompt()
    if "box" in entry:
        box = _numbers(entry["box"], where, "box")
        if box.shape != (4,) or not (box[0] <= box[2] and box[1] <= box[3]):
            raise DataError(f"{where}: box must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1")
        prompt.box = box
    if "points" in entry:
        points = _numbers(entry["points"], where, "points")
        if points.shape == (2,):
            points = points[None]
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise DataError(f"{where}: points must be a list of [x, y] pairs")
        labels = entry.get("labels", [1] * len(points))
        valid = isinstance(labels, list) and all(type(v) is int and v in (0, 1) for v in labels)
        if not valid or len(labels) != len(points):
            raise DataError(f"{where}: 'labels' must give 0 or 1 for each of the {len(points)} point(s)")
        prompt.points, prompt.labels = points, np.asarray(labels, dtype=np.int64)
    for name, coords in (("box", prompt.box), ("points", prompt.points)):
        if coords is None:
            continue
        xy = coords.reshape(-1, 2)
        if (xy < 0).any() or (xy[:, 0] > width - 1).any() or (xy[:, 1] > height - 1).any():
            raise DataError(f"{where}: {name} outside the {width}x{height} (W x H) image")
    return prompt


def _numbers(value: object, where: str, name: str) -> np.ndarray:
    """``value`` as a float array; refused by name unless every entry is a finite number (JSON's
    true, false and numbers written as strings included, which NumPy would quietly convert)."""
    if not _only_numbers(value):
        raise DataError(f"{where}: {name} must hold numbers only, got {value!r}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {name} must hold numbers only, got {value!r}") from None
    if not np.isfinite(array).all():
        raise DataError(f"{where}: {name} must be finite numbers, got {value!r}")
    return array


def _only_numbers(value: object) -> bool:
    if isinstance(value, list | tuple):
        return all(_only_numbers(v) for v in value)
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


class PromptedSegmenter:
    """Segment whole images from per-object prompts with an HRMedSegSAM :class:`Predictor`.

    Args:
        predictor: the :class:`Predictor` of a promptable model.
        max_boxes_per_pass: box prompts decoded together; each one's logits are interpolated to
            the original size, so this bounds the memory of one pass.
        window: (height, width) in original pixels, usually the model's own input size: decode
            each object in a window of the image at its own resolution instead of in the whole
            image resized (see :func:`object_windows`); None: the whole image. Small objects in
            large images (nuclei in a 1024² tissue image) shrink to a few pixels when the image is
            resized to the model's size; in a native-scale window they keep their size.
        max_zoom: with ``window``, the largest enlargement of a small boxed object's window (a
            power of two; 1: every window at the image's own scale; None: the model's default,
            :func:`default_zoom`, with a window, 1 without). An object whose box spans at most a
            ``zoom``-th of a quarter window is decoded in a window ``zoom`` times smaller,
            enlarged to the model's size, so that it covers more of the model's logits.

    Example:
        >>> seg = PromptedSegmenter.from_checkpoint("sam_run/best.safetensors")
        >>> objects = prompts_from_ground_truth(truth, "box")
        >>> mask, object_masks, scores = seg.segment("cells.png", objects)
    """

    num_classes = 1

    def __init__(
        self,
        predictor: Predictor,
        max_boxes_per_pass: int = 32,
        window: tuple[int, int] | None = None,
        *,
        max_zoom: int | None = None,
    ) -> None:
        self.predictor = predictor
        # Each box's logits are interpolated to the original size: bound that memory per pass.
        self.max_boxes_per_pass = max_boxes_per_pass
        if window is not None and min(window) < 1:
            raise ConfigError(f"a prompt window needs a positive height and width, got {window}")
        self.window = window
        # A stand-in predictor without a model takes the general default.
        model = getattr(predictor, "model", None)
        default = DEFAULT_MAX_ZOOM if model is None else default_zoom(model.config)
        self.max_zoom = resolve_zoom(max_zoom, window, default=default)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        *,
        native_windows: bool | None = None,
        max_zoom: int | None = None,
    ) -> PromptedSegmenter:
        """``native_windows``: decode each object in a window of the model's input size at the
        image's own resolution (``window`` above); None: as the model was trained (its
        ``input_scale``). ``max_zoom``: as above."""
        predictor = Predictor.from_checkpoint(path, device)
        window = prompt_window(predictor.model.config, native_windows)
        return cls(predictor, window=window, max_zoom=max_zoom)

    def segment(
        self, image: np.ndarray | str | Path, objects: list[ObjectPrompt]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image's mask (H, W) uint8 0/1 (the union), each object's mask (N, H, W) bool and
        its predicted IoU (N,), all at the original size."""
        if self.window is None:
            return self._segment_whole(image, objects)
        pixels = read_image(image) if isinstance(image, str | Path) else as_float_rgb(image)
        height, width = pixels.shape[:2]
        object_masks = np.zeros((len(objects), height, width), dtype=bool)
        scores = np.zeros(len(objects), dtype=np.float32)
        windows = object_windows(objects, (height, width), self.window, max_zoom=self.max_zoom)
        for (top, left, bottom, right), members in windows.items():
            shift = np.array([left, top], dtype=np.float64)
            local = [shifted_prompt(objects[i], shift) for i in members]
            _, masks, window_scores = self._segment_whole(pixels[top:bottom, left:right], local)
            object_masks[members, top:bottom, left:right] = masks
            scores[members] = window_scores
        return object_masks.any(0).astype(np.uint8), object_masks, scores

    def _segment_whole(
        self, image: np.ndarray | str | Path, objects: list[ObjectPrompt]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`segment` with every object decoded in the whole image, resized."""
        self.predictor.set_image(image)
        height, width = self.predictor.original_size
        object_masks = np.zeros((len(objects), height, width), dtype=bool)
        scores = np.zeros(len(objects), dtype=np.float32)
        box_only = [i for i, o in enumerate(objects) if o.box is not None and o.points is None]
        decoded = set(box_only)
        for start in range(0, len(box_only), self.max_boxes_per_pass):  # box-only objects in batches
            chunk = box_only[start : start + self.max_boxes_per_pass]
            masks, iou, _ = self.predictor.predict(
                box=np.stack([objects[i].box for i in chunk]), multimask_output=False
            )
            object_masks[chunk], scores[chunk] = masks[:, 0], iou[:, 0]
        for i, prompt in enumerate(objects):
            if i in decoded:
                continue
            ambiguous = prompt.box is None
            masks, iou, _ = self.predictor.predict(
                prompt.points, prompt.labels, prompt.box, multimask_output=ambiguous
            )
            best = int(np.argmax(iou))
            object_masks[i], scores[i] = masks[best], iou[best]
        union = object_masks.any(0).astype(np.uint8)
        self.predictor.reset_image()
        return union, object_masks, scores


def object_windows(
    objects: Sequence[ObjectPrompt],
    image_hw: tuple[int, int],
    window: tuple[int, int],
    *,
    max_zoom: int = 1,
) -> dict[tuple[int, int, int, int], list[int]]:
    """The window of the image each object is decoded in, as ``{(top, left, bottom, right):
    [object indices]}``, so that objects sharing a window share one encoder pass.

    Per axis, an object whose prompt extent (its box, or its points' bounding box) spans at most a
    quarter of the window takes the window of a grid at half-window steps whose centre is nearest
    to its own; that window holds it with at least an eighth of the window as margin on each
    side. A larger object gets a window of its own, centred on it: the window's size, or twice the
    object's extent where that is larger (then resized to the model's size, like a whole image).
    Windows are clipped to the image. A point-prompted object larger than the window is cut at
    the window's edge: give it a box, or decode the whole image.

    With ``max_zoom`` above 1, a small object's window is first divided by its zoom
    (:func:`object_zoom`), so that once enlarged to the model's size the object is drawn on more
    of its logits; the rules above then apply to the smaller window. Only objects with a box are
    enlarged: points alone do not say how far their object reaches.
    """
    check_zoom(max_zoom)
    windows: dict[tuple[int, int, int, int], list[int]] = {}
    for index, prompt in enumerate(objects):
        corners = [c.reshape(-1, 2) for c in (prompt.box, prompt.points) if c is not None]
        xy = np.concatenate(corners)
        lows, highs = xy.min(0)[::-1], xy.max(0)[::-1]  # (row, column)
        # Points alone do not bound their object, so only a boxed object's window is enlarged.
        zoom = 1 if prompt.box is None else object_zoom(highs - lows + 1, image_hw, window, max_zoom=max_zoom)
        sides = [side // zoom for side in window]
        axes = zip(lows, highs, sides, image_hw, strict=True)
        (top, bottom), (left, right) = (_axis_window(*axis) for axis in axes)
        windows.setdefault((top, left, bottom, right), []).append(index)
    return windows


def object_zoom(
    extent: np.ndarray, image_hw: tuple[int, int], window: tuple[int, int], *, max_zoom: int
) -> int:
    """The enlargement of an object's window: the largest power of two up to ``max_zoom`` at
    which the object's (rows, columns) ``extent``, enlarged, still spans at most a quarter of the
    window on each axis, and the window, divided, still fits in the image (so it is enlarged
    alike on both axes)."""
    zooms = [2**k for k in range(1, max_zoom.bit_length())]
    fitting = [
        zoom
        for zoom in zooms
        if all(
            zoom * span <= side / 4 and side // zoom <= size
            for span, side, size in zip(extent, window, image_hw, strict=True)
        )
    ]
    return max(fitting, default=1)


def default_zoom(config: ModelConfig) -> int:
    """The largest zoom a promptable model's windows take by default: ``DETAIL_DEFAULT_MAX_ZOOM``
    for a model with the detail path (its logits are at the input's resolution already),
    ``DEFAULT_MAX_ZOOM`` for one with 1/4-resolution logits."""
    return DETAIL_DEFAULT_MAX_ZOOM if config.arch in DETAIL_ARCHITECTURES else DEFAULT_MAX_ZOOM


def resolve_zoom(max_zoom: int | None, window: tuple[int, int] | None, *, default: int) -> int:
    """``max_zoom`` checked against ``window`` (the prompt window, None: the whole image), or, when
    None, ``default`` in windows and 1 for the whole image."""
    if max_zoom is None:
        return 1 if window is None else default
    check_zoom(max_zoom)
    if max_zoom > 1 and window is None:
        raise ConfigError("zoomed windows need a prompt window (decode in native-scale windows)")
    return max_zoom


def check_zoom(max_zoom: int) -> None:
    """Refuse a ``max_zoom`` that is not a power of two from 1."""
    whole = isinstance(max_zoom, int) and not isinstance(max_zoom, bool)
    if not whole or max_zoom < 1 or max_zoom & (max_zoom - 1):
        raise ConfigError(f"the largest zoom must be a power of two (1, 2, 4, ...), got {max_zoom!r}")


def _axis_window(low: float, high: float, side: int, size: int) -> tuple[int, int]:
    """[start, end) along one axis of the window holding pixels ``low``..``high`` (inclusive)."""
    if size <= side:
        return 0, size
    extent = high - low + 1
    centre = (low + high + 1) / 2
    if extent <= side / 4:
        step = side // 2
        starts = [*range(0, size - side, step), size - side]
        start = min(starts, key=lambda s: abs(s + side / 2 - centre))
        return start, start + side
    length = min(size, max(side, int(np.ceil(2 * extent))))
    start = int(np.clip(round(centre - length / 2), 0, size - length))
    return start, start + length


def shifted_prompt(prompt: ObjectPrompt, shift: np.ndarray) -> ObjectPrompt:
    """``prompt`` in the coordinates of a window whose top-left corner is ``shift`` (x, y)."""
    box = None if prompt.box is None else prompt.box - np.tile(shift, 2)
    points = None if prompt.points is None else prompt.points - shift
    return ObjectPrompt(box=box, points=points, labels=prompt.labels)
