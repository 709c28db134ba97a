"""Test accuracy and training time of hrmedseg_b against a U-Net trained with the same recipe.

    python benchmarks/accuracy_vs_unet.py --data ../shared/data/hc18 --img-size 256 --epochs 10
    python benchmarks/accuracy_vs_unet.py --data ../shared/data/hc18 --epochs 10 --minutes 15

Both models see the same data, split, recipe (``--recipe``: a training config; by default what
``hrmedseg train`` uses without one, ``configs/paper.yaml`` for the paper's), loss (0.8 Dice +
0.2 focal; our model adds its IoU-head term), batch size and epochs, through hrmedseg's own
training and evaluation code. The checkpoint with the best validation Dice is scored on the test
split at original resolution (Dice, IoU, HD95): each image resized to the model size, or with
``--tile`` segmented by sliding windows at its own resolution; ``--tta`` adds test-time flips.
With the recipe's ``ema_decay``, each model's weight average is validated and scored, and its
trained weights, validated beside it, give a second row: the run as it would be without the
average, which does not change the training path.
``--input-scale native`` trains both models on windows at the images' own resolution instead of
resized images, and validates and scores them tiled.
The scored model is kept as ``<output>/<data>/<model>/test/weights.safetensors``, a model file that
``hrmedseg evaluate`` and ``predict`` read (the U-Net's needs ``common.baselines`` imported). Training
memory per image comes from ``memory_speed.py`` (a fresh process per model).

``--patience P`` trains each model until its validation Dice has not improved for P epochs
(``--epochs`` is then the most it may run): the "trained to convergence" comparison.

Each model's state is saved after every epoch (``<output>/<data>/<model>/last.pt``, written
atomically, with the best weights so far); ``--resume`` continues a killed run from it, exactly
where it stopped. Not with ``--minutes``, whose equal-time result needs every improvement's weights.

``--minutes M`` adds an equal-time comparison: each model gets the whole epochs (training plus
validation) that fit in M minutes at its median epoch time. The median, not the sum, so that
other work sharing the CPU for a few epochs does not shorten a model's budget; every epoch's
seconds are kept in ``results.json``. When the schedule does not depend on the run's length (the
paper's per-epoch exponential decay), a run of k epochs is the first k epochs of the longer run,
so the equal-time result is read from it: the best validation weights among its first k epochs,
scored on the test split. Otherwise (cosine) the model trains again from scratch for k epochs.
Two tables are printed: equal epochs (or convergence) and equal time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import hrmedseg
from hrmedseg.data import check_samples, find_dataset
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.segmenter import Segmenter
from hrmedseg.inference.tiling import Tiling
from hrmedseg.losses import build_loss
from hrmedseg.modeling import AutomaticSegmentationModel
from hrmedseg.training.averaging import WeightAverage
from hrmedseg.training.config import TrainConfig, load_config
from hrmedseg.training.engine import make_loaders, recipe_scheduler, resolve_split, validate
from hrmedseg.training.harness import Distributed, Optimisation
from hrmedseg.training.loop import EpochLoop, Score, fit
from hrmedseg.training.objectives import AutomaticObjective
from hrmedseg.training.optim import build_optimizer
from hrmedseg.training.state import save_training_state

HERE = Path(__file__).resolve().parent


def build(name: str, config: TrainConfig) -> tuple[AutomaticSegmentationModel, float]:
    """The model and the weight of its IoU-head loss (the U-Net has none)."""
    if name == "unet_resnet34":
        from common.baselines import unet_config

        return hrmedseg.build_model(unet_config(config.size[0], config.input_scale)), 0.0
    model = hrmedseg.create_model(
        name, img_size=config.size, input_scale=config.input_scale, **config.model_options
    )
    return model, config.quality_weight


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({torch.get_num_threads()} threads)"


class Converged(Exception):
    """Validation Dice has not improved for ``--patience`` epochs."""


def budget_epochs(minutes: float, epoch_seconds: list[float]) -> int:
    """Whole epochs that fit in ``minutes`` at the median epoch time (at least one)."""
    return max(1, int(minutes * 60 / statistics.median(epoch_seconds)))


def test_scores(model: torch.nn.Module, data: Path, args: argparse.Namespace, output: Path) -> dict:
    """Test Dice, IoU and HD95 of ``model`` (kept in ``output`` as a model file, with its config)."""
    output.mkdir(parents=True, exist_ok=True)
    hrmedseg.save_model(model, output / "weights.safetensors")
    tiling = Tiling() if args.tile else None
    segmenter = Segmenter(model, torch.device(args.device), batch_size=4, tiling=tiling, tta=args.tta)
    summary = evaluate(segmenter, data, output, split="test", progress=False)
    return {k: summary["mean"][k] for k in ("dice", "iou", "hd95")}


def train_and_test(
    name: str, data: Path, args: argparse.Namespace, *, epochs: int, output: Path, patience: int | None = None
) -> dict:
    """Train ``name`` for ``epochs`` (or until ``patience`` epochs pass without a better validation
    Dice), score its best weights on the test split. With ``args.minutes`` and a schedule that does
    not depend on the run's length, the result also holds ``"budget"``: the same for the best
    weights within the epochs that fit in that time. With ``args.resume``, a state saved in
    ``output`` by an earlier, killed run is continued."""
    config = load_config(
        args.recipe, data=str(data), output=str(output), model=name, img_size=args.img_size,
        epochs=epochs, batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed,
        input_scale=args.input_scale, val_every=args.val_every,
    )  # fmt: skip
    torch.manual_seed(config.seed)
    model, quality_weight = build(name, config)
    device = torch.device(args.device)
    model.to(device)
    index = find_dataset(data)
    split = resolve_split(config, index)
    train_samples, val_samples = index.subset(split["train"]), index.subset(split["val"])
    check_samples(train_samples + val_samples, 1)
    train_set, sampler, train_loader, val_loader = make_loaders(
        config,
        train_samples,
        val_samples,
        pixel_mean=model.config.pixel_mean,
        pixel_std=model.config.pixel_std,
    )
    optimizer = build_optimizer(model, config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = recipe_scheduler(optimizer, config, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    loss_fn = build_loss(config.loss, 1, **config.loss_weights())
    objective = AutomaticObjective(model, loss_fn, quality_weight=quality_weight, amp_dtype=None)
    # With the recipe's ema_decay, each model is validated, kept and scored by its weight average.
    average = None if config.ema_decay is None else WeightAverage(model, config.ema_decay)
    scored = model if average is None else average.module
    validated = AutomaticObjective(scored, loss_fn, quality_weight=quality_weight, amp_dtype=None)

    def validate_scored() -> dict[str, float]:
        metrics = validate(validated, val_loader, device, windows_per_pass=config.batch_size)
        if average is not None:  # the trained weights too: one run gives the row without the average
            trained = validate(objective, val_loader, device, windows_per_pass=config.batch_size)
            metrics["val_dice_trained"] = trained["val_dice"]
        return metrics

    loop = EpochLoop(
        trained=objective, module=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        train_loader=train_loader, validate=validate_scored,
        score=Score("val_dice"), device=device,
        epoch_aware=(sampler, train_set), accumulate=config.accumulate, clip_grad=config.clip_grad,
        val_every=config.val_every, average=average,
    )  # fmt: skip
    # The best weights as they stood after each improvement: the best within any first k epochs.
    improvements: dict[int, tuple[float, dict]] = {}
    curve, epoch_seconds = [], []
    # Per epoch: the training loss and the largest gradient norm of a step (a spike there marks
    # the step that knocked training back).
    train_loss, grad_norm_max = [], []
    # With a weight average: the trained weights' validation curve and best (epoch, Dice, weights).
    trained_curve: list = []
    trained_best: dict | None = None
    optimisation = Optimisation(model, optimizer, scheduler, scaler, average)
    output.mkdir(parents=True, exist_ok=True)
    state_path = output / "last.pt"
    start_epoch, best = 0, None
    if args.resume and state_path.exists():
        state = optimisation.resume(state_path, Distributed())
        start_epoch, curve, epoch_seconds = state["epoch"], state["val_dice"], state["epoch_seconds"]
        # A state saved before these curves were kept holds none: its epochs read as None.
        train_loss = state.get("train_loss", [None] * start_epoch)
        grad_norm_max = state.get("grad_norm_max", [None] * start_epoch)
        if state["best_epoch"] is not None:
            best = state["best_val_dice"]
            improvements[state["best_epoch"]] = (best, state["best_weights"])
        trained_curve, trained_best = state.get("val_dice_trained", []), state.get("best_trained")
        print(f"{name}: resuming {output} after epoch {start_epoch}", flush=True)
    rng_after_validation: list = []

    def keep_best(epoch: int, improved: bool, best: float, rng_states: list) -> None:
        rng_after_validation[:] = rng_states
        if improved:
            state = {k: v.detach().to("cpu", copy=True) for k, v in scored.state_dict().items()}
            improvements[epoch] = (best, state)

    def record(epoch: int, row: dict) -> None:
        curve.append(round(row["val_dice"], 4) if "val_dice" in row else None)  # None: not validated
        epoch_seconds.append(round(row["epoch_seconds"], 1))
        train_loss.append(round(row["train_loss"], 4))
        grad_norm_max.append(round(row["grad_norm_max"], 3))
        nonlocal trained_best
        if average is not None:
            dice = row.get("val_dice_trained")
            trained_curve.append(None if dice is None else round(dice, 4))
            if dice is not None and (trained_best is None or dice > trained_best["val_dice"]):
                weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                trained_best = {"epoch": epoch, "val_dice": dice, "weights": weights}
        best_epoch = max(improvements, default=None)  # None until an epoch is validated
        best_val_dice, best_weights = improvements.get(best_epoch, (None, None))
        save_training_state(
            state_path,
            optimisation.state(
                epoch=epoch, rng=rng_after_validation, val_dice=curve, epoch_seconds=epoch_seconds,
                train_loss=train_loss, grad_norm_max=grad_norm_max,
                best_epoch=best_epoch, best_val_dice=best_val_dice, best_weights=best_weights,
                val_dice_trained=trained_curve, best_trained=trained_best,
            ),
        )  # fmt: skip
        if patience is not None and best_epoch is not None and epoch - best_epoch >= patience:
            raise Converged

    with contextlib.suppress(Converged):
        if patience is not None and improvements and start_epoch - max(improvements) >= patience:
            raise Converged  # it had converged when it was killed, before its test scores
        fit(loop, epochs, keep_best, start_epoch=start_epoch, best=best, on_epoch_end=record)
    best_epoch = max(improvements)
    model.load_state_dict(improvements[best_epoch][1])
    result = {
        "model": name,
        "data": data.name,
        "epochs": len(curve),
        "best_epoch": best_epoch,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "model_options": config.model_options,
        # The whole resolved recipe, so that rows run with different recipe files compare by what
        # they changed, not by what their files say they change.
        "recipe_file": str(args.recipe) if args.recipe else None,
        "training_config": {
            **{k: v for k, v in config.to_dict().items() if k not in ("data", "output")},
            "augment": dataclasses.asdict(config.augmentation()),  # every field, defaults included
        },
        "best_val_dice": improvements[best_epoch][0],
        "val_dice": curve,
        "train_loss": train_loss,
        "grad_norm_max": grad_norm_max,
        "epoch_seconds": epoch_seconds,
        "test": test_scores(model, data, args, output / "test"),
        "minutes": sum(epoch_seconds) / 60,
        "device": device_name(args.device),
    }
    if trained_best is not None:  # the same run's trained weights, as they would be scored without it
        model.load_state_dict(trained_best["weights"])
        result["trained_weights"] = {
            "best_epoch": trained_best["epoch"], "best_val_dice": trained_best["val_dice"],
            "val_dice": trained_curve, "test": test_scores(model, data, args, output / "test_trained"),
        }  # fmt: skip
    if args.minutes and length_independent(config):
        fits = budget_epochs(args.minutes, epoch_seconds)
        within = max(e for e in improvements if e <= fits)
        model.load_state_dict(improvements[within][1])
        result["budget"] = {
            **result, "epochs": min(fits, len(curve)), "best_epoch": within,
            "best_val_dice": improvements[within][0], "val_dice": curve[:fits],
            "train_loss": train_loss[:fits], "grad_norm_max": grad_norm_max[:fits],
            "epoch_seconds": epoch_seconds[:fits], "minutes": sum(epoch_seconds[:fits]) / 60,
            "test": test_scores(model, data, args, output / "test_budget"),
        }  # fmt: skip
    return result


def length_independent(config: TrainConfig) -> bool:
    """Whether the learning rate at an epoch is the same however many epochs the run has."""
    return config.schedule == "exponential"


def training_memory_per_image(name: str, img_size: int, device: str, model_options: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "memory.json"
        options = ["--model", name, "--device", device, "--sizes", str(img_size), "--batches", "1"]
        if name != "unet_resnet34":
            options += ["--model-options", json.dumps(model_options)]
        options += ["--modes", "train", "--repeats", "1", "--json", str(result_file)]
        subprocess.run(
            [sys.executable, str(HERE / "memory_speed.py"), *options], capture_output=True, check=True
        )
        results = json.loads(result_file.read_text())
    return next(r["peak_gb_per_image"] for r in results if not r["checkpointing"])


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    print("| data | model | epochs | minutes | best val Dice (epoch) | test Dice | test IoU | test HD95 (px) "
          "| train GB / image | device |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        dice, iou, hd95 = (r["test"][k] for k in ("dice", "iou", "hd95"))
        print(
            f"| {r['data']} | {r['model']} | {r['epochs']} | {r['minutes']:.1f} | "
            f"{r['best_val_dice']:.4f} ({r['best_epoch']}) | "
            f"{dice['mean']:.4f} ± {dice['std']:.4f} | {iou['mean']:.4f} | {hd95['mean']:.1f} | "
            f"{r['train_gb_per_image']:.3f} | {r['device']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="dataset folders with a test split"
    )
    parser.add_argument("--models", nargs="+", default=["hrmedseg_b", "unet_resnet34"])
    parser.add_argument("--recipe", type=Path, help="training config (YAML); default: hrmedseg train's")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--patience", type=int,
        help="train until validation Dice has not improved for this many epochs (--epochs: the most)",
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, help="also compare at this equal wall-clock budget")
    parser.add_argument(
        "--tile", action="store_true", help="score the test split by sliding windows at original resolution"
    )
    parser.add_argument(
        "--tta", choices=["none", "hflip", "flips"], default="none", help="test-time flips when scoring"
    )
    parser.add_argument(
        "--input-scale", choices=("resized", "native"),
        help="native: train on windows at the images' own resolution, validate and score tiled",
    )  # fmt: skip
    parser.add_argument("--val-every", type=int, default=1, help="validate every N epochs and after the last")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path("runs/accuracy_vs_unet"))
    parser.add_argument(
        "--resume", action="store_true", help="continue each model's run from its state in --output"
    )
    args = parser.parse_args()
    if args.resume and args.minutes:
        parser.error(
            "--resume cannot be combined with --minutes (equal time needs every improvement's weights)"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the per-epoch lines

    equal_epochs, equal_time = [], []
    for data in args.data:
        for name in args.models:
            output = args.output / data.name / name
            row = train_and_test(name, data, args, epochs=args.epochs, output=output, patience=args.patience)
            row["train_gb_per_image"] = training_memory_per_image(
                name, args.img_size, args.device, row["model_options"]
            )
            equal_epochs.append(row)
            trained = row.pop("trained_weights", None)
            if trained is not None:  # a second row: the same run without its weight average
                equal_epochs.append({**row, **trained, "model": f"{name} (trained weights, no average)"})
            if args.minutes:
                timed = row.pop("budget", None)
                if timed is None:
                    fits = budget_epochs(args.minutes, row["epoch_seconds"])
                    timed = train_and_test(
                        name, data, args, epochs=fits, output=output.with_name(f"{name}_{args.minutes:g}min")
                    )
                equal_time.append({**timed, "train_gb_per_image": row["train_gb_per_image"]})
            results = {"equal_epochs": equal_epochs, "equal_time": equal_time, "minutes": args.minutes}
            (args.output / "results.json").write_text(json.dumps(results, indent=2))
    recipe = args.recipe or "hrmedseg train's default recipe"
    length = (
        f"until {args.patience} epochs without a better val Dice (at most {args.epochs})"
        if args.patience
        else f"{args.epochs} epochs"
    )
    tiled = args.tile or args.input_scale == "native"  # a native model's Segmenter tiles
    scoring = f"test scored {'tiled' if tiled else 'resized'}, test-time flips: {args.tta}"
    print_table(
        f"Equal epochs: {args.img_size}², {length}, batch {args.batch_size}, {recipe}; {scoring}",
        equal_epochs,
    )
    if args.minutes:
        print_table(f"Equal time: {args.minutes:g} minutes of training and validation per model", equal_time)


if __name__ == "__main__":
    main()
