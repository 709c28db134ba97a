"""Optimisers and learning-rate schedules of the training recipes."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import hrmedseg
from hrmedseg.training.config import TrainConfig, load_config
from hrmedseg.training.optim import build_optimizer, build_scheduler, lr_multiplier


def lrs_over(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_exponential_schedule_per_step_equals_exponentiallr_per_epoch():
    steps_per_epoch, epochs = 7, 4
    a = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ours = lrs_over(
        build_scheduler(a, "exponential", steps_per_epoch=steps_per_epoch, epochs=epochs, lr_gamma=0.9), a, 28
    )
    b = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.ExponentialLR(b, gamma=0.9)
    expected = []
    for _ in range(epochs):
        expected += [b.param_groups[0]["lr"]] * steps_per_epoch
        b.step()
        reference.step()
    assert ours == pytest.approx(expected)


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    factor = lr_multiplier("cosine", steps_per_epoch=10, epochs=10, warmup=0.1, min_lr_ratio=0.01)
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(1.0)
    midway = 10 + (99 - 10) / 2
    assert factor(midway) == pytest.approx(0.01 + 0.99 * 0.5)
    assert factor(99) == pytest.approx(0.01)  # the last step
    values = [factor(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_adamw_decays_weights_but_not_biases_or_norms():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and [p.ndim for p in decayed["params"]] == [2]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3
    assert isinstance(build_optimizer(model, "adam", lr=1e-3, weight_decay=0.0), torch.optim.Adam)


@pytest.mark.parametrize(
    "field,value,message",
    [("optimizer", "sgd", "optimizer must be one of"), ("schedule", "step", "schedule must be one of"),
     ("warmup", 1.0, "warmup must be in"), ("min_lr_ratio", -0.1, "min_lr_ratio in")],
)  # fmt: skip
def test_recipe_fields_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data="d", output="o", **{field: value})


def test_scheduler_state_resumes_mid_schedule():
    def fresh():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, build_scheduler(opt, "cosine", steps_per_epoch=5, epochs=4, warmup=0.1)

    opt, sched = fresh()
    lrs_over(sched, opt, 7)
    opt2, sched2 = fresh()  # a resumed run loads both states, as Optimisation.resume does
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert lrs_over(sched2, opt2, 13) == pytest.approx(lrs_over(sched, opt, 13))
    assert not math.isnan(opt2.param_groups[0]["lr"])


REPO = Path(__file__).resolve().parents[1]


def test_paper_config_pins_the_papers_recipe_whatever_the_defaults():
    config = load_config(REPO / "configs" / "paper.yaml", data="d", output="o")
    assert (config.optimizer, config.lr, config.weight_decay) == ("adam", 1e-3, 0.0)
    assert (config.schedule, config.lr_gamma, config.batch_size, config.epochs) == (
        "exponential",
        0.98,
        16,
        200,
    )
    assert config.model_options == {"drop_path_rate": 0.1}
    assert config.augmentation().hflip == 0.1 and tuple(config.augmentation().crop_scale) == (1.0, 1.0)


def test_the_default_recipe_is_the_recipe_study_winner():
    # docs/benchmarks.md, "Recipe study": the defaults must stay what was measured.
    winner = yaml.safe_load((REPO / "benchmarks" / "recipes" / "adamw_cosine_lr2e-3.yaml").read_text())
    defaults = TrainConfig()
    for field in ("optimizer", "lr", "weight_decay", "schedule", "warmup"):
        assert getattr(defaults, field) == winner[field], field
    assert (
        hrmedseg.create_model("hrmedseg_b").config.drop_path_rate == winner["model_options"]["drop_path_rate"]
    )
