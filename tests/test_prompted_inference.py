"""Prompted evaluation and prediction with HRMedSegSAM: GT-derived and JSON prompts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import hrmedseg
from hrmedseg.cli import main
from hrmedseg.data.io import DataError, read_mask
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.evaluation.metrics import distance_metrics
from hrmedseg.evaluation.objects import box_leak, object_hd95, truth_object_of
from hrmedseg.inference.prompted import (
    DEFAULT_MAX_ZOOM,
    ObjectPrompt,
    PromptedSegmenter,
    object_windows,
    object_zoom,
    prompts_from_ground_truth,
    read_prompt_file,
)

RECTANGLES = [(5, 8, 20, 30), (40, 10, 70, 25), (30, 40, 50, 55)]  # x0, y0, x1, y1 inclusive


class BoxFillingPredictor:
    """Stands in for Predictor: each box prompt's mask is the filled box, each point prompt's a
    3 x 3 square; so exact box prompts reproduce rectangular objects exactly."""

    def __init__(self):
        self.calls = []

    def set_image(self, image):
        array = np.asarray(Image.open(image)) if not isinstance(image, np.ndarray) else image
        self.original_size = array.shape[:2]

    def reset_image(self):
        self.original_size = None

    def _fill(self, box=None, point=None):
        mask = np.zeros(self.original_size, bool)
        if box is not None:
            x0, y0, x1, y1 = np.asarray(box).astype(int)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        else:
            x, y = np.asarray(point).astype(int)
            mask[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
        return mask

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        self.calls.append({"points": point_coords, "box": box, "multimask": multimask_output})
        if box is not None and np.asarray(box).ndim == 2:
            masks = np.stack([self._fill(box=b)[None] for b in box])
            return masks, np.full((len(box), 1), 0.9, np.float32), None
        mask = self._fill(box=box, point=None if box is not None else point_coords[0])
        outputs = 3 if multimask_output else 1
        scores = np.linspace(0.5, 0.9, outputs).astype(np.float32)
        return np.stack([mask] * outputs), scores, None


@pytest.fixture
def rectangles_data(tmp_path):
    """Images whose masks are non-touching rectangles, with a split."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((64, 80), np.uint8)
        for x0, y0, x1, y1 in RECTANGLES[: i + 1]:
            mask[y0 : y1 + 1, x0 : x1 + 1] = 255
        Image.fromarray(mask).save(root / "masks" / f"case_{i}.png")
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(
            root / "images" / f"case_{i}.png"
        )
    (root / "split.json").write_text(
        json.dumps({"train": [], "val": [], "test": ["case_0", "case_1", "case_2"]})
    )
    return root


def test_gt_prompts_give_one_set_per_object():
    mask = read_mask_from(RECTANGLES)
    boxes = prompts_from_ground_truth(mask, "box")
    assert [tuple(o.box) for o in boxes] == [RECTANGLES[0], RECTANGLES[1], RECTANGLES[2]]
    assert all(o.points is None for o in boxes)
    points = prompts_from_ground_truth(mask, "point")
    for prompt, (x0, y0, x1, y1) in zip(points, RECTANGLES, strict=True):
        (x, y), label = prompt.points[0], prompt.labels[0]
        assert prompt.box is None and label == 1 and x0 <= x <= x1 and y0 <= y <= y1
    both = prompts_from_ground_truth(mask, "box+point")
    assert all(o.box is not None and o.points is not None for o in both)
    with pytest.raises(ValueError, match="ground-truth prompts are one of"):
        prompts_from_ground_truth(mask, "scribble")


def read_mask_from(rectangles):
    mask = np.zeros((64, 80), np.uint8)
    for x0, y0, x1, y1 in rectangles:
        mask[y0 : y1 + 1, x0 : x1 + 1] = 1
    return mask


