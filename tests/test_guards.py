"""A diverged run stops with a clear error and keeps its last good checkpoint; --clip-grad."""

import hashlib
import math

import pytest
import torch
import yaml
from torch import nn

from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.losses import SegmentationLoss
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import train
from hrmedseg.training.guards import TrainingDivergedError, check_finite_state, optimizer_step

TINY = {"model": "hrmedseg_t", "img_size": 64, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("guards"), num_images=16, size_range=(60, 90))


class InfiniteGradient(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (a finite loss with a broken backward)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def poison_training_loss(monkeypatch, at_call: int, kind: str) -> None:
    """From the ``at_call``-th training step on (1-based), the loss is NaN or has an infinite
    gradient. Validation (no grad) is left alone."""
    original = SegmentationLoss.forward
    calls = {"n": 0}

    def forward(self, logits, target):
        loss = original(self, logits, target)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= at_call:
                return loss * float("nan") if kind == "nan" else InfiniteGradient.apply(loss)
        return loss

    monkeypatch.setattr(SegmentationLoss, "forward", forward)


def digests(run):
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in ("last.pt", "best.safetensors")}


def steps_per_epoch(data) -> int:
    from hrmedseg.data import find_dataset

    return len(find_dataset(data).split["train"]) // TINY["batch_size"]


@pytest.mark.parametrize("kind,what", [("nan", "training loss became nan"), ("inf", "gradient norm became")])
def test_divergence_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path, data, monkeypatch, kind, what
):
    steps = steps_per_epoch(data)
    run = tmp_path / "run"
    config = TrainConfig(data=str(data), output=str(run), epochs=4, **TINY)
    saved = {}

    def remember(epoch, row):
        saved[epoch] = digests(run)

    poison_training_loss(monkeypatch, at_call=2 * steps + 2, kind=kind)  # epoch 3, step 2
    with pytest.raises(TrainingDivergedError) as caught:
        train(config, progress=False, on_epoch_end=remember)
    message = str(caught.value)
    assert f"{what}" in message and f"at epoch 3, step 2 of {steps}" in message
    assert "hold epoch 2, the last good one" in message
    assert f"hrmedseg train --resume --output {run} --clip-grad" in message
    assert digests(run) == saved[2]  # nothing of the diverged epoch was written
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2

    monkeypatch.undo()
    assert cli_main(["train", "--resume", "--output", str(run), "--clip-grad", "1.0", "--quiet"]) == 0
    changes = yaml.safe_load((run / "resume_changes.yaml").read_text())
    assert changes == [{"after_epoch": 2, "changes": {"clip_grad": [None, 1.0]}}]
    assert len((run / "log.csv").read_text().splitlines()) == 1 + 4


def test_divergence_in_the_first_epoch_says_to_start_over(tmp_path, data, monkeypatch, capsys):
    poison_training_loss(monkeypatch, at_call=1, kind="nan")
    args = ["train", "--data", str(data), "--output", str(tmp_path / "run"), "--model", "hrmedseg_t",
            "--img-size", "64", "--batch-size", "4", "--num-workers", "0", "--epochs", "2",
            "--quiet"]  # fmt: skip
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "at epoch 1, step 1 of" in err and "nothing was saved" in err and "--overwrite" in err
    assert (
        not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.safetensors").exists()
    )


def linear_with_gradient(grad: float) -> tuple[nn.Linear, torch.optim.Optimizer]:
    layer = nn.Linear(4, 1, bias=False)
    nn.init.zeros_(layer.weight)
    layer.weight.grad = torch.full_like(layer.weight, grad)
    return layer, torch.optim.SGD(layer.parameters(), lr=1.0)


def test_clip_grad_caps_the_total_norm_and_reports_the_norm_before_clipping():
    layer, optimizer = linear_with_gradient(5.0)  # norm 10
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert optimizer_step(optimizer, scaler, clip_grad=1.0, epoch=1, step=0, steps=1) == pytest.approx(10.0)
    assert layer.weight.norm().item() == pytest.approx(1.0, rel=1e-5)  # an SGD step of the clipped gradient

    layer, optimizer = linear_with_gradient(5.0)
    assert optimizer_step(optimizer, scaler, clip_grad=None, epoch=1, step=0, steps=1) == pytest.approx(10.0)
    assert layer.weight.norm().item() == pytest.approx(10.0)  # unclipped by default


def test_an_infinite_gradient_leaves_the_weights_untouched():
    layer, optimizer = linear_with_gradient(float("inf"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(TrainingDivergedError, match="gradient norm became inf at epoch 3, step 5 of 9"):
        optimizer_step(optimizer, scaler, clip_grad=None, epoch=3, step=4, steps=9)
    assert torch.equal(layer.weight, torch.zeros_like(layer.weight))


def test_non_finite_weights_or_statistics_are_named():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    check_finite_state(model, epoch=1)
    model[1].running_var[0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"1\.running_var after epoch 4"):
        check_finite_state(model, epoch=4)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_clip_grad_must_be_positive(value):
    with pytest.raises(ValueError, match="clip_grad must be a positive"):
        TrainConfig(data="d", output="o", clip_grad=value)


class DotLoss(nn.Module):
    """loss = sum(w · x): the gradient of a batch is the sum of its inputs, whatever w is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, images, targets):
        return (images * self.w).sum(), None


@pytest.mark.parametrize("accumulate", [1, 2])
def test_each_epoch_reports_the_median_and_largest_gradient_norm_of_its_steps(accumulate):
    from hrmedseg.training.loop import train_one_epoch

    inputs = [[3.0, 0.0], [0.0, 4.0], [60.0, 80.0], [1.0, 0.0]]  # norms 3, 4, 100, 1
    loader = [{"image": torch.tensor([x]), "mask": torch.zeros(1)} for x in inputs]
    objective = DotLoss()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = train_one_epoch(
        objective, loader, optimizer, scaler=scaler, accumulate=accumulate, device=torch.device("cpu"),
        show_progress=False,
    )  # fmt: skip
    if accumulate == 1:
        assert (stats.grad_norm, stats.grad_norm_max) == pytest.approx((3.5, 100.0))
    else:  # each step's gradient is the mean of two: |(3, 4)| / 2 and |(61, 80)| / 2
        second = math.hypot(61, 80) / 2
        assert (stats.grad_norm, stats.grad_norm_max) == pytest.approx(((2.5 + second) / 2, second))
    assert stats.loss == pytest.approx(0.0)  # w stayed at zero


def test_an_overflowed_fp16_step_is_left_out_of_the_gradient_norms():
    from hrmedseg.training.loop import EpochStats

    stats = EpochStats.of(0.5, [1.0, float("inf"), 3.0])
    assert (stats.grad_norm, stats.grad_norm_max) == (2.0, 3.0)
    empty = EpochStats.of(0.5, [float("inf")])
    assert math.isnan(empty.grad_norm) and math.isnan(empty.grad_norm_max)
