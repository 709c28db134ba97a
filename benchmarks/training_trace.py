"""Trace how a binary model's predictions develop, epoch by epoch, on a few validation images.

    python benchmarks/training_trace.py data/hrf_crop1024 runs/trace \\
        --model hrmedseg_detail_deepstem_b --img-size 256 --input-scale native --epochs 20 \\
        --batch-size 4 --seed 1 --detail early_convs skips full_res_head feature_norm

Trains with the default recipe (validated only at the end, so the trace leaves training as it
would be) and, after each epoch, predicts the first ``--images`` validation images from the
saved ``last.safetensors`` at their original size. Per epoch it prints a Markdown row: the
training loss, the AUC of the foreground probabilities (can the model rank foreground above
background at all?), the mean probability on foreground and on background pixels, the share of
pixels predicted foreground and the Dice at 0.5. A Dice of 0 with an AUC well above 0.5 is a
model that ranks the pixels but sits on the wrong side of the threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hrmedseg import Segmenter
from hrmedseg.data.folders import find_dataset
from hrmedseg.data.io import read_mask
from hrmedseg.training.config import load_config
from hrmedseg.training.engine import train


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; ties broken by order."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="a binary dataset folder with a split.json")
    parser.add_argument("output", type=Path, help="the training run's folder (must not hold a run)")
    parser.add_argument("--model", default="hrmedseg_b")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--input-scale", default="resize")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detail", nargs="+", help="the detail path's components (detail models)")
    parser.add_argument("--images", type=int, default=2, help="validation images to trace")
    parser.add_argument("--pixels", type=int, default=200_000, help="pixels sampled for the AUC")
    args = parser.parse_args()

    index = find_dataset(args.data)
    if index.split is None:
        raise SystemExit(f"{args.data}: no split file; the trace reads its validation images")
    samples = index.subset(index.split["val"][: args.images])
    images = [str(s.image) for s in samples]
    truth = np.concatenate([(read_mask(s.mask) > 0).ravel() for s in samples])
    sampled = np.random.default_rng(0).choice(len(truth), min(args.pixels, len(truth)), replace=False)

    print("| epoch | train loss | AUC | p foreground | p background | predicted share | Dice |")
    print("|---|---|---|---|---|---|---|")

    def trace(epoch: int, row: dict[str, float]) -> None:
        segmenter = Segmenter.from_checkpoint(args.output / "last.safetensors")
        probs = np.concatenate([p[0].ravel() for p in segmenter.iter_probabilities(images)])
        predicted = probs > 0.5
        dice = 2 * (predicted & truth).sum() / max(predicted.sum() + truth.sum(), 1)
        print(
            f"| {row['epoch']} | {row['train_loss']:.3f} | {auc(probs[sampled], truth[sampled]):.3f} | "
            f"{probs[truth].mean():.3f} | {probs[~truth].mean():.3f} | {predicted.mean():.4f} | {dice:.3f} |",
            flush=True,
        )

    options = {"detail": args.detail} if args.detail else {}
    config = load_config(
        None, data=str(args.data), output=str(args.output), model=args.model, img_size=args.img_size,
        input_scale=args.input_scale, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        val_every=args.epochs, num_workers=0, model_options=options,
    )  # fmt: skip
    train(config, progress=False, on_epoch_end=trace)


if __name__ == "__main__":
    main()
