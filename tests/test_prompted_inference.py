"""Prompted evaluation and prediction with HRMedSegSAM: GT-derived and JSON prompts."""

import json

import numpy as np
import pytest
from PIL import Image

import hrmedseg
from hrmedseg.cli import main
from hrmedseg.data.io import DataError, read_mask
from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.prompted import (
    ObjectPrompt,
    PromptedSegmenter,
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


def test_evaluate_with_box_prompts_scores_the_union_exactly(tmp_path, rectangles_data):
    summary = evaluate(
        PromptedSegmenter(BoxFillingPredictor()), rectangles_data, tmp_path / "ev", progress=False
    )
    assert summary["prompts"] == "box" and summary["cases"] == 3
    assert summary["mean"]["dice"]["mean"] == pytest.approx(1.0)
    assert summary["mean"]["hd95"]["mean"] == pytest.approx(0.0)
    assert "prompts: box" in (tmp_path / "ev" / "summary.md").read_text()


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
