"""Recipe study: train hrmedseg_b with each recipe on one dataset, keep every validation curve,
score the best-validation weights on the test split.

    python benchmarks/recipe_study.py --data ../shared/data/hc18 --recipes benchmarks/recipes/*.yaml

A recipe is a training config (YAML, fields of ``TrainConfig``); the data, size, epochs, batch and
seed are the study's, the same for every recipe. Each run goes through ``hrmedseg.train`` and
``hrmedseg.evaluate`` exactly as a user's would, into ``OUTPUT/<data>/<recipe>/``. A finished run
is not repeated, so a killed study continues where it stopped. Prints a Markdown table (pick the
winner by validation Dice, never by test Dice) and the validation Dice of every epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.options import SegmenterOptions
from hrmedseg.training.config import load_config
from hrmedseg.training.engine import train
from hrmedseg.training.run_log import read_log


def run_recipe(recipe: Path, args: argparse.Namespace) -> dict:
    run = args.output / args.data.name / recipe.stem
    result_file = run / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    config = load_config(
        recipe, data=str(args.data), output=str(run), model=args.model, img_size=args.img_size,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, num_workers=args.num_workers,
        device=args.device,
    )  # fmt: skip
    started = time.perf_counter()
    train(config, progress=False, overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    summary = evaluate(
        run / "best.safetensors",
        args.data,
        run / "test",
        options=SegmenterOptions(device=args.device),
        progress=False,
    )
    log = read_log(run / "log.csv")
    best = max(log, key=lambda r: r["val_dice"])
    result = {
        "recipe": recipe.stem,
        "data": args.data.name,
        "val_dice": [round(r["val_dice"], 4) for r in log],
        "train_loss": [round(r["train_loss"], 4) for r in log],
        "best_val_dice": best["val_dice"],
        "best_epoch": int(best["epoch"]),
        "test": {k: summary["mean"][k]["mean"] for k in ("dice", "iou", "hd95")},
        "minutes": minutes,
        "device": args.device if args.device != "cpu" else f"CPU ({torch.get_num_threads()} threads)",
    }
    result_file.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with a split.json")
    parser.add_argument("--recipes", type=Path, nargs="+", required=True, help="training configs (YAML)")
    parser.add_argument("--model", default="hrmedseg_b")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path("runs/recipe_study"))
    args = parser.parse_args()

    results = []
    for recipe in args.recipes:
        results.append(run_recipe(recipe, args))
        r = results[-1]
        print(f"{r['recipe']}: best val Dice {r['best_val_dice']:.4f} (epoch {r['best_epoch']}), "
              f"test Dice {r['test']['dice']:.4f}, {r['minutes']:.1f} min", flush=True)  # fmt: skip
    print(f"\n{args.data.name}, {args.model}, {args.img_size}², {args.epochs} epochs, "
          f"batch {args.batch_size}, seed {args.seed}, {results[0]['device']}\n")  # fmt: skip
    print("| recipe | best val Dice (epoch) | test Dice | test IoU | test HD95 (px) | minutes |")
    print("|---|---|---|---|---|---|")
    for r in results:
        t = r["test"]
        print(f"| {r['recipe']} | {r['best_val_dice']:.4f} ({r['best_epoch']}) | {t['dice']:.4f} | "
              f"{t['iou']:.4f} | {t['hd95']:.1f} | {r['minutes']:.1f} |")  # fmt: skip
    print("\nValidation Dice per epoch:\n")
    print("| recipe | " + " | ".join(str(e + 1) for e in range(args.epochs)) + " |")
    print("|---|" + "---|" * args.epochs)
    for r in results:
        print(f"| {r['recipe']} | " + " | ".join(f"{d:.3f}" for d in r["val_dice"]) + " |")


if __name__ == "__main__":
    main()
