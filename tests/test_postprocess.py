"""Connected-component postprocessing: each step on hand-drawn masks, its order, 3-D components
of volumes, and the options of predict and evaluate (serve: in test_serve)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ThresholdModel
from PIL import Image

import hrmedseg
from hrmedseg import Segmenter
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.data.volumes import Volume
from hrmedseg.errors import ConfigError
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.postprocess import Postprocessing
from hrmedseg.inference.volumes import segment_volume


def drawing() -> np.ndarray:
    """Class 1: a 6x6 ring with a 2x2 hole (32 px), a diagonal pair (2 px) and a lone pixel;
    class 2: a 3x3 square (9 px) and a 4x4 square (12 px) around a 2x2 block of class 1 (4 px)."""
    mask = np.zeros((20, 24), np.uint8)
    mask[1:7, 1:7] = 1
    mask[3:5, 3:5] = 0  # the ring's hole
    mask[10, 10] = mask[11, 11] = 1  # touch at a corner: one object (8-connected)
    mask[18, 2] = 1
    mask[1:4, 15:18] = 2
    mask[10:14, 18:22] = 2
    mask[11:13, 19:21] = 1
    return mask


def test_the_default_changes_nothing():
    mask = drawing()
    assert not Postprocessing().active and not Postprocessing(min_size=1).active
    np.testing.assert_array_equal(Postprocessing()(mask), mask)


def test_min_size_removes_small_objects_per_class():
    mask = drawing()
    out = Postprocessing(min_size=3)(mask)
    expected = mask.copy()
    expected[10, 10] = expected[11, 11] = expected[18, 2] = 0  # the pair (2 px) and the lone pixel
    np.testing.assert_array_equal(out, expected)
    # At 10 px class 2's small square goes, and so does class 1's block inside the large one.
    out = Postprocessing(min_size=10)(mask)
    expected[1:4, 15:18] = expected[11:13, 19:21] = 0
    np.testing.assert_array_equal(out, expected)


def test_keep_largest_keeps_one_object_per_class():
    mask = drawing()
    out = Postprocessing(keep_largest=True)(mask)
    expected = np.zeros_like(mask)
    expected[1:7, 1:7] = 1
    expected[3:5, 3:5] = 0
    expected[10:14, 18:22] = 2
    expected[11:13, 19:21] = 0  # class 1's block there was not its largest object
    np.testing.assert_array_equal(out, expected)


def test_fill_holes_fills_background_only_and_runs_last():
    mask = drawing()
    out = Postprocessing(fill_holes=True)(mask)
    assert (out[3:5, 3:5] == 1).all()  # the ring's hole
    assert (out[11:13, 19:21] == 1).all()  # another class inside class 2 is not a hole
    assert np.count_nonzero(out != mask) == 4
    # A hole opened to the outside by removal is no hole: the order is min size, largest, fill.
    both = Postprocessing(min_size=10, keep_largest=True, fill_holes=True)(mask)
    assert (both[11:13, 19:21] == 2).all()  # class 1's block removed, then class 2's hole filled
    assert (both[3:5, 3:5] == 1).all() and (both[1:4, 15:18] == 0).all()
    # A hole touching the object's outline only at a corner is enclosed (background 4-connected).
    ring = np.zeros((7, 7), np.uint8)
    ring[1:6, 1:6] = 1
    ring[2:5, 2:5] = 0
    ring[1, 1] = 0
    assert Postprocessing(fill_holes=True)(ring)[2:5, 2:5].all()


def test_largest_of_equal_objects_is_the_first_and_removal_may_empty_a_mask():
    mask = np.zeros((5, 9), np.uint8)
    mask[1:3, 1:3] = mask[1:3, 5:7] = 1
    out = Postprocessing(keep_largest=True)(mask)
    assert out[1:3, 1:3].all() and not out[:, 4:].any()
    assert not Postprocessing(min_size=5, keep_largest=True)(mask).any()


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_bad_min_size_is_refused(bad):
    with pytest.raises(ConfigError, match="min_size"):
        Postprocessing(min_size=bad)


def test_segmenter_masks_are_postprocessed_and_volumes_in_3d():
    image = drawing().astype(np.float32)  # > 0.5 wherever the drawing has a class: the threshold model
    model = ThresholdModel(image.shape)
    plain = Segmenter(model, "cpu").predict(image)
    np.testing.assert_array_equal(plain, drawing() > 0)
    cleaned = Segmenter(model, "cpu", postprocessing=Postprocessing(keep_largest=True)).predict(image)
    np.testing.assert_array_equal(cleaned, Postprocessing(keep_largest=True)(plain))

    # Two objects: A is the largest in 3-D (4 slices of 9 px), B in its one slice (16 px).
    volume = np.zeros((8, 8, 5), np.float32)
    volume[0:3, 0:3, 0:4] = 1
    volume[4:8, 4:8, 4] = 1
    segmenter = Segmenter(ThresholdModel((8, 8)), "cpu", postprocessing=Postprocessing(keep_largest=True))
    mask = segment_volume(segmenter, Volume(Path("synthetic.nii.gz"), volume, np.eye(4), None))
    np.testing.assert_array_equal(mask, (volume > 0) & (np.arange(8)[:, None, None] < 3))


def test_cli_predict_evaluate_and_serve_take_the_options(tmp_path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_images=6, size_range=(40, 60))
    torch.manual_seed(0)  # an untrained model: several objects per image, so the options act
    model = hrmedseg.create_model("hrmedseg_t", img_size=32)
    checkpoint = hrmedseg.save_model(model, tmp_path / "m.safetensors")
    options = ["--min-size", "20", "--keep-largest", "--fill-holes"]
    postprocessing = Postprocessing(20, True, True)
    images = sorted((data / "images").iterdir())

    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(data / "images"), "--quiet"]
    assert cli_main([*argv, "--output", str(tmp_path / "plain")]) == 0
    assert cli_main([*argv, "--output", str(tmp_path / "cleaned"), *options]) == 0
    changed = 0
    for image in images:
        plain = np.asarray(Image.open(tmp_path / "plain" / f"{image.stem}.png")) // 255
        cleaned = np.asarray(Image.open(tmp_path / "cleaned" / f"{image.stem}.png")) // 255
        np.testing.assert_array_equal(cleaned, postprocessing(plain.astype(np.uint8)))
        changed += not np.array_equal(cleaned, plain)
    assert changed

    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--quiet"]
    assert cli_main([*argv, "--output", str(tmp_path / "ev"), *options]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["postprocessing"] == {"min_size": 20, "keep_largest": True, "fill_holes": True}
    assert "postprocessed: min_size 20" in (tmp_path / "ev" / "summary.md").read_text()
    expected = evaluate(Segmenter(model, "cpu", postprocessing=postprocessing), data, tmp_path / "api",
                        progress=False)  # fmt: skip
    assert summary["mean"]["dice"] == expected["mean"]["dice"]
    with pytest.raises(SystemExit) as refused:  # argparse: at the door, before any image is read
        cli_main([*argv, "--output", str(tmp_path / "x"), "--min-size", "-2"])
    assert refused.value.code == 2
    assert "argument --min-size: must be 0 or more, got -2" in capsys.readouterr().err
    sam = hrmedseg.save_model(
        hrmedseg.create_model("hrmedseg_sam_t", img_size=32), tmp_path / "sam.safetensors"
    )
    argv = [
        "evaluate",
        "--checkpoint",
        str(sam),
        "--data",
        str(data),
        "--quiet",
        "--output",
        str(tmp_path / "s"),
    ]
    assert cli_main([*argv, "--keep-largest"]) == 2
    assert "postprocessing is for automatic models" in capsys.readouterr().err
