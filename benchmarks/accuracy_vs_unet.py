"""Test accuracy and time per epoch of hrmedseg_b against a U-Net trained with the same recipe.

    python benchmarks/accuracy_vs_unet.py --data ../shared/data/hc18 --img-size 512 --epochs 10

Both models see the same data, split, augmentation, optimiser (Adam, lr 1e-3, ExponentialLR 0.98
per epoch), loss (0.8 Dice + 0.2 focal; our model adds its IoU-head term), batch size and epochs,
through hrmedseg's own training and evaluation code. The checkpoint with the best validation Dice
is scored on the test split at original resolution (Dice, IoU, HD95). Training memory per image
comes from ``memory_speed.py`` (a fresh process per model) and is added to the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import hrmedseg
from hrmedseg.data import check_samples, find_dataset
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.segmenter import Segmenter
from hrmedseg.losses import SegmentationLoss
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import make_loaders, resolve_split, train_one_epoch, validate
from hrmedseg.training.objectives import AutomaticObjective

HERE = Path(__file__).resolve().parent
PAPER_AUGMENTATION = {"hflip": 0.1, "crop_scale": [1.0, 1.0], "brightness": 0.0, "contrast": 0.0}


def build(name: str, img_size: int) -> tuple[torch.nn.Module, float]:
    """The model and the weight of its IoU-head loss (the U-Net has none)."""
    if name == "unet_resnet34":
        from baselines import UNetBaseline

        return UNetBaseline(img_size), 0.0
    return hrmedseg.create_model(name, img_size=img_size), 1.0


def train_and_test(name: str, data: Path, args: argparse.Namespace, output: Path) -> dict:
    torch.manual_seed(args.seed)
    model, quality_weight = build(name, args.img_size)
    device = torch.device(args.device)
    model.to(device)
    config = TrainConfig(
        data=str(data), output=str(output), model=name, img_size=args.img_size, epochs=args.epochs,
        batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed,
        quality_weight=quality_weight, augment=PAPER_AUGMENTATION,
    )  # fmt: skip
    split = resolve_split(config, output, resume=False)
    index = find_dataset(data)
    train_samples, val_samples = index.subset(split["train"]), index.subset(split["val"])
    check_samples(train_samples + val_samples, 1)
    train_set, sampler, train_loader, val_loader = make_loaders(
        config, train_samples, val_samples, model.config.pixel_mean, model.config.pixel_std
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    objective = AutomaticObjective(
        model, SegmentationLoss(1, config.dice_weight, config.focal_weight), quality_weight, None
    )
    best_dice, best_state, epoch_seconds = -1.0, None, []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        train_loss = train_one_epoch(
            objective, train_loader, optimizer, scaler, config.accumulate, device, desc=f"{name} {epoch + 1}"
        )
        epoch_seconds.append(time.perf_counter() - started)
        scheduler.step()
        _, val_dice, _ = validate(objective, val_loader, device)
        print(f"{name} epoch {epoch + 1}: loss {train_loss:.4f} val Dice {val_dice:.4f}", flush=True)
        if val_dice > best_dice:
            best_dice, best_state = val_dice, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    summary = evaluate(
        Segmenter(model, device, batch_size=4), data, output / "test", split="test", progress=False
    )
    return {
        "model": name,
        "data": data.name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "best_val_dice": best_dice,
        "test": {k: summary["mean"][k] for k in ("dice", "iou", "hd95")},
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
    }


def training_memory_per_image(name: str, img_size: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "memory.json"
        options = ["--model", name, "--device", device, "--sizes", str(img_size), "--batches", "1"]
        options += ["--modes", "train", "--repeats", "1", "--json", str(result_file)]
        subprocess.run(
            [sys.executable, str(HERE / "memory_speed.py"), *options], capture_output=True, check=True
        )
        results = json.loads(result_file.read_text())
    return next(r["peak_gb_per_image"] for r in results if not r["checkpointing"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="dataset folders with a test split"
    )
    parser.add_argument("--models", nargs="+", default=["hrmedseg_b", "unet_resnet34"])
    parser.add_argument("--img-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path("runs/accuracy_vs_unet"))
    args = parser.parse_args()

    rows = []
    for data in args.data:
        for name in args.models:
            row = train_and_test(name, data, args, args.output / data.name / name)
            row["train_gb_per_image"] = training_memory_per_image(name, args.img_size, args.device)
            rows.append(row)
            (args.output / "results.json").write_text(json.dumps(rows, indent=2))
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"\n{args.img_size}x{args.img_size}, {args.epochs} epochs, batch {args.batch_size}, {device}\n")
    print("| data | model | params | test Dice | test IoU | test HD95 (px) | train GB / image | s / epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        dice, iou, hd95 = (r["test"][k] for k in ("dice", "iou", "hd95"))
        print(
            f"| {r['data']} | {r['model']} | {r['params_m']:.2f} M | "
            f"{dice['mean']:.4f} ± {dice['std']:.4f} | {iou['mean']:.4f} | {hd95['mean']:.1f} | "
            f"{r['train_gb_per_image']:.3f} | "
            f"{r['seconds_per_epoch']:.0f} |"
        )


if __name__ == "__main__":
    main()
