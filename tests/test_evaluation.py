"""Metrics against MONAI and hand-computed cases; evaluate and predict end to end."""

import csv
import json

import numpy as np
import pytest
import torch
from helpers import scores_of_model_and_of_its_masks
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from PIL import Image
from scipy import ndimage

import hrmedseg
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.evaluation.metrics import DEFAULT_NSD_TOLERANCE, binary_metrics, case_metrics
from hrmedseg.inference.segmenter import Segmenter


def _blobs(rng, shape, iterations):
    return ndimage.binary_dilation(rng.random(shape) > 0.996, iterations=iterations)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.5)])
def test_metrics_match_monai(spacing):
    rng = np.random.default_rng(1)
    for _ in range(4):
        pred, truth = _blobs(rng, (70, 90), 6), _blobs(rng, (70, 90), 5)
        pred[:6, :12] = True  # an object touching the image border
        ours = binary_metrics(pred, truth, spacing=spacing)
        p, t = (torch.from_numpy(m)[None, None].float() for m in (pred, truth))
        hd95 = compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=spacing
        ).item()
        asd = compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=spacing
        ).item()
        assert ours["dice"] == pytest.approx(compute_dice(p, t, include_background=True).item(), rel=1e-6)
        assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-5)
        assert ours["asd_mm"] == pytest.approx(asd, rel=1e-5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.5)])
@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.0, 3.5])
def test_nsd_matches_monai(spacing, tolerance):
    """NSD counts surface pixels within the tolerance, as MONAI's compute_surface_dice does;
    whole-number tolerances put many distances exactly on the boundary (<= counts them)."""
    rng = np.random.default_rng(2)
    for _ in range(3):
        pred, truth = _blobs(rng, (60, 80), 5), _blobs(rng, (60, 80), 6)
        pred[-5:, -9:] = True
        p, t = (torch.from_numpy(np.stack([~m, m]))[None].float() for m in (pred, truth))
        expected = compute_surface_dice(p, t, [tolerance], spacing=spacing).item()
        assert binary_metrics(pred, truth, spacing=spacing, nsd_tolerance=tolerance)[
            "nsd_mm"
        ] == pytest.approx(expected, rel=1e-6)
    if spacing == (1.0, 1.0):
        assert binary_metrics(pred, truth, nsd_tolerance=tolerance)["nsd"] == pytest.approx(
            expected, rel=1e-6
        )


def test_hand_computed_square_and_empty_conventions():
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:15] = True  # 100 pixels
    pred = np.zeros_like(truth)
    pred[5:15, 7:17] = True  # shifted right by 2: 80 shared pixels
    m = binary_metrics(pred, truth)
    assert m["dice"] == pytest.approx(160 / 200)
    assert m["iou"] == pytest.approx(80 / 120)
    assert m["precision"] == m["recall"] == pytest.approx(0.8)
    assert m["hd95"] == pytest.approx(2.0)
    # Both outlines are 36 pixels. Within 2 pixels every one has a partner; within 1, the far
    # side (10) and the middle of the near side (6) of each outline have none: 2 * 20 / 72.
    assert m["nsd"] == 1.0
    assert binary_metrics(pred, truth, nsd_tolerance=1.0)["nsd"] == pytest.approx(40 / 72)
    assert binary_metrics(pred, truth, spacing=(0.5, 0.5), nsd_tolerance=1.0)["nsd_mm"] == 1.0

    empty = np.zeros_like(truth)
    both = binary_metrics(empty, empty)
    assert both == {
        "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0, "asd": 0.0, "nsd": 1.0
    }  # fmt: skip
    missed = binary_metrics(empty, truth)
    assert missed["dice"] == missed["precision"] == missed["recall"] == missed["nsd"] == 0.0
    assert missed["hd95"] == pytest.approx(np.hypot(20, 20))
    assert all(np.isfinite(v) for v in binary_metrics(truth, empty).values())


