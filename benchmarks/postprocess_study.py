"""Which mask postprocessing helps a trained model: every candidate scored on the validation and
the test split from one pass of the model (masks are segmented once, cleaned per candidate).

    python benchmarks/postprocess_study.py --checkpoint run/best.safetensors --data ../shared/data/hc18
    python benchmarks/postprocess_study.py --checkpoint run_a/best.safetensors run_b/best.safetensors ...

Choose on validation (nnU-Net keeps a step when it does not lower the validation Dice), then read
the test row of that choice. Prints a Markdown table per split: mean Dice, IoU, HD95 and NSD (2 px).
Candidates: none, ``--min-size`` at each of ``--min-sizes``, ``--keep-largest``, ``--fill-holes``,
and keep-largest with fill-holes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from hrmedseg.data import find_dataset, read_mask
from hrmedseg.evaluation.metrics import case_metrics
from hrmedseg.inference.postprocess import Postprocessing
from hrmedseg.inference.segmenter import Segmenter

METRICS = ("dice", "iou", "hd95", "nsd")


def candidates(min_sizes: list[int]) -> dict[str, Postprocessing]:
    found = {"none": Postprocessing()}
    found.update({f"--min-size {n}": Postprocessing(min_size=n) for n in min_sizes})
    found["--keep-largest"] = Postprocessing(keep_largest=True)
    found["--fill-holes"] = Postprocessing(fill_holes=True)
    found["--keep-largest --fill-holes"] = Postprocessing(keep_largest=True, fill_holes=True)
    return found


def score_split(segmenter: Segmenter, data: Path, split: str, options: dict[str, Postprocessing]) -> dict:
    index = find_dataset(data)
    samples = index.subset(index.split[split])
    rows: dict[str, list[dict]] = {name: [] for name in options}
    probabilities = segmenter.iter_probabilities([s.image for s in samples])
    for sample, probs in zip(samples, probabilities, strict=True):
        truth, classes = read_mask(sample.mask), segmenter.classes(probs)
        for name, postprocessing in options.items():
            rows[name] += case_metrics(postprocessing(classes), truth, segmenter.num_classes)
    return {name: {m: float(np.mean([r[m] for r in found])) for m in METRICS} for name, found in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="several: their ensemble")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--tile", action="store_true", help="tile a resized model (native ones always tile)")
    parser.add_argument("--tta", default="none", help="test-time flips (none, hflip, flips)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from hrmedseg.inference.tiling import Tiling

    tiling = Tiling() if args.tile else None
    segmenter = Segmenter.from_checkpoint(args.checkpoint, args.device, tiling=tiling, tta=args.tta)
    options = candidates(args.min_sizes)
    device = args.device if args.device != "cpu" else f"CPU ({torch.get_num_threads()} threads)"
    scoring = f"{'tiled' if segmenter.tiling else 'resized'}, --tta {args.tta}"
    models = " + ".join(f"`{c}`" for c in args.checkpoint)
    print(f"{models} on `{args.data}`, {scoring}, {device}")
    for split in args.splits:
        started = time.perf_counter()
        table = score_split(segmenter, args.data, split, options)
        print(f"\n{split} ({time.perf_counter() - started:.0f} s)\n")
        print("| postprocessing | " + " | ".join(METRICS) + " |")
        print("|---|" + "---|" * len(METRICS))
        for name, means in table.items():
            print(f"| {name} | " + " | ".join(f"{means[m]:.4f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main()
