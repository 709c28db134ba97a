"""hrmedseg inspect: a dataset's fingerprint on folders drawn with known objects, its advice,
and the problems it names."""

import json

import numpy as np
import pytest
from PIL import Image

from hrmedseg.cli import main as cli_main
from hrmedseg.data.inspect import inspect_dataset


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def write_case(root, stem, mask, image_mode="RGB", mask_suffix=".png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    channels = (mask.shape[0], mask.shape[1], 3) if image_mode == "RGB" else mask.shape
    Image.fromarray(np.full(channels, 80, np.uint8), image_mode).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}{mask_suffix}")


def test_many_small_objects_in_images_of_many_sizes(tmp_path):
    """Nuclei-like: 2, 4, 6 and 8 discs of radius 3 in images from 64 x 64 to 300 x 200."""
    for n, shape in zip((2, 4, 6, 8), ((64, 64), (120, 90), (200, 300), (64, 200)), strict=True):
        mask = np.zeros(shape, bool)
        for i in range(n):
            mask |= disc(shape, (10 + (i // 4) * 20, 10 + (i % 4) * 14), 3)
        write_case(tmp_path, f"case{n}", mask * 255, "L" if n == 2 else "RGB")
    fingerprint = inspect_dataset(tmp_path, progress=False)
    area = int(disc((9, 9), (4, 4), 3).sum())  # one disc's pixels, counted independently
    (objects,) = fingerprint.classes.values()
    assert fingerprint.cases == 4 and fingerprint.problems == []
    assert fingerprint.height == {"min": 64, "median": 92, "max": 200}  # median of 64, 64, 120, 200
    assert fingerprint.width["max"] == 300 and fingerprint.distinct_sizes == 4
    assert fingerprint.colour_modes == {"L": 1, "RGB": 3} and fingerprint.mask_values == [0, 255]
    assert objects.objects_per_image == {"median": 5, "max": 8} and objects.one_object_share == 0
    assert objects.object_area_px == {"median": area, "p5": area}
    options = [option for option, _ in fingerprint.advice]
    assert options == ["train --input-scale native", "no --keep-largest"]
    assert "from 64 to 300 px" in fingerprint.advice[0][1]


def test_one_object_per_image_calls_for_keep_largest(tmp_path):
    for i in range(3):
        write_case(tmp_path, f"head{i}", disc((80, 100), (40, 50), 20 + i) * 255)
    (tmp_path / "split.json").write_text(
        json.dumps({"train": ["head0"], "val": ["head1"], "test": ["head2"]})
    )
    fingerprint = inspect_dataset(tmp_path, progress=False)
    assert fingerprint.split == {"train": 1, "val": 1, "test": 1}
    (objects,) = fingerprint.classes.values()
    assert objects.one_object_share == 1.0 and objects.objects_per_image == {"median": 1, "max": 1}
    assert objects.object_area_px["median"] == disc((80, 100), (40, 50), 21).sum()
    assert [option for option, _ in fingerprint.advice] == [
        "evaluate/predict --keep-largest --fill-holes (check on --split val)"
    ]


def test_multiclass_objects_are_counted_per_class(tmp_path):
    for i in range(4):
        mask = disc((60, 60), (30, 30), 12).astype(np.uint8)
        if i % 2:
            mask[disc((60, 60), (30, 30), 4)] = 2
            mask[disc((60, 60), (8, 8), 3)] = 2
        write_case(tmp_path, f"c{i}", mask)
    fingerprint = inspect_dataset(tmp_path, num_classes=3, progress=False)
    assert fingerprint.mask_values == [0, 1, 2]
    assert fingerprint.classes["1"].images_with_class == 4 and fingerprint.classes["1"].one_object_share == 1
    assert fingerprint.classes["2"].images_with_class == 2
    assert fingerprint.classes["2"].objects_per_image == {"median": 2, "max": 2}


def test_problems_are_named_and_the_command_writes_json(tmp_path, capsys):
    for i in range(3):
        write_case(tmp_path, f"ok{i}", disc((50, 70), (25, 35), 10) * 255, mask_suffix=".jpg")
    write_case(tmp_path, "wrong", np.zeros((40, 70), np.uint8))
    Image.fromarray(np.zeros((41, 70), np.uint8)).save(tmp_path / "masks" / "wrong.png")
    report = tmp_path / "fingerprint.json"
    assert cli_main(["inspect", "--data", str(tmp_path), "--output", str(report), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "wrong.png: mask is 70x41 but its image is 70x40 (W x H)" in out
    assert "- `masks as PNG`: 3 JPEG mask(s)" in out and "- `fix the named files`" in out
    saved = json.loads(report.read_text())
    assert saved["cases"] == 4 and saved["jpeg_masks"] == 3 and len(saved["problems"]) == 1
    assert saved["classes"]["1"]["objects_per_image"] == {"median": 1, "max": 1}

    # With every usable case a JPEG mask, an index-mask inspection has nothing to measure.
    (tmp_path / "masks" / "wrong.png").unlink()
    (tmp_path / "images" / "wrong.png").unlink()
    with pytest.raises(ValueError, match="(?s)none of the 3 case.*a JPEG mask cannot hold class indices"):
        inspect_dataset(tmp_path, num_classes=3, progress=False)
