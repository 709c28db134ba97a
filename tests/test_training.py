"""Training: binary and multi-class runs, outputs, resume equivalence, encoder init and DDP."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import run_until_crash
from safetensors.torch import load_file

import hrmedseg
from hrmedseg.cli import main as cli_main
from hrmedseg.data import make_split
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.training.config import TrainConfig, load_config
from hrmedseg.training.engine import train
from hrmedseg.training.run_log import read_log

TINY = {"model": "hrmedseg_t", "img_size": 64, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def binary_data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("binary"), num_images=16, size_range=(60, 90))


@pytest.mark.parametrize("num_classes", [1, 3])
def test_training_lowers_the_loss_and_writes_every_output(tmp_path, num_classes):
    data = make_synthetic_dataset(
        tmp_path / "data", num_images=16, num_classes=num_classes, size_range=(60, 90)
    )
    run = tmp_path / "run"
    config = TrainConfig(data=str(data), output=str(run), num_classes=num_classes, epochs=4, lr=3e-3, **TINY)
    result = train(config, progress=False)
    for name in (
        "config.yaml",
        "split.json",
        "log.csv",
        "curves.png",
        "last.pt",
        "last.safetensors",
        "best.safetensors",
    ):
        assert (run / name).is_file(), name
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 5
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert losses[-1] < losses[0]
    for row in read_log(run / "log.csv"):
        assert 0 < row["grad_norm"] <= row["grad_norm_max"] < math.inf
    model = hrmedseg.load_model(result["best"])
    assert model.num_classes == num_classes and model.config.img_size == (64, 64)
    assert load_config(run / "config.yaml").num_classes == num_classes


def test_split_is_generated_and_written_when_the_folder_has_none(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_images=12, with_split=False)
    train(TrainConfig(data=str(data), output=str(tmp_path / "run"), epochs=1, **TINY), progress=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    stems = sorted(p.stem for p in (data / "images").iterdir())
    assert [len(split[k]) for k in ("train", "val", "test")] == [8, 1, 3]  # 70/10/20 of 12, rounded
    assert sorted(split["train"] + split["val"] + split["test"]) == stems  # each case once
    again = make_split(stems, seed=0)
    assert again == split  # seeded: the same split on every run


RECIPES = {
    "paper": {"optimizer": "adam", "schedule": "exponential"},
    "adamw_cosine": {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", "warmup": 0.2},
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_resume_after_a_crash_ends_with_identical_weights(tmp_path, binary_data, recipe):
    base = {"data": str(binary_data), "epochs": 3, **RECIPES[recipe], **TINY}
    train(TrainConfig(output=str(tmp_path / "straight"), **base), progress=False)

    run_until_crash(train, TrainConfig(output=str(tmp_path / "resumed"), **base), progress=False)
    train(TrainConfig(output=str(tmp_path / "resumed"), **base), resume=True, progress=False)

    straight = load_file(str(tmp_path / "straight" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [line.split(",")[0] for line in (tmp_path / "resumed" / "log.csv").read_text().splitlines()] == [
        "epoch", "1", "2", "3",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(output=str(tmp_path / "resumed"), **base), progress=False)


def test_validating_every_second_epoch_logs_blanks_keeps_the_best_and_resumes_exactly(tmp_path, binary_data):
    """--val-every 2 over 5 epochs validates after epochs 2, 4 and 5 (the last); only those can
    be the best, the log leaves the others' validation cells empty, and a crash after an epoch
    without validation resumes to the weights of an uninterrupted run."""
    base = {"data": str(binary_data), "epochs": 5, "val_every": 2, **TINY}
    result = train(TrainConfig(output=str(tmp_path / "straight"), **base), progress=False)
    rows = list(csv.DictReader((tmp_path / "straight" / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [bool(r["val_dice"]) for r in rows] == [False, True, False, True, True]
    assert result["best_dice"] == max(float(r["val_dice"]) for r in rows if r["val_dice"])
    assert (tmp_path / "straight" / "curves.png").is_file()

    resumed = TrainConfig(output=str(tmp_path / "resumed"), **base)
    run_until_crash(train, resumed, after_epoch=3, progress=False)
    train(TrainConfig(output=str(tmp_path / "resumed"), **base), resume=True, progress=False)
    for name in ("last.safetensors", "best.safetensors"):
        straight, resumed = (load_file(str(tmp_path / run / name)) for run in ("straight", "resumed"))
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name
    assert (tmp_path / "resumed" / "log.csv").read_text().count("\n") == 6

    with pytest.raises(ValueError, match="val_every must be >= 1"):
        TrainConfig(output=str(tmp_path / "bad"), **{**base, "val_every": 0})


@pytest.mark.parametrize("settings", [{"val_every": 3}, {"num_workers": 1}])
def test_the_trained_weights_depend_on_the_seed_not_on_how_often_or_how_data_is_loaded(
    tmp_path, binary_data, settings
):
    """Validation and the data loaders draw no numbers from the stream the model's stochastic
    layers (drop path) use, so validating less often or loading in a worker process changes
    nothing in training; a different seed does change it."""
    base = {"data": str(binary_data), "epochs": 3, **TINY}
    weights = {}
    for name, config in {
        "reference": base,
        "changed": {**base, **settings},
        "other_seed": {**base, "seed": 1},
    }.items():
        train(TrainConfig(output=str(tmp_path / name), **config), progress=False)
        weights[name] = load_file(str(tmp_path / name / "last.safetensors"))
    reference = weights["reference"]
    assert all(torch.equal(reference[k], weights["changed"][k]) for k in reference)
    assert not all(torch.equal(reference[k], weights["other_seed"][k]) for k in reference)


def test_init_encoder_loads_weights_and_rejects_other_sizes(tmp_path, binary_data):
    source = hrmedseg.create_model("hrmedseg_t", img_size=64)
    hrmedseg.save_model(source, tmp_path / "encoder.safetensors")
    config = TrainConfig(data=str(binary_data), output=str(tmp_path / "run"), epochs=1, lr=0.0, **TINY)
    config.init_encoder = str(tmp_path / "encoder.safetensors")
    config.model_options = {"drop_path_rate": 0.0}
    train(config, progress=False)
    trained = load_file(str(tmp_path / "run" / "last.safetensors"))
    # lr 0: the encoder's weights are still exactly the loaded ones
    for key, value in source.image_encoder.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(trained[f"image_encoder.{key}"], value), key

    config.model, config.output = "hrmedseg_s", str(tmp_path / "run_s")
    with pytest.raises(
        ValueError, match="hrmedseg_t encoder \\(C=24\\); it does not fit hrmedseg_s \\(C=48\\)"
    ):
        train(config, progress=False)


def test_cli_train_errors_are_clear(tmp_path, capsys):
    code = cli_main(
        ["train", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--quiet"]
    )
    assert code == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert cli_main(["train", "--resume", "--output", str(tmp_path / "nothing")]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model,port", [("hrmedseg_t", 29533), ("hrmedseg_sam_t", 29534)])
def test_ddp_on_gloo_with_two_processes(tmp_path, binary_data, model, port):
    output = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
        "-m", "hrmedseg.cli", "train", "--data", str(binary_data), "--output", str(output),
        "--model", model, "--img-size", "64", "--epochs", "2", "--batch-size", "4",
        "--num-workers", "0", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((output / "log.csv").read_text().splitlines()) == 3
    hrmedseg.load_model(output / "best.safetensors")


@pytest.mark.slow
def test_ddp_resume_ends_with_the_same_weights_as_an_uninterrupted_ddp_run(tmp_path, binary_data):
    """Prompted training draws prompts from each rank's RNG, so each rank's stream must resume.
    The schedule is the paper's, whose rate does not depend on the run's length: a cosine run
    extended by a resume decays over the new total (its own test below)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optimizer: adam\nschedule: exponential\n")

    def run(output, epochs, resume=False):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29535",
            "-m", "hrmedseg.cli", "train", "--config", str(recipe),
            "--data", str(binary_data), "--output", str(output),
            "--model", "hrmedseg_sam_t", "--img-size", "64", "--epochs", str(epochs), "--batch-size", "4",
            "--num-workers", "0", "--device", "cpu", "--quiet", *(["--resume"] if resume else []),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]

    run(tmp_path / "full", 2)
    run(tmp_path / "part", 1)
    run(tmp_path / "part", 2, resume=True)
    a = load_file(tmp_path / "full" / "last.safetensors")
    b = load_file(tmp_path / "part" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_checkpointed_accumulated_training_runs(tmp_path, binary_data):
    config = TrainConfig(data=str(binary_data), output=str(tmp_path / "run"), epochs=1, **TINY)
    config.amp, config.grad_checkpointing, config.accumulate = "bf16", True, 2
    result = train(config, progress=False)
    assert 0.0 <= result["last"]["val_dice"] <= 1.0
    assert result["last"]["train_loss"] == result["last"]["train_loss"]  # not NaN


def test_empty_split_is_an_error_before_training(tmp_path, binary_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(binary_data, data)
    (data / "split.json").write_text('{"train": ["case_000"], "val": [], "test": ["case_001"]}')
    with pytest.raises(ValueError, match="the 'val' split is empty"):
        train(TrainConfig(data=str(data), output=str(tmp_path / "run"), epochs=1, **TINY), progress=False)
    with pytest.raises(ValueError, match="amp fp16 needs a CUDA device"):
        train(TrainConfig(data=str(binary_data), output=str(tmp_path / "r"), epochs=1, amp="fp16", **TINY))


def test_extending_a_cosine_run_says_so_and_decays_over_the_new_total(tmp_path, binary_data, caplog):
    base = {"data": str(binary_data), "output": str(tmp_path / "run"), "schedule": "cosine", **TINY}
    train(TrainConfig(epochs=1, **base), progress=False)
    with caplog.at_level("WARNING", logger="hrmedseg"):
        train(TrainConfig(epochs=3, **base), resume=True, progress=False)
    assert "cosine schedule now spans 3 epochs instead of 1" in caplog.text
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    lrs = [float(row.split(",")[1]) for row in rows]
    assert len(lrs) == 3 and lrs[1] > lrs[2] > 0  # decaying again, towards the new end


def test_tensorboard_mirrors_the_log_and_a_resume_replaces_the_crashed_epochs(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from hrmedseg.training.run_log import RunLogger, read_log

    def row(epoch, dice):
        return {"epoch": epoch, "lr": 1e-3, "train_loss": 1.0, "val_loss": 1.0, "val_dice": dice,
                "val_iou": dice / 2, "epoch_seconds": 1.0}  # fmt: skip

    crashed = RunLogger(tmp_path)
    for epoch in (1, 2, 3):  # epochs 2 and 3 were logged, but only epoch 1's state was saved
        crashed.log(row(epoch, 0.1 * epoch))
    crashed.close()
    resumed = RunLogger(tmp_path, completed_epochs=1)
    for epoch in (2, 3):
        resumed.log(row(epoch, 0.5 + 0.1 * epoch))
    resumed.close()

    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    dice = [(e.step, round(e.value, 6)) for e in events.Scalars("val_dice")]
    assert dice == [(1, 0.1), (2, 0.7), (3, 0.8)]
    assert [(r["epoch"], round(r["val_dice"], 6)) for r in read_log(tmp_path / "log.csv")] == dice


def test_a_run_logged_before_the_gradient_norms_resumes_and_plots(tmp_path):
    from hrmedseg.training.run_log import RunLogger, plot_curves, read_log

    old = "epoch,lr,train_loss,val_loss,val_dice,val_iou,epoch_seconds\n1,0.001,0.9,0.8,0.3,0.2,1.0\n"
    (tmp_path / "log.csv").write_text(old)
    logger = RunLogger(tmp_path, completed_epochs=1)
    logger.log({"epoch": 2, "lr": 1e-3, "train_loss": 0.7, "grad_norm": 2.0, "grad_norm_max": 9.0,
                "val_loss": 0.6, "val_dice": 0.5, "val_iou": 0.4, "epoch_seconds": 1.0})  # fmt: skip
    logger.close()
    rows = read_log(tmp_path / "log.csv")
    assert [r["train_loss"] for r in rows] == [0.9, 0.7] and rows[1]["grad_norm_max"] == 9.0
    assert math.isnan(rows[0]["grad_norm"])  # the old epoch keeps its row, without norms
    assert plot_curves(tmp_path / "log.csv", tmp_path / "curves.png").stat().st_size > 0
