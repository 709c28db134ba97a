"""Ensembles of automatic models: the mean of their logits, resized and tiled, with flips; the
command line's several --checkpoint files; members that cannot be averaged are refused."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import hrmedseg
from hrmedseg import Segmenter
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.errors import ConfigError
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.tiling import Tiling


def members(num_classes=1, seeds=(0, 1, 2), **options):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(
            hrmedseg.create_model("hrmedseg_t", num_classes=num_classes, img_size=64, **options).eval()
        )
    return models


def logit(probs):
    return np.log(probs) - np.log1p(-probs)


@pytest.mark.parametrize("tiling", [None, Tiling(0.5)])
def test_ensemble_probabilities_are_those_of_the_mean_logits(tiling):
    """Resizing and window blending are linear in the logits, so each member's own probabilities
    give the ensemble's: sigmoid of the mean logit (multi-class: softmax of the mean)."""
    image = np.random.default_rng(0).random((90, 130, 3)).astype(np.float32)
    models = members()
    ensemble = Segmenter(models, "cpu", tiling=tiling, tta="hflip")
    (ours,) = ensemble.iter_probabilities([image])
    singles = [
        next(Segmenter(m, "cpu", tiling=tiling, tta="hflip").iter_probabilities([image])) for m in models
    ]
    expected = 1 / (1 + np.exp(-np.mean([logit(p.astype(np.float64)) for p in singles], axis=0)))
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert not np.allclose(ours, singles[0], atol=1e-3)  # the members differ

    three = members(num_classes=3, seeds=(3, 4))
    (ours,) = Segmenter(three, "cpu", tiling=tiling).iter_probabilities([image])
    log_probs = [np.log(next(Segmenter(m, "cpu", tiling=tiling).iter_probabilities([image]))) for m in three]
    mean = np.mean(log_probs, axis=0)  # log-softmax differs from the logits by a constant per pixel
    expected = np.exp(mean) / np.exp(mean).sum(0, keepdims=True)
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_members_must_share_the_input_contract():
    binary, three = members(seeds=(0,))[0], members(num_classes=3, seeds=(1,))[0]
    with pytest.raises(
        ConfigError, match=r"ensemble models differ in num_classes: 1 \(model 0, hrmedseg_t\)"
    ):
        Segmenter([binary, three], "cpu")
    native = members(seeds=(2,), input_scale="native")[0]
    with pytest.raises(ConfigError, match="differ in input_scale: resized"):
        Segmenter([binary, native], "cpu")
    torch.manual_seed(0)
    other_size = hrmedseg.create_model("hrmedseg_t", img_size=96)
    with pytest.raises(ConfigError, match=r"differ in img_size: \(64, 64\)"):
        Segmenter([binary, other_size], "cpu")
    with pytest.raises(ConfigError, match="at least one model"):
        Segmenter([], "cpu")


def test_command_line_ensembles_predict_and_evaluate(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_images=6, size_range=(50, 80))
    paths = [hrmedseg.save_model(m, tmp_path / f"m{i}.safetensors") for i, m in enumerate(members())]
    checkpoints = [str(p) for p in paths]
    assert cli_main(["predict", "--checkpoint", *checkpoints, "--input", str(data / "images"),
                     "--output", str(tmp_path / "pred"), "--quiet"]) == 0  # fmt: skip
    ensemble = Segmenter.from_checkpoint(paths, "cpu")
    for image in sorted((data / "images").iterdir()):
        written = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}.png")) > 0
        np.testing.assert_array_equal(written, ensemble.predict(image) > 0)

    argv = ["evaluate", "--data", str(data), "--split", "all", "--quiet"]
    assert cli_main([*argv, "--checkpoint", *checkpoints, "--output", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["checkpoint"] == checkpoints
    assert "the ensemble of `" in (tmp_path / "ev" / "summary.md").read_text()
    expected = evaluate(ensemble, data, tmp_path / "api", split="all", progress=False)
    assert summary["mean"]["dice"] == expected["mean"]["dice"]

    sam = hrmedseg.save_model(
        hrmedseg.create_model("hrmedseg_sam_t", img_size=64), tmp_path / "sam.safetensors"
    )
    for command in (
        [*argv, "--checkpoint", checkpoints[0], str(sam), "--output", str(tmp_path / "x")],
        ["predict", "--checkpoint", checkpoints[0], str(sam), "--input", str(data / "images"),
         "--output", str(tmp_path / "y")],
    ):  # fmt: skip
        capsys.readouterr()
        assert cli_main(command) == 2
        assert f"an ensemble is of automatic models; {sam} segment prompts" in capsys.readouterr().err
