"""``hrmedseg demo``: the whole workflow on a small synthetic data set, on any machine.

Generates 80 synthetic images (bright ellipses on shaded noise; not medical data), trains
``hrmedseg_b`` at 256 x 256, evaluates it on the held-out test cases at original resolution, and
predicts masks with overlays. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from .data.synthetic import make_synthetic_dataset
from .evaluation.evaluate import evaluate
from .inference.files import predict_to_folder
from .inference.segmenter import Segmenter
from .output import ensure_output_folder
from .training.config import TrainConfig
from .training.engine import train


def run_demo(output: Path, progress: bool = True) -> dict[str, Path]:
    output = ensure_output_folder(output)
    started = time.perf_counter()
    data = make_synthetic_dataset(output / "data", num_images=80, size_range=(200, 320), seed=0)
    print(f"synthetic dataset (80 images, not medical data) in {data}")
    config = TrainConfig(
        data=str(data), output=str(output / "run"), model="hrmedseg_b", img_size=256, epochs=12,
        batch_size=8, num_workers=0,
    )  # fmt: skip
    result = train(config, progress=progress, overwrite=True)  # the demo's own folder: rerunnable
    print(f"[1/3] trained: best validation Dice {result['best_dice']:.4f}; run folder {config.output}")

    checkpoint = Path(result["best"])
    summary = evaluate(
        checkpoint, data, output / "evaluation", split="test", overlays=True, progress=progress
    )
    dice = summary["mean"]["dice"]
    print(f"[2/3] test Dice {dice['mean']:.4f} ± {dice['std']:.4f} over {summary['cases']} cases; "
          f"metrics in {output / 'evaluation'}")  # fmt: skip

    segmenter = Segmenter.from_checkpoint(checkpoint)
    predict_to_folder(segmenter, data / "images", output / "predictions", overlays=True, progress=progress)
    print(f"[3/3] masks and overlays for every image in {output / 'predictions'}")
    print("      overlays: the predicted mask tinted red; in evaluation/, the true outline in yellow")
    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. Model: {checkpoint}\n"
        f"Try: hrmedseg predict --checkpoint {checkpoint} --input YOUR_IMAGES --output YOUR_MASKS"
    )
    return {
        "run": Path(config.output),
        "evaluation": output / "evaluation",
        "predictions": output / "predictions",
    }