def test_segmenter_unites_object_masks_and_batches_box_only_objects():
    predictor = BoxFillingPredictor()
    segmenter = PromptedSegmenter(predictor, max_boxes_per_pass=2)
    objects = [
        ObjectPrompt(box=np.array(RECTANGLES[0])),
        ObjectPrompt(points=np.array([[60.0, 50.0]]), labels=np.array([1])),
        ObjectPrompt(box=np.array(RECTANGLES[1])),
        ObjectPrompt(box=np.array(RECTANGLES[2])),
    ]
    union, object_masks, scores = segmenter.segment(np.zeros((64, 80, 3), np.uint8), objects)
    assert union.shape == (64, 80) and object_masks.shape == (4, 64, 80)
    np.testing.assert_array_equal(union, object_masks.any(0))
    np.testing.assert_array_equal(object_masks[3], read_mask_from([RECTANGLES[2]]).astype(bool))
    assert object_masks[1].sum() == 9 and scores[1] == pytest.approx(0.9)  # best of three outputs
    # Box-only objects in batches of at most 2, then the point object alone, multimask (ambiguous).
    assert [c["box"].shape for c in predictor.calls[:2]] == [(2, 4), (1, 4)]
    assert not predictor.calls[0]["multimask"] and predictor.calls[2]["multimask"]