def test_multiclass_rows_per_foreground_class():
    truth = np.zeros((10, 10), int)
    truth[:5], truth[5:] = 1, 2
    pred = truth.copy()
    pred[5:] = 0
    rows = case_metrics(pred, truth, num_classes=3)
    assert [r["class"] for r in rows] == [1, 2]
    assert rows[0]["dice"] == 1.0 and rows[1]["dice"] == 0.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quickly trained tiny binary model and its (varied-size) data."""
    root = tmp_path_factory.mktemp("eval")
    data = make_synthetic_dataset(root / "data", num_images=12, size_range=(50, 110))
    args = [
        "--model",
        "hrmedseg_t",
        "--img-size",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--quiet",
    ]
    code = cli_main(["train", "--data", str(data), "--output", str(root / "run"), *args])
    assert code == 0
    return data, root / "run" / "best.safetensors"


def test_evaluate_writes_per_case_csv_and_summaries(tmp_path, trained):
    data, checkpoint = trained
    summary = evaluate(checkpoint, data, tmp_path / "ev", split="test", overlays=True, progress=False)
    test_cases = json.loads((data / "split.json").read_text())["test"]
    with (tmp_path / "ev" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == test_cases
    assert summary["mean"]["dice"]["n"] == len(test_cases)
    assert np.mean([float(r["dice"]) for r in rows]) == pytest.approx(summary["mean"]["dice"]["mean"])
    assert np.median([float(r["hd95"]) for r in rows]) == pytest.approx(summary["mean"]["hd95"]["median"])
    assert "± " in (tmp_path / "ev" / "summary.md").read_text()
    assert list(rows[0])[-2:] == ["asd", "nsd"] and summary["nsd_tolerance"] == DEFAULT_NSD_TOLERANCE
    assert sorted(p.stem for p in (tmp_path / "ev" / "overlays").iterdir()) == sorted(test_cases)
    assert evaluate(checkpoint, data, tmp_path / "all", split="all", progress=False)["cases"] == 12
    with pytest.raises(ValueError, match="no 'holdout' cases"):
        evaluate(checkpoint, data, tmp_path / "x", split="holdout", progress=False)
    with pytest.raises(ValueError, match="NSD tolerance must be a distance of 0 or more, got -1"):
        evaluate(checkpoint, data, tmp_path / "x", nsd_tolerance=-1, progress=False)


def test_cli_nsd_tolerance_reaches_the_summary(tmp_path, trained, capsys):
    data, checkpoint = trained
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--quiet"]
    assert cli_main([*argv, "--output", str(tmp_path / "default")]) == 0
    assert json.loads((tmp_path / "default" / "summary.json").read_text())["nsd_tolerance"] == (
        DEFAULT_NSD_TOLERANCE
    )
    assert cli_main([*argv, "--output", str(tmp_path / "wide"), "--nsd-tolerance", "1000"]) == 0
    summary = json.loads((tmp_path / "wide" / "summary.json").read_text())
    assert summary["nsd_tolerance"] == 1000 and "within 1000.0 of the other" in summary["conventions"]
    # Every surface pixel lies within 1000 pixels of the other surface: NSD is 1 wherever both
    # masks hold foreground (Dice > 0).
    with (tmp_path / "wide" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if float(r["dice"]) > 0]
    assert rows and all(float(r["nsd"]) == 1.0 for r in rows)


def test_segmenter_returns_each_image_at_its_original_size(tmp_path, trained):
    data, checkpoint = trained
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", batch_size=3)
    paths = sorted((data / "images").iterdir())[:5]
    masks = segmenter.predict(paths)
    for path, mask in zip(paths, masks, strict=True):
        with Image.open(path) as img:
            assert mask.shape == (img.height, img.width)
        assert set(np.unique(mask)) <= {0, 1}
    grey = (np.random.default_rng(0).random((37, 81)) * 255).astype(np.uint8)
    assert segmenter.predict(grey).shape == (37, 81)


def test_cli_predict_writes_masks_probabilities_and_overlays_at_original_size(tmp_path, trained):
    data, checkpoint = trained
    args = [
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(data / "images"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert cli_main(["predict", *args, "--probabilities", "--overlays", "--quiet"]) == 0
    for path in sorted((data / "images").iterdir()):
        written = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png"))
        with Image.open(path) as img:
            assert written.shape == (img.height, img.width)
        assert set(np.unique(written)) <= {0, 255}
        assert np.load(tmp_path / "out" / f"{path.stem}_prob.npy").shape == (1, *written.shape)
        assert (tmp_path / "out" / f"{path.stem}_overlay.png").is_file()


def test_multiclass_prediction_writes_class_indices(tmp_path):
    model = hrmedseg.create_model("hrmedseg_t", num_classes=4, img_size=64)
    hrmedseg.save_model(model, tmp_path / "m.safetensors")
    segmenter = Segmenter.from_checkpoint(tmp_path / "m.safetensors", device="cpu")
    probs = next(segmenter.iter_probabilities([np.zeros((30, 50, 3), np.float32)]))
    assert probs.shape == (4, 30, 50)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    assert segmenter.predict(np.zeros((30, 50, 3), np.uint8)).max() < 4


def test_demo_runs_the_whole_workflow(tmp_path, capsys):
    assert cli_main(["demo", "--output", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test Dice" in out
    summary = json.loads((tmp_path / "demo" / "evaluation" / "summary.json").read_text())
    assert summary["mean"]["dice"]["mean"] > 0.8
    assert len(list((tmp_path / "demo" / "predictions").glob("*_overlay.png"))) == 80


def test_predicted_masks_score_as_the_model_that_wrote_them(tmp_path, trained, capsys):
    """``predict`` then ``evaluate --predictions`` gives ``evaluate --checkpoint``'s every row."""
    data, checkpoint = trained
    test_cases = json.loads((data / "split.json").read_text())["test"]
    predicted = tmp_path / "pred"
    predicted.mkdir()
    for case in test_cases:  # predict's folder holds every image; only the test ones are needed
        (predicted / f"{case}.png").symlink_to(next((data / "images").glob(f"{case}.*")))
    by_model, by_files = scores_of_model_and_of_its_masks(checkpoint, predicted, data, tmp_path)
    capsys.readouterr()
    assert by_files == by_model and len(by_files) == len(test_cases)
    summary = json.loads((tmp_path / "files" / "summary.json").read_text())
    assert summary["predictions"] == str(tmp_path / "masks") and summary["failures"] == []


