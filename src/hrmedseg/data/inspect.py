"""A dataset's fingerprint before training (``hrmedseg inspect``): what the folder holds, what is
wrong with it, and which of this package's options its images and objects call for.

In the spirit of nnU-Net's fingerprint: image sizes and colour modes, mask values, foreground
share, and the objects (8-connected components per foreground class) per image and their sizes.
Every file is decoded once; a file that cannot be used is named with its problem, as training
would name it. The advice is a rule of thumb from the measurements in docs/benchmarks.md, stated
with its reason; choose on the validation split.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from .checks import sample_problems
from .folders import find_dataset
from .io import is_lossy, raise_for_problems, read_mask

# A side ratio above this between the largest and the smallest image: sizes vary (dsb2018: 5.4).
VARIED_SIZES = 2.0
# Objects whose median area is below this share of their image are small (dsb2018 nuclei: 0.2 %;
# hc18 heads: 31 %).
SMALL_OBJECTS = 0.01
# At least this share of the masks with foreground hold exactly one object per class.
ONE_OBJECT = 0.9


@dataclass
class ClassFingerprint:
    """One foreground class over the dataset (binary: class 1, any non-zero value)."""

    images_with_class: int
    objects_per_image: dict[str, float]  # median and max, over images holding the class
    object_area_px: dict[str, float]  # median and 5th percentile, over all objects
    object_share_of_image: float  # median object area / its image's area
    one_object_share: float  # share of images holding the class that hold exactly one object


@dataclass
class DatasetFingerprint:
    """What :func:`inspect_dataset` found; ``advice`` lists option, reason pairs."""

    root: str
    cases: int
    split: dict[str, int] | str
    problems: list[str]
    height: dict[str, int]  # min, median, max
    width: dict[str, int]
    distinct_sizes: int
    colour_modes: dict[str, int]
    jpeg_masks: int
    mask_values: list[int]
    empty_masks: int
    foreground_share: dict[str, float]  # mean, min, max of the foreground pixels' share per image
    classes: dict[str, ClassFingerprint]
    spacing_known: int
    advice: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(values: list[float], keys: tuple[str, ...] = ("min", "median", "max")) -> dict[str, float]:
    found = {"min": min(values), "median": statistics.median(values), "max": max(values),
             "mean": statistics.fmean(values)}  # fmt: skip
    return {k: found[k] for k in keys}


def _objects(mask: np.ndarray) -> np.ndarray:
    """Pixel areas of the 8-connected components of a boolean mask."""
    labels, count = ndimage.label(mask, np.ones((3, 3), bool))
    return np.bincount(labels.ravel(), minlength=count + 1)[1:]


def inspect_dataset(data: str | Path, num_classes: int = 1, progress: bool = True) -> DatasetFingerprint:
    """The fingerprint of the dataset folder ``data`` (``num_classes`` as for training: 1 =
    binary, any non-zero value; K = index masks 0..K-1) with its advice."""
    index = find_dataset(data)
    samples = list(index.samples.values())
    problems: list[str] = []
    sizes, modes = [], Counter()
    values: set[int] = set()
    shares, empty = [], 0
    per_class: dict[int, dict[str, list]] = {}
    for sample in tqdm(samples, disable=not progress, desc="inspect", unit="case"):
        found = sample_problems(sample, num_classes)
        if found:
            problems.extend(found)
            continue
        with Image.open(sample.image) as image:
            modes[image.mode] += 1
        mask = read_mask(sample.mask)
        sizes.append(mask.shape)
        values.update(int(v) for v in np.unique(mask))
        foreground = mask != 0
        shares.append(float(foreground.mean()))
        empty += not foreground.any()
        classes = [1] if num_classes == 1 else range(1, num_classes)
        for c in classes:
            objects = _objects(foreground if num_classes == 1 else mask == c)
            if objects.size:
                record = per_class.setdefault(c, {"counts": [], "areas": [], "shares": []})
                record["counts"].append(objects.size)
                record["areas"].extend(objects.tolist())
                record["shares"].extend((objects / mask.size).tolist())
    if not sizes:
        raise_for_problems(problems, f"{index.root}: none of the {len(problems)} case(s) could be used")
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    fingerprint = DatasetFingerprint(
        root=str(index.root),
        cases=len(samples),
        split={k: len(v) for k, v in index.split.items()}
        if index.split
        else "none (train makes a seeded 70/10/20 split)",
        problems=problems,
        height={k: int(v) for k, v in _stats(heights).items()},
        width={k: int(v) for k, v in _stats(widths).items()},
        distinct_sizes=len(set(sizes)),
        colour_modes=dict(modes),
        jpeg_masks=sum(is_lossy(s.mask) for s in samples),
        mask_values=sorted(values)[:50],
        empty_masks=empty,
        foreground_share=_stats(shares, ("mean", "min", "max")),
        classes={
            str(c): ClassFingerprint(
                images_with_class=len(r["counts"]),
                objects_per_image={"median": statistics.median(r["counts"]), "max": max(r["counts"])},
                object_area_px={
                    "median": float(np.median(r["areas"])),
                    "p5": float(np.percentile(r["areas"], 5)),
                },
                object_share_of_image=float(np.median(r["shares"])),
                one_object_share=sum(n == 1 for n in r["counts"]) / len(r["counts"]),
            )
            for c, r in sorted(per_class.items())
        },
        spacing_known=sum(s in index.spacing for s in index.samples),
    )
    fingerprint.advice = advise(fingerprint)
    return fingerprint


def advise(fingerprint: DatasetFingerprint) -> list[tuple[str, str]]:
    """(option, reason) pairs that the fingerprint calls for."""
    advice = []
    sides = (fingerprint.height, fingerprint.width)
    smallest, largest = min(s["min"] for s in sides), max(s["max"] for s in sides)
    classes = fingerprint.classes.values()
    small = [c for c in classes if c.object_share_of_image < SMALL_OBJECTS]
    if largest / smallest > VARIED_SIZES and small:
        advice.append((
            "train --input-scale native",
            f"image sides range from {smallest} to {largest} px and the median object covers "
            f"{100 * min(c.object_share_of_image for c in small):.2f} % of its image: resizing shows "
            "objects at many scales (dsb2018: test Dice 0.875 -> 0.894, HD95 11.0 -> 7.1 px)",
        ))  # fmt: skip
    elif largest > 1024 and small:
        advice.append((
            "train --img-size 1024, or --input-scale native",
            f"images reach {largest} px and objects are small: at a smaller size they shrink "
            "below the 1/16 token grid",
        ))  # fmt: skip
    if classes and all(c.one_object_share >= ONE_OBJECT for c in classes):
        advice.append((
            "evaluate/predict --keep-largest --fill-holes (check on --split val)",
            f"{100 * min(c.one_object_share for c in classes):.0f} % of the masks hold one object "
            "per class: a second region is an error (hc18: test HD95 23.1 -> 17.9 px)",
        ))  # fmt: skip
    many = [c for c in classes if c.objects_per_image["median"] > 3]
    if many:
        advice.append((
            "no --keep-largest",
            f"a median of {max(c.objects_per_image['median'] for c in many):.0f} objects per image "
            "(dsb2018: keeping the largest nucleus dropped test Dice to 0.24)",
        ))  # fmt: skip
    if fingerprint.jpeg_masks:
        advice.append((
            "masks as PNG",
            f"{fingerprint.jpeg_masks} JPEG mask(s): read as foreground above half their maximum, "
            "which undoes the compression noise of 0/255 masks; save masks losslessly if you can",
        ))  # fmt: skip
    if fingerprint.problems:
        advice.append(
            ("fix the named files", f"{len(fingerprint.problems)} case(s) cannot be used as they are")
        )
    return advice


def fingerprint_markdown(fingerprint: DatasetFingerprint) -> str:
    """The fingerprint as a short Markdown report."""
    f = fingerprint
    lines = [
        f"# {f.root}",
        "",
        f"- cases: {f.cases}; split: {f.split}",
        f"- image height {f.height['min']}-{f.height['max']} px (median {f.height['median']}), "
        f"width {f.width['min']}-{f.width['max']} px (median {f.width['median']}); "
        f"{f.distinct_sizes} distinct size(s)",
        f"- colour modes: {', '.join(f'{m} {n}' for m, n in sorted(f.colour_modes.items()))}; "
        f"pixel spacing known for {f.spacing_known}",
        f"- mask values: {f.mask_values}; JPEG masks: {f.jpeg_masks}; empty masks: {f.empty_masks}",
        f"- foreground share per image: mean {f.foreground_share['mean']:.3f} "
        f"(min {f.foreground_share['min']:.3f}, max {f.foreground_share['max']:.3f})",
        "",
        "| class | images with it | objects / image (median, max) | object area px (median, 5th pct) "
        "| median object / image | one object |",
        "|---|---|---|---|---|---|",
    ]
    for c, k in f.classes.items():
        objects = k.objects_per_image
        lines.append(
            f"| {c} | {k.images_with_class} | {objects['median']:g}, {objects['max']} "
            f"| {k.object_area_px['median']:.0f}, {k.object_area_px['p5']:.0f} "
            f"| {100 * k.object_share_of_image:.2f} % | {100 * k.one_object_share:.0f} % |"
        )
    if f.problems:
        lines += ["", f"{len(f.problems)} problem(s):", *(f"- {p}" for p in f.problems[:20])]
        if len(f.problems) > 20:
            lines.append(f"- ... and {len(f.problems) - 20} more (in the JSON report)")
    lines += ["", "Advice:" if f.advice else "No advice: the defaults fit."]
    lines += [f"- `{option}`: {reason}" for option, reason in f.advice]
    return "\n".join(lines) + "\n"