def test_each_object_gets_a_window_that_holds_it_and_small_objects_share_them():
    rng = np.random.default_rng(0)
    height, width, side = 300, 500, 64
    objects = []
    for _ in range(60):
        size = rng.integers(1, 17, 2)  # up to a quarter of the window
        x0, y0 = rng.integers(0, width - size[0]), rng.integers(0, height - size[1])
        objects.append(ObjectPrompt(box=np.array([x0, y0, x0 + size[0] - 1, y0 + size[1] - 1], float)))
    objects.append(ObjectPrompt(points=np.array([[250.0, 150.0]]), labels=np.array([1])))
    windows = object_windows(objects, (height, width), (side, side))
    assert sorted(i for members in windows.values() for i in members) == list(range(len(objects)))
    for (top, left, bottom, right), members in windows.items():
        assert (bottom - top, right - left) == (side, side)
        assert top >= 0 and bottom <= height and left >= 0 and right <= width
        for i in members:
            prompt = objects[i]
            xy = np.concatenate([c.reshape(-1, 2) for c in (prompt.box, prompt.points) if c is not None])
            (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
            # A margin of an eighth of the window, except where the window meets the image's edge.
            assert top == 0 or y0 - top >= side / 8
            assert left == 0 or x0 - left >= side / 8
            assert bottom == height or bottom - 1 - y1 >= side / 8
            assert right == width or right - 1 - x1 >= side / 8
    # Windows of a grid at half-window steps (the last one ending at the image's edge), shared.
    rows, columns = (
        {*range(0, height - side, side // 2), height - side},
        {*range(0, width - side, side // 2), width - side},
    )
    assert all(top in rows and left in columns for top, left, _, _ in windows)
    assert len(windows) < len(objects)

    large = ObjectPrompt(box=np.array([100.0, 10.0, 199.0, 39.0]))  # 100 x 30
    assert object_windows([large], (height, width), (side, side)) == {(0, 50, 64, 250): [0]}
    small_image = object_windows([large], (50, 60), (side, side))
    assert small_image == {(0, 0, 50, 60): [0]}  # the image fits a window: the whole image


def test_windowed_segmentation_decodes_each_object_in_its_window_at_original_pixels():
    rectangles = [(5, 8, 20, 30), (400, 200, 410, 215), (150, 40, 300, 60), (30, 250, 40, 260)]
    predictor = BoxFillingPredictor()
    crops = []
    set_image = predictor.set_image
    predictor.set_image = lambda image: (crops.append(image.shape[:2]), set_image(image))
    segmenter = PromptedSegmenter(predictor, window=(64, 64))
    objects = [ObjectPrompt(box=np.array(r, float)) for r in rectangles]
    union, object_masks, _ = segmenter.segment(np.zeros((300, 500, 3), np.uint8), objects)
    for mask, (x0, y0, x1, y1) in zip(object_masks, rectangles, strict=True):
        expected = np.zeros((300, 500), bool)
        expected[y0 : y1 + 1, x0 : x1 + 1] = True
        np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(union, object_masks.any(0))
    assert sorted(crops) == [(64, 64), (64, 64), (64, 64), (64, 302)]  # the long box: its own window

    crops.clear()
    segmenter.segment(np.zeros((60, 64, 3), np.uint8), objects[:1])
    assert crops == [(60, 64)]  # an image that fits one window is decoded whole
    with pytest.raises(ValueError, match="a prompt window needs a positive height and width"):
        PromptedSegmenter(predictor, window=(0, 64))


def test_zoom_enlarges_only_small_objects_windows_by_powers_of_two():
    window, image = (256, 256), (1024, 1024)
    # Enlarged, the object spans at most a quarter window (64 px) on both axes.
    assert object_zoom(np.array([8, 8]), image, window, max_zoom=4) == 4
    assert object_zoom(np.array([8, 30]), image, window, max_zoom=4) == 2
    assert object_zoom(np.array([40, 8]), image, window, max_zoom=4) == 1
    assert object_zoom(np.array([8, 8]), image, window, max_zoom=2) == 2
    assert object_zoom(np.array([8, 8]), image, window, max_zoom=1) == 1
    # The divided window must fit the image on both axes, so it is enlarged alike on both.
    assert object_zoom(np.array([8, 8]), (100, 1024), window, max_zoom=2) == 1  # 128 > 100
    assert object_zoom(np.array([8, 8]), (100, 1024), window, max_zoom=4) == 4  # 64 <= 100
    assert object_zoom(np.array([8, 8]), (50, 1024), window, max_zoom=4) == 1

    small, large = (20, 30, 27, 37), (100, 100, 159, 139)  # 8 x 8 and 60 x 40 boxes
    objects = [ObjectPrompt(box=np.array(r, float)) for r in (small, large)]
    windows = object_windows(objects, image, window, max_zoom=4)
    assert windows == {(0, 0, 64, 64): [0], (0, 0, 256, 256): [1]}
    # A point does not bound its object: its window keeps the model's size.
    point = ObjectPrompt(points=np.array([[24.0, 24.0]]), labels=np.array([1]))
    assert object_windows([point], image, window, max_zoom=4) == {(0, 0, 256, 256): [0]}


def test_zoomed_windows_decode_small_objects_enlarged_and_return_them_at_original_pixels():
    rectangles = [(5, 8, 9, 12), (200, 100, 203, 104), (150, 40, 300, 60)]
    predictor = BoxFillingPredictor()
    crops = []
    set_image = predictor.set_image
    predictor.set_image = lambda image: (crops.append(image.shape[:2]), set_image(image))
    segmenter = PromptedSegmenter(predictor, window=(64, 64), max_zoom=2)
    objects = [ObjectPrompt(box=np.array(r, float)) for r in rectangles]
    union, object_masks, _ = segmenter.segment(np.zeros((300, 500, 3), np.uint8), objects)
    for mask, (x0, y0, x1, y1) in zip(object_masks, rectangles, strict=True):
        expected = np.zeros((300, 500), bool)
        expected[y0 : y1 + 1, x0 : x1 + 1] = True
        np.testing.assert_array_equal(mask, expected)
    assert sorted(crops) == [(32, 32), (32, 32), (64, 302)]  # the long box keeps its own window
    crops.clear()
    segmenter.segment(np.zeros((60, 64, 3), np.uint8), objects[:1])
    assert crops == [(32, 32)]  # zoomed even where the image fits one window
    for bad in (3, 0, True, 2.0):
        with pytest.raises(ValueError, match="the largest zoom must be a power of two"):
            PromptedSegmenter(predictor, window=(64, 64), max_zoom=bad)
    with pytest.raises(ValueError, match="zoomed windows need a prompt window"):
        PromptedSegmenter(predictor, max_zoom=2)
    # By default windows are zoomed up to DEFAULT_MAX_ZOOM; the whole image is never zoomed.
    assert PromptedSegmenter(predictor, window=(64, 64)).max_zoom == DEFAULT_MAX_ZOOM == 4
    assert PromptedSegmenter(predictor).max_zoom == 1


@pytest.mark.parametrize(("name", "zoom"), [("hrmedseg_sam_region_t", 4), ("hrmedseg_sam_detail_t", 2)])
def test_the_default_zoom_follows_the_models_logit_resolution(name, zoom):
    from hrmedseg.inference.image_prompter import ImagePrompter
    from hrmedseg.inference.sam_predictor import Predictor

    pytest.importorskip("torch")
    model = hrmedseg.create_model(name, img_size=64).eval()
    assert PromptedSegmenter(Predictor(model, "cpu"), window=(64, 64)).max_zoom == zoom
    assert ImagePrompter(model, "cpu", window=(64, 64)).max_zoom == zoom
    assert PromptedSegmenter(Predictor(model, "cpu"), window=(64, 64), max_zoom=8).max_zoom == 8
    assert ImagePrompter(model, "cpu").max_zoom == 1


def test_evaluate_with_box_prompts_scores_the_union_exactly(tmp_path, rectangles_data):
    summary = evaluate(
        PromptedSegmenter(BoxFillingPredictor()), rectangles_data, tmp_path / "ev", progress=False
    )
    assert summary["prompts"] == "box" and summary["cases"] == 3
    assert summary["mean"]["dice"]["mean"] == pytest.approx(1.0)
    assert summary["mean"]["hd95"]["mean"] == pytest.approx(0.0)
    assert "prompts: box" in (tmp_path / "ev" / "summary.md").read_text()


def test_evaluate_in_windows_scores_exactly_and_says_so(tmp_path, rectangles_data):
    segmenter = PromptedSegmenter(BoxFillingPredictor(), window=(32, 32))  # the images are 64 x 80
    summary = evaluate(segmenter, rectangles_data, tmp_path / "ev", progress=False)
    assert summary["mean"]["dice"]["mean"] == pytest.approx(1.0)
    assert summary["per_object"]["dice"]["mean"] == pytest.approx(1.0)
    windows = "each object in a 32 x 32 window at the image's own resolution"
    assert summary["tiling"] == f"{windows}, small objects' windows enlarged up to 4x"  # the default
    assert "32 x 32 window" in (tmp_path / "ev" / "summary.md").read_text()
    unzoomed = PromptedSegmenter(BoxFillingPredictor(), window=(32, 32), max_zoom=1)
    assert evaluate(unzoomed, rectangles_data, tmp_path / "ev1", progress=False)["tiling"] == windows
    whole = evaluate(
        PromptedSegmenter(BoxFillingPredictor()), rectangles_data, tmp_path / "ev2", progress=False
    )
    assert whole["tiling"] == "none (resized to the model size)"


def test_evaluate_with_json_prompts_and_missing_files(tmp_path, rectangles_data):
    prompt_dir = tmp_path / "prompts"
    prompt_dir.mkdir()
    for i in range(3):
        objects = [{"box": list(r)} for r in RECTANGLES[: i + 1]]
        (prompt_dir / f"case_{i}.json").write_text(json.dumps({"objects": objects}))
    segmenter = PromptedSegmenter(BoxFillingPredictor())
    summary = evaluate(segmenter, rectangles_data, tmp_path / "ev", prompts="json", prompt_dir=prompt_dir,
                       progress=False)  # fmt: skip
    assert summary["mean"]["dice"]["mean"] == pytest.approx(1.0)
    (prompt_dir / "case_2.json").unlink()
    with pytest.raises(DataError, match="no prompt file for 1 case\\(s\\): case_2.json"):
        evaluate(segmenter, rectangles_data, tmp_path / "ev2", prompts="json", prompt_dir=prompt_dir)


def test_prompt_files_are_validated_with_the_file_named(tmp_path):
    path = tmp_path / "p.json"
    cases = {
        '{"boxes": []}': "expected",
        '{"objects": [{"box": [0, 0, 100, 10]}]}': "object 0: box outside the 80x64",
        '{"objects": [{"box": [10, 0, 5, 10]}]}': "x0 <= x1",
        '{"objects": [{"points": [[1, 1], [2, 2]], "labels": [1]}]}': "'labels' must give 0 or 1",
        '{"objects": [{"colour": "red"}]}': "needs a 'box' and/or 'points'",
        '{"objects": [{"box": [1, 1, 5, 5], "labels": [1]}]}': "'labels' without 'points'",
        '{"objects": [{"points": [[1, 2, 3]]}]}': "points must be a list of \\[x, y\\] pairs",
        '{"objects": [{"box": ["a", 1, 5, 5]}]}': "box must hold numbers only",
        '{"objects": [{"box": [true, 1, 5, 5]}]}': "box must hold numbers only",
        '{"objects": [{"points": [["3", 2]]}]}': "points must hold numbers only",
        '{"objects": [{"box": [NaN, 1, 5, 5]}]}': "box must be finite numbers",
        '{"objects": [{"points": [[Infinity, 2]]}]}': "points must be finite numbers",
        '{"objects": [{"points": [[1, 2]], "labels": [0.5]}]}': "'labels' must give 0 or 1",
        "not json": "unreadable prompt file",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(DataError, match=message) as info:
            read_prompt_file(path, (64, 80))
        assert str(path) in str(info.value)
    path.write_text(
        '{"objects": [{"points": [[3, 4]]}, {"box": [1, 2, 30, 40], "points": [[5, 6]], "labels": [0]}]}'
    )
    first, second = read_prompt_file(path, (64, 80))
    assert first.labels.tolist() == [1] and first.box is None
    assert second.box.tolist() == [1, 2, 30, 40] and second.labels.tolist() == [0]


def test_cli_predict_and_evaluate_with_a_sam_model(tmp_path, rectangles_data, capsys):
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64)
    checkpoint = hrmedseg.save_model(model, tmp_path / "sam.safetensors")
    prompt_dir = tmp_path / "prompts"
    prompt_dir.mkdir()
    for i in range(3):
        objects = [{"box": list(r)} for r in RECTANGLES[: i + 1]] + [{"points": [[60, 50]], "labels": [1]}]
        (prompt_dir / f"case_{i}.json").write_text(json.dumps({"objects": objects}))
    out = tmp_path / "pred"
    base = ["predict", "--checkpoint", str(checkpoint), "--input", str(rectangles_data / "images"),
            "--output", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    args = [*base, "--prompts", str(prompt_dir), "--overlays"]
    assert main(args) == 0
    objects = read_mask(out / "case_2_objects.png")
    assert objects.shape == (64, 80) and objects.max() <= 4
    assert set(np.unique(read_mask(out / "case_2.png"))) <= {0, 255}
    assert len(json.loads((out / "case_1_scores.json").read_text())["predicted_iou"]) == 3
    assert (out / "case_0_overlay.png").is_file()

    assert main(base) == 2
    assert "needs prompts" in capsys.readouterr().err
    (prompt_dir / "case_1.json").unlink()
    assert main(args) == 2
    assert "no prompt file for 1 image(s): case_1.json" in capsys.readouterr().err

    ev = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(rectangles_data), "--output",
          str(tmp_path / "ev"), "--prompts", "point", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(ev) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["prompts"] == "point" and summary["cases"] == 3
    plain = hrmedseg.save_model(
        hrmedseg.create_model("hrmedseg_t", img_size=64), tmp_path / "plain.safetensors"
    )
    ev[2] = str(plain)
    assert main(ev) == 2
    assert "prompts are for HRMedSegSAM models" in capsys.readouterr().err


class AllObjectsPredictor(BoxFillingPredictor):
    """A model that ignores its prompt: every prompt returns every object of the image."""

    def __init__(self, masks_by_stem):
        super().__init__()
        self.masks_by_stem = masks_by_stem

    def set_image(self, image):
        super().set_image(image)
        self.mask = self.masks_by_stem[Path(image).stem]

    def _fill(self, box=None, point=None):
        return self.mask.copy()


def test_object_hd95_is_the_whole_image_hd95():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred, truth = (rng.random((40, 50)) > 0.97 for _ in range(2))
        pred[:, :3], truth[-2:] = pred[:, :3] | (rng.random() > 0.5), True  # objects on the border
        pred = ndimage.binary_dilation(pred, iterations=2)
        assert object_hd95(pred, truth) == pytest.approx(distance_metrics(pred, truth)[0])
    empty, square = np.zeros((30, 40), bool), read_mask_from([(3, 3, 6, 6)])[:30, :40].astype(bool)
    assert object_hd95(empty, square) == pytest.approx(50.0)  # the image diagonal
    assert object_hd95(empty, empty) == 0.0


def test_box_leak_is_the_share_of_the_mask_outside_its_box():
    mask = np.zeros((20, 20), bool)
    mask[5:7, 5:10] = True  # 10 pixels, columns 5..9
    assert box_leak(mask, np.array([5, 5, 7, 6])) == pytest.approx(0.4)  # columns 8 and 9 outside
    assert box_leak(mask, np.array([0, 0, 19, 19])) == 0.0
    assert box_leak(np.zeros((20, 20), bool), np.array([0, 0, 3, 3])) == 0.0


def test_a_model_that_masks_every_object_is_perfect_on_the_union_but_not_per_object(
    tmp_path, rectangles_data
):
    masks = {f"case_{i}": read_mask_from(RECTANGLES[: i + 1]).astype(bool) for i in range(3)}
    summary = evaluate(PromptedSegmenter(AllObjectsPredictor(masks)), rectangles_data, tmp_path / "ev",
                       progress=False)  # fmt: skip
    expected_dice, expected_leak = [], []
    for i in range(3):
        union = masks[f"case_{i}"].sum()
        for x0, y0, x1, y1 in RECTANGLES[: i + 1]:
            area = (x1 - x0 + 1) * (y1 - y0 + 1)
            expected_dice.append(2 * area / (area + union))
            expected_leak.append((union - area) / union)
    assert summary["mean"]["dice"]["mean"] == pytest.approx(1.0)  # the union hides the failure
    assert summary["objects_from"].startswith("connected components")
    objects = csv_rows(tmp_path / "ev" / "objects.csv")
    assert [(r["case"], r["object"]) for r in objects][:3] == [
        ("case_0", "1"),
        ("case_1", "1"),
        ("case_1", "2"),
    ]
    np.testing.assert_allclose([float(r["dice"]) for r in objects], expected_dice)
    np.testing.assert_allclose([float(r["leak"]) for r in objects], expected_leak)
    per_object = summary["per_object"]
    assert (
        per_object["dice"]["mean"] == pytest.approx(np.mean(expected_dice)) and per_object["dice"]["n"] == 6
    )
    assert per_object["leak"]["mean"] == pytest.approx(np.mean(expected_leak))
    case_2 = csv_rows(tmp_path / "ev" / "metrics.csv")[2]
    assert int(case_2["objects"]) == 3
    assert float(case_2["object_dice"]) == pytest.approx(np.mean(expected_dice[3:]))
    report = (tmp_path / "ev" / "summary.md").read_text()
    assert "Union of the object masks" in report and "Per object (6 objects" in report


def csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_objects_come_from_instance_maps_and_a_wrong_map_is_named(tmp_path, rectangles_data):
    touching = [(5, 8, 20, 30), (21, 8, 30, 30)]  # one connected component, two instances
    instances = np.zeros((64, 80), np.uint16)
    for value, (x0, y0, x1, y1) in zip((7, 3), touching, strict=True):
        instances[y0 : y1 + 1, x0 : x1 + 1] = value
    Image.fromarray((instances > 0).astype(np.uint8) * 255).save(rectangles_data / "masks" / "case_1.png")
    (rectangles_data / "instances").mkdir()
    Image.fromarray(instances).save(rectangles_data / "instances" / "case_1.png")
    wrong = read_mask_from(RECTANGLES[:2]).astype(np.uint16)
    wrong[0, 0] = 1  # one pixel outside case_2's mask
    Image.fromarray(wrong).save(rectangles_data / "instances" / "case_2.png")

    summary = evaluate(
        PromptedSegmenter(BoxFillingPredictor()), rectangles_data, tmp_path / "ev", progress=False
    )
    assert summary["cases"] == 2  # case_2's instance map is refused, the others scored
    assert any("instances/case_2.png: its objects differ from the mask's foreground in" in f
               for f in summary["failures"])  # fmt: skip
    rows = csv_rows(tmp_path / "ev" / "objects.csv")
    assert [(r["case"], r["truth_label"]) for r in rows] == [
        ("case_0", "1"),
        ("case_1", "1"),
        ("case_1", "2"),
    ]
    assert summary["per_object"]["dice"]["mean"] == pytest.approx(1.0)  # each box holds one instance
    assert "instance) for 1 case(s), connected components" in summary["objects_from"]

    # The same folder without its instance maps: the two touching instances are one object.
    shutil.rmtree(rectangles_data / "instances")
    summary = evaluate(
        PromptedSegmenter(BoxFillingPredictor()), rectangles_data, tmp_path / "ev2", progress=False
    )
    assert summary["per_object"]["dice"]["n"] == 1 + 1 + 3


def test_prompts_from_files_are_matched_to_the_object_they_point_at():
    labels = np.zeros((30, 30), np.int64)
    labels[2:10, 2:10], labels[12:28, 12:28] = 1, 2
    assert truth_object_of(ObjectPrompt(box=np.array([0, 0, 15, 15])), labels) == 1  # most pixels inside
    assert truth_object_of(ObjectPrompt(box=np.array([8, 8, 29, 29])), labels) == 2
    points = ObjectPrompt(
        points=np.array([[20.0, 20.0], [5.0, 5.0], [25.0, 14.0]]), labels=np.array([1, 0, 1])
    )
    assert truth_object_of(points, labels) == 2  # the negative point on object 1 does not count
    assert truth_object_of(ObjectPrompt(box=np.array([11, 0, 29, 10])), labels) == 0  # background only


def test_point_prompts_have_no_leak(tmp_path, rectangles_data):
    summary = evaluate(PromptedSegmenter(BoxFillingPredictor()), rectangles_data, tmp_path / "ev",
                       prompts="point", progress=False)  # fmt: skip
    assert "leak" not in summary["per_object"] and summary["per_object"]["dice"]["n"] == 6
    assert {r["leak"] for r in csv_rows(tmp_path / "ev" / "objects.csv")} == {""}


def test_image_prompter_decodes_each_prompt_in_the_window_evaluate_uses():
    from hrmedseg.inference.image_prompter import ImagePrompter
    from hrmedseg.inference.sam_predictor import Predictor

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64, input_scale="native").eval()
    image = np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    # Two small objects in the same grid window, one far away, one larger than a quarter window;
    # each a box and its centre point.
    boxes = [(20, 24, 30, 34), (12, 30, 20, 40), (160, 110, 170, 118), (60, 50, 140, 90)]
    near = [
        ObjectPrompt(box=np.array(b, float), points=np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]]),
                     labels=np.ones(1, int))
        for b in boxes
    ]  # fmt: skip
    # The oracle: PromptedSegmenter's windows (a box with a point is decoded alone, single mask).
    oracle = PromptedSegmenter(Predictor(model, "cpu"), window=(64, 64))
    _, expected, expected_scores = oracle.segment(image, near)

    embedded = []
    set_image = Predictor.set_image

    def counting(self, pixels):
        embedded.append(pixels.shape[:2])
        set_image(self, pixels)

    prompter = ImagePrompter(model, "cpu", window=(64, 64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Predictor, "set_image", counting)
        prompter.set_image(image)
        assert prompter.windowed and embedded == []  # windows are embedded on their first prompt
        for k, prompt in enumerate(near):
            masks, scores = prompter.predict(prompt, multimask_output=False)
            assert masks.shape == (1, 150, 200)
            np.testing.assert_array_equal(masks[0], expected[k])
            assert scores[0] == pytest.approx(expected_scores[k], abs=1e-6)
        assert embedded == [(64, 64), (64, 64), (82, 162)]  # the first two share one window
        masks, _ = prompter.predict(near[0], multimask_output=True)  # its window is kept
        assert len(embedded) == 3 and masks.shape == (3, 150, 200)

        embedded.clear()
        whole = ImagePrompter(model, "cpu")  # no window: the image resized, embedded at once
        whole.set_image(image)
        assert not whole.windowed and embedded == [(150, 200)]
        assert whole.pixels is None  # embedded whole: the image itself is not kept
        masks, _ = whole.predict(near[0], multimask_output=False)
        predictor = Predictor(model, "cpu")
        predictor.set_image(image)
        first = near[0]
        reference, _, _ = predictor.predict(first.points, first.labels, first.box, multimask_output=False)
        np.testing.assert_array_equal(masks, reference)

        embedded.clear()
        small = ImagePrompter(model, "cpu", window=(64, 64), max_zoom=1)  # within the window: whole
        small.set_image(image[:60, :64])
        assert not small.windowed and embedded == [(60, 64)]
        zoomed = ImagePrompter(model, "cpu", window=(64, 64))  # by default small boxes are zoomed
        zoomed.set_image(image[:60, :64])
        assert zoomed.max_zoom == 4 and zoomed.windowed
    with pytest.raises(RuntimeError, match="call set_image"):
        ImagePrompter(model, "cpu").predict(near[0], multimask_output=False)
