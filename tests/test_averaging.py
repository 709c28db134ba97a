"""The weight average (``ema_decay``): its formula in fp64, that it leaves the trained weights'
path alone, that the model files hold what validation scored, and that a killed run resumes it
exactly."""

import pytest
import torch
from helpers import run_until_crash
from safetensors.torch import load_file
from torch import nn

import hrmedseg
from hrmedseg.cli import main as cli_main
from hrmedseg.data import find_dataset
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.errors import CheckpointError, ConfigError
from hrmedseg.training.averaging import WeightAverage
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import make_loaders, make_objective, train, validate
from hrmedseg.training.harness import Distributed, Optimisation
from hrmedseg.training.run_folder import stored_split

TINY = {"model": "hrmedseg_t", "img_size": 64, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ema"), num_images=16, size_range=(60, 90))


def tied_model() -> nn.Module:
    """An embedding and an output layer sharing one weight, and a norm with an integer buffer."""
    embed, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    head.weight = embed.weight
    return nn.Sequential(embed, nn.BatchNorm1d(3), head).double()


def test_the_average_follows_its_formula_and_averages_a_shared_weight_once():
    torch.manual_seed(0)
    model = tied_model()
    average = WeightAverage(model, decay=0.8)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(6):
        with torch.no_grad():  # a stand-in for an optimiser step and a forward pass in training
            for tensor in (*model.parameters(), model[1].running_mean, model[1].running_var):
                tensor.add_(torch.randn_like(tensor))
            model[1].num_batches_tracked += 1
        decay = min(0.8, (1 + t) / (10 + t))  # the ramp: 0.1, 0.18, 0.25, ... then 0.8
        for key, value in model.state_dict().items():
            expected[key] = (
                decay * expected[key] + (1 - decay) * value if value.is_floating_point() else value
            )
        average.update(model)
    assert average.updates == 6
    for key, value in average.module.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-12, msg=key)
    assert average.module[0].weight is average.module[2].weight  # still shared in the copy
    assert not any(p.requires_grad for p in average.module.parameters())
    assert not average.module.training


def test_an_averaged_run_trains_the_same_weights_and_validates_and_saves_the_average(tmp_path, data):
    base = {"data": str(data), "epochs": 2, **TINY}
    train(TrainConfig(output=str(tmp_path / "plain"), **base), progress=False)
    averaged = TrainConfig(output=str(tmp_path / "ema"), ema_decay=0.9, **base)
    result = train(averaged, progress=False)

    plain, state = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("plain", "ema"))
    for key, value in plain["model"].items():  # the average draws no random numbers, steers nothing
        assert torch.equal(state["model"][key], value), key
    assert state["average"]["updates"] == state["scheduler"]["last_epoch"] > 0  # one per optimiser step
    last = load_file(str(tmp_path / "ema" / "last.safetensors"))
    assert all(torch.equal(last[k], v) for k, v in state["average"]["weights"].items())
    assert any(not torch.equal(last[k], v) for k, v in state["model"].items())

    # best.safetensors scores the best logged validation Dice: what was saved is what was validated.
    model = hrmedseg.load_model(result["best"])
    index = find_dataset(data)
    split = stored_split(tmp_path / "ema")
    _, _, _, val_loader = make_loaders(
        averaged, index.subset(split["train"]), index.subset(split["val"]),
        pixel_mean=model.config.pixel_mean, pixel_std=model.config.pixel_std,
    )  # fmt: skip
    scores = validate(make_objective(model, averaged, None), val_loader, torch.device("cpu"))
    assert scores["val_dice"] == pytest.approx(result["best_dice"], abs=1e-6)


def test_a_killed_averaged_run_resumes_to_the_same_average(tmp_path, data):
    base = {"data": str(data), "epochs": 3, "ema_decay": 0.9, **TINY}
    train(TrainConfig(output=str(tmp_path / "straight"), **base), progress=False)
    run_until_crash(train, TrainConfig(output=str(tmp_path / "resumed"), **base), progress=False)
    train(TrainConfig(output=str(tmp_path / "resumed"), **base), resume=True, progress=False)
    for name in ("last.safetensors", "best.safetensors"):
        straight, resumed = (load_file(str(tmp_path / run / name)) for run in ("straight", "resumed"))
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name


def test_bad_decays_and_a_state_without_an_average_are_refused(tmp_path, data, capsys):
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match=r"ema_decay must be in \(0, 1\)"):
            TrainConfig(ema_decay=decay)
    assert cli_main(["train", "--data", str(data), "--output", str(tmp_path / "x"), "--ema-decay", "1"]) == 2
    assert "ema_decay must be in (0, 1)" in capsys.readouterr().err

    train(TrainConfig(data=str(data), output=str(tmp_path / "plain"), epochs=1, **TINY), progress=False)
    model = hrmedseg.create_model("hrmedseg_t", img_size=64)
    optimizer = torch.optim.AdamW(model.parameters())
    optimisation = Optimisation(
        model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        torch.amp.GradScaler("cpu", enabled=False), WeightAverage(model, 0.9),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="last.pt: holds no weight average"):
        optimisation.resume(tmp_path / "plain" / "last.pt", Distributed())


def test_a_promptable_run_averages_the_same_way(tmp_path, data):
    """The average is validated through its own prompted objective: each object's Dice picks the
    best, and the trained weights' path is that of a run without it."""
    base = {"data": str(data), "epochs": 2, **TINY, "model": "hrmedseg_sam_t"}
    train(TrainConfig(output=str(tmp_path / "plain"), **base), progress=False)
    result = train(TrainConfig(output=str(tmp_path / "ema"), ema_decay=0.9, **base), progress=False)
    plain, state = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("plain", "ema"))
    assert all(torch.equal(state["model"][k], v) for k, v in plain["model"].items())
    last = load_file(str(tmp_path / "ema" / "last.safetensors"))
    assert all(torch.equal(last[k], v) for k, v in state["average"]["weights"].items())
    assert 0 <= result["best_object_dice"] <= 1
