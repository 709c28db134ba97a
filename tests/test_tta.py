"""Test-time flips: the averaged prediction against the plain predictions of flipped images, and
the command-line flag (the ONNX path's flips are checked against PyTorch in test_onnx.py)."""

import json

import numpy as np
import pytest
import torch

import hrmedseg
from hrmedseg import Segmenter
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.errors import ConfigError
from hrmedseg.inference.segmenter_base import TTA_FLIPS
from hrmedseg.inference.tiling import Tiling

SIZE = 64
# Flips of an (H, W, C) image, named as the Segmenter names them.
IMAGE_FLIPS = {"hflip": [(1,)], "flips": [(1,), (0,), (0, 1)]}


def class_probabilities(probs: np.ndarray) -> np.ndarray:
    """(K, H, W) probabilities with the binary case written out as two classes (1 - p, p)."""
    return np.concatenate([1 - probs, probs]) if len(probs) == 1 else probs


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {k: hrmedseg.create_model("hrmedseg_t", num_classes=k, img_size=SIZE).eval() for k in (1, 3)}


@pytest.mark.parametrize("tta", ["hflip", "flips"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_flip_averaging_equals_the_geometric_mean_of_flipped_predictions(models, tta, num_classes):
    """Averaging logits over flips is, per pixel, the normalised geometric mean of the class
    probabilities of each flipped image's plain prediction, flipped back. The oracle only calls
    the plain Segmenter on flipped copies of the image (resizing commutes with flipping)."""
    image = np.random.default_rng(0).random((50, 70, 3), dtype=np.float32)
    plain = Segmenter(models[num_classes], "cpu")
    views = [((), image)] + [(axes, np.flip(image, axes).copy()) for axes in IMAGE_FLIPS[tta]]
    log_probs = [
        np.log(np.flip(class_probabilities(probs), tuple(a + 1 for a in axes)))
        for (axes, _), probs in zip(views, plain.iter_probabilities([v for _, v in views]), strict=True)
    ]
    geometric = np.exp(np.mean(log_probs, axis=0))
    expected = geometric / geometric.sum(0, keepdims=True)

    (averaged,) = Segmenter(models[num_classes], "cpu", tta=tta).iter_probabilities([image])
    assert averaged.shape == (num_classes, 50, 70)
    np.testing.assert_allclose(class_probabilities(averaged), expected, atol=1e-5)
    assert np.abs(class_probabilities(averaged) - np.exp(log_probs[0])).max() > 1e-3  # flips mattered


def test_flips_apply_to_each_window_when_tiled(models):
    """An image of exactly the model's size is one window: tiled and resized agree, flips included."""
    image = np.random.default_rng(1).random((SIZE, SIZE, 3), dtype=np.float32)
    tiled = Segmenter(models[1], "cpu", tiling=Tiling(), tta="flips").iter_probabilities([image])
    resized = Segmenter(models[1], "cpu", tta="flips").iter_probabilities([image])
    np.testing.assert_allclose(next(tiled), next(resized), atol=1e-5)


def test_unknown_tta_is_refused_with_the_choices(models):
    with pytest.raises(ConfigError, match=r"one of \['flips', 'hflip', 'none'\], got 'vflip'"):
        Segmenter(models[1], "cpu", tta="vflip")


def test_command_line_choices_are_the_segmenters(capsys):
    """The command line spells the choices out (it parses before importing PyTorch)."""
    for command in ("predict", "evaluate", "serve"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        assert "--tta {" + ",".join(TTA_FLIPS) + "}" in capsys.readouterr().out


def test_cli_tta_for_evaluate_and_predict(models, tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_images=6, size_range=(60, 80))
    checkpoint = hrmedseg.save_model(models[1], tmp_path / "m.safetensors")
    assert cli_main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "all",
                     "--output", str(tmp_path / "eval"), "--tta", "hflip", "--quiet"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["tta"] == "hflip"
    assert "(all: 6 cases; test-time flips: hflip)" in (tmp_path / "eval" / "summary.md").read_text()
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--input", str(data / "images"),
                     "--output", str(tmp_path / "pred"), "--tta", "flips", "--quiet"]) == 0  # fmt: skip
    assert len(list((tmp_path / "pred").glob("*.png"))) == 6

    sam = hrmedseg.save_model(
        hrmedseg.create_model("hrmedseg_sam_t", img_size=SIZE), tmp_path / "sam.safetensors"
    )
    capsys.readouterr()
    assert cli_main(["evaluate", "--checkpoint", str(sam), "--data", str(data), "--split", "all",
                     "--output", str(tmp_path / "eval_sam"), "--tta", "flips", "--quiet"]) == 2  # fmt: skip
    assert "test-time flips are for automatic models" in capsys.readouterr().err


def test_a_ready_segmenter_reports_its_own_tiling_and_flips(models, tmp_path):
    from hrmedseg.evaluation.evaluate import evaluate

    data = make_synthetic_dataset(tmp_path / "data", num_images=3, size_range=(60, 80))
    segmenter = Segmenter(models[1], "cpu", tiling=Tiling(overlap=0.5), tta="flips")
    summary = evaluate(segmenter, data, tmp_path / "eval", split="all", progress=False)
    assert summary["tiling"]["overlap"] == 0.5 and summary["tta"] == "flips"
    assert "(all: 3 cases; tiled; test-time flips: flips)" in (tmp_path / "eval" / "summary.md").read_text()