def test_predicted_multiclass_masks_and_their_problems_are_named(tmp_path, capsys):
    from hrmedseg.evaluation.predictions import evaluate_predictions

    data, predictions = tmp_path / "data", tmp_path / "pred"
    for folder in (data / "images", data / "masks", predictions):
        folder.mkdir(parents=True)
    truth = np.zeros((12, 16), np.uint8)
    truth[:6], truth[6:, :8] = 1, 2
    for case in ("a", "b", "c", "d", "e"):
        Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(data / "images" / f"{case}.png")
        Image.fromarray(truth).save(data / "masks" / f"{case}.png")
    Image.fromarray(truth).save(predictions / "a.png")  # perfect
    swapped = np.where(truth == 0, 0, 3 - truth).astype(np.uint8)
    Image.fromarray(swapped).save(predictions / "b.tif")  # every class wrong, another format
    Image.fromarray(np.full((12, 16), 5, np.uint8)).save(predictions / "c.png")  # no class 5
    Image.fromarray(truth[:, :10]).save(predictions / "d.png")  # wrong size; e: missing
    summary = evaluate_predictions(
        predictions, data, tmp_path / "ev", split="all", num_classes=3, progress=False
    )
    with (tmp_path / "ev" / "metrics.csv").open() as f:
        dice = {(r["case"], r["class"]): float(r["dice"]) for r in csv.DictReader(f)}
    assert dice == {("a", "1"): 1.0, ("a", "2"): 1.0, ("b", "1"): 0.0, ("b", "2"): 0.0}
    failures = "\n".join(summary["failures"])
    assert "c.png: prediction values [5] outside 0..2 (num_classes=3)" in failures
    assert "d.png: prediction is 10x12 but its mask is 16x12 (W x H)" in failures
    assert "no prediction for case 'e'" in failures and summary["cases"] == 2

    argv = ["evaluate", "--data", str(data), "--split", "all", "--predictions", str(predictions),
            "--output", str(tmp_path / "cli"), "--quiet"]  # fmt: skip
    assert cli_main([*argv, "--num-classes", "3"]) == 1  # scored, with the failures named
    Image.fromarray(truth).save(predictions / "a.jpg")
    for extra, message in (
        (["--num-classes", "3"], "a.jpg and a.png are both case 'a'"),
        (["--tta", "hflip", "--tile"], "tiling (--tile), tta (--tta): settings of a model's prediction"),
    ):
        assert cli_main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of the two
        cli_main([*argv, "--checkpoint", "m.safetensors"])
    assert "--checkpoint: not allowed with argument --predictions" in capsys.readouterr().err
    model_argv = ["evaluate", "--checkpoint", "m.safetensors", "--data", str(data), "--output", str(tmp_path)]
    assert cli_main([*model_argv, "--num-classes", "2"]) == 2
    assert "num_classes is for predictions" in capsys.readouterr().err
