"""Every benchmark script starts and explains itself: ``--help`` exits 0 with its usage, so a
renamed import or option shows here rather than on the day someone measures."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def test_the_benchmarks_are_found():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_script_prints_its_help(script, monkeypatch, capsys):
    # In this process, as `python benchmarks/<script> --help` would run it (benchmarks/ on the
    # path): a subprocess per script would spend its time importing PyTorch again.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_trace_auc_matches_counting_every_pair(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from training_trace import auc

    rng = np.random.default_rng(0)
    scores, labels = rng.random(300), rng.random(300) < 0.2
    pairs = (scores[labels][:, None] > scores[~labels][None, :]).mean()
    assert auc(scores, labels) == pytest.approx(pairs, abs=1e-12)


def test_the_accuracy_benchmark_keeps_a_model_file_the_commands_read(tmp_path, monkeypatch):
    import argparse

    import torch

    import hrmedseg
    from hrmedseg.data.synthetic import make_synthetic_dataset

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from accuracy_vs_unet import test_scores

    data = make_synthetic_dataset(tmp_path / "data", num_images=6, size_range=(48, 64))
    model = hrmedseg.create_model("hrmedseg_t", img_size=32).eval()
    args = argparse.Namespace(tile=False, tta="none", device="cpu")
    scores = test_scores(model, data, args, tmp_path / "test")
    assert set(scores) == {"dice", "iou", "hd95"}
    kept = hrmedseg.load_model(tmp_path / "test" / "weights.safetensors")
    assert kept.config == model.config
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_a_killed_accuracy_run_resumes_exactly_where_it_stopped(tmp_path, monkeypatch, ema_decay):
    """Two epochs in one go, and the same run killed once its first epoch is saved and resumed:
    the same validation curve and the same best weights, bit for bit; with a recipe's weight
    average too, whose weights are then the ones scored, and whose trained weights' row is that of
    the same run without the average."""
    import argparse

    import torch

    import hrmedseg
    from hrmedseg.data.synthetic import make_synthetic_dataset

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import accuracy_vs_unet

    data = make_synthetic_dataset(tmp_path / "data", num_images=8, size_range=(40, 48))
    recipe = None
    if ema_decay is not None:
        recipe = tmp_path / "ema.yaml"
        recipe.write_text(f"ema_decay: {ema_decay}\n")
    args = argparse.Namespace(
        recipe=recipe, img_size=32, batch_size=2, num_workers=0, seed=0, input_scale=None,
        val_every=1 if ema_decay is None else 2,
        device="cpu", tile=False, tta="none", minutes=None, resume=False,
    )  # fmt: skip
    whole = accuracy_vs_unet.train_and_test("hrmedseg_t", data, args, epochs=2, output=tmp_path / "whole")

    save = accuracy_vs_unet.save_training_state

    def save_then_die(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(accuracy_vs_unet, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        accuracy_vs_unet.train_and_test("hrmedseg_t", data, args, epochs=2, output=tmp_path / "killed")
    monkeypatch.setattr(accuracy_vs_unet, "save_training_state", save)
    args.resume = True
    resumed = accuracy_vs_unet.train_and_test("hrmedseg_t", data, args, epochs=2, output=tmp_path / "killed")

    assert len(resumed["val_dice"]) == 2 and resumed["val_dice"] == whole["val_dice"]
    assert whole["training_config"]["augment"]["hflip"] == 0.5  # the default
    assert (
        whole["recipe_file"] == (recipe and str(recipe))
        and whole["training_config"]["ema_decay"] == ema_decay
    )
    if ema_decay is not None:  # validated after epoch 2 alone: the scored weights are its average
        state = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
        kept = hrmedseg.load_model(tmp_path / "whole" / "test" / "weights.safetensors").state_dict()
        assert whole["best_epoch"] == 2 and state["average"]["updates"] > 0
        assert all(torch.equal(kept[k], v) for k, v in state["average"]["weights"].items())
        assert not all(torch.equal(kept[k], v) for k, v in state["model"].items())
        # Its second row is the run without the average, validated and scored the same.
        assert resumed["trained_weights"] == whole["trained_weights"]
        plain_args = argparse.Namespace(**{**vars(args), "recipe": None, "resume": False})
        plain = accuracy_vs_unet.train_and_test(
            "hrmedseg_t", data, plain_args, epochs=2, output=tmp_path / "plain"
        )
        assert whole["trained_weights"]["val_dice"] == plain["val_dice"]
        assert whole["trained_weights"]["test"] == plain["test"]
    for curve in ("train_loss", "grad_norm_max"):  # the resumed run keeps the killed run's epoch
        assert len(resumed[curve]) == 2 and resumed[curve] == whole[curve]
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["test"] == whole["test"]
    ours, theirs = (
        hrmedseg.load_model(tmp_path / run / "test" / "weights.safetensors") for run in ("killed", "whole")
    )
    for name, tensor in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("model", ["hrmedseg_t", "hrmedseg_detail_deepstem_t"])
def test_the_memory_benchmark_runs_a_distillation_step(model, monkeypatch):
    import argparse

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from memory_speed import run_single

    args = argparse.Namespace(
        model=model, model_options="{}", device="cpu", mode="distill", size=64, batch=1,
        checkpointing=False, amp="none", compile="none", repeats=1,
    )  # fmt: skip
    result = run_single(args)
    assert result["mode"] == "distill" and result["seconds"] > 0 and result["peak_gb"] >= 0
