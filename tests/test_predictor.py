"""SAM-style Predictor: coordinate mapping, output sizes, batched boxes; GT-derived prompts."""

import numpy as np
import pytest
import torch

import hrmedseg
from hrmedseg import Predictor
from hrmedseg.data.prompts import prompts_from_mask


@pytest.fixture
def predictor():
    torch.manual_seed(0)
    return Predictor(hrmedseg.create_model("hrmedseg_sam_t", img_size=128), device="cpu")


def test_prompts_in_original_pixels_map_exactly_to_model_input(predictor, monkeypatch):
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)  # H=200, W=300
    predictor.set_image(image)
    seen = {}
    original = predictor.model.prompt_encoder.forward

    def spy(image_size, grid_size, points=None, boxes=None, masks=None, batch_size=1):
        seen.update(image_size=image_size, points=points, boxes=boxes)
        return original(image_size, grid_size, points=points, boxes=boxes, masks=masks, batch_size=batch_size)

    monkeypatch.setattr(predictor.model.prompt_encoder, "forward", spy)
    masks, scores, low_res = predictor.predict(
        point_coords=np.array([[150.0, 100.0], [0.0, 199.0]]), point_labels=np.array([1, 0]),
        box=np.array([30.0, 50.0, 270.0, 150.0]),
    )  # fmt: skip
    assert seen["image_size"] == (128, 128)
    torch.testing.assert_close(seen["points"][0], torch.tensor([[[64.0, 64.0], [0.0, 199 * 128 / 200]]]))
    torch.testing.assert_close(seen["points"][1], torch.tensor([[1, 0]]))
    torch.testing.assert_close(seen["boxes"], torch.tensor([[30 * 128 / 300, 32.0, 270 * 128 / 300, 96.0]]))
    assert masks.shape == (3, 200, 300) and masks.dtype == bool
    assert scores.shape == (3,) and low_res.shape == (3, 32, 32)


def test_masks_equal_the_model_output_resized_to_the_original(predictor):
    image = np.random.default_rng(1).random((90, 70)).astype(np.float32)  # grey, float in [0, 1]
    predictor.set_image(image)
    logits, _, low_res = predictor.predict(
        box=np.array([10, 10, 50, 70]), multimask_output=False, return_logits=True
    )
    assert logits.shape == (1, 90, 70)
    expected = torch.nn.functional.interpolate(torch.from_numpy(low_res)[None], (90, 70), mode="bilinear")[0]
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_several_boxes_at_once_equal_one_at_a_time(predictor):
    predictor.set_image(np.random.default_rng(2).integers(0, 255, (160, 96, 3), dtype=np.uint8))
    boxes = np.array([[5, 5, 60, 80], [20, 90, 90, 150], [0, 0, 95, 159]], dtype=np.float32)
    masks, scores, _ = predictor.predict(box=boxes, return_logits=True)
    assert masks.shape == (3, 3, 160, 96) and scores.shape == (3, 3)
    for i, b in enumerate(boxes):
        single, single_scores, _ = predictor.predict(box=b, return_logits=True)
        np.testing.assert_allclose(masks[i], single, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(scores[i], single_scores, rtol=1e-4, atol=1e-5)


def test_predict_needs_an_image_and_matching_labels(predictor):
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box=np.array([0, 0, 10, 10]))
    predictor.set_image(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="one label per point"):
        predictor.predict(point_coords=np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="Predictor needs a promptable model"):
        Predictor(hrmedseg.create_model("hrmedseg_t"))


def test_gt_prompts_one_per_component_with_points_inside():
    mask = np.zeros((60, 80), np.uint8)
    mask[5:15, 10:30] = 255  # rectangle
    yy, xx = np.mgrid[:60, :80]
    radius = np.hypot(yy - 40, xx - 50)
    mask[(radius >= 8) & (radius <= 14)] = 255  # ring: its centroid (50, 40) is outside it
    mask[58, 0] = 1  # a one-pixel object in the corner
    boxes, points = prompts_from_mask(mask)
    np.testing.assert_array_equal(boxes, [[10, 5, 29, 14], [36, 26, 64, 54], [0, 58, 0, 58]])
    assert len(points) == 3
    for x, y in points.astype(int):
        assert mask[y, x] > 0
    assert prompts_from_mask(mask, min_area=2)[0].shape == (2, 4)
    assert prompts_from_mask(np.zeros((5, 5)))[0].shape == (0, 4)

    jittered, _ = prompts_from_mask(mask, box_jitter=0.2, rng=np.random.default_rng(0))
    assert np.all(np.abs(jittered - boxes)[:2] <= 0.2 * 29 + 1e-4)
    assert np.all(jittered[:, [0, 2]] <= 79) and np.all(jittered >= 0)
    with pytest.raises(ValueError, match="box_jitter"):
        prompts_from_mask(mask, box_jitter=0.6)

    # Outward jitter only enlarges: every box still holds its whole object, by at most the fraction.
    sizes = np.tile(boxes[:, 2:] - boxes[:, :2] + 1, 2)  # (w, h, w, h) per box
    for seed in range(20):
        enlarged, _ = prompts_from_mask(mask, box_jitter=0.2, outward=True, rng=np.random.default_rng(seed))
        assert np.all(enlarged[:, :2] <= boxes[:, :2]) and np.all(enlarged[:, 2:] >= boxes[:, 2:])
        assert np.all(np.abs(enlarged - boxes) <= 0.2 * sizes + 1e-4)
    assert np.any(enlarged != boxes)


def test_batch_of_images_equals_one_image_at_a_time(predictor):
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((100, 140, 3), (64, 64, 3), (150, 90, 3))
    ]
    boxes = [
        np.array([[10, 10, 80, 60], [0, 0, 139, 99]]),
        np.array([[5, 5, 40, 50]]),
        np.array([[20, 30, 70, 140]]),
    ]
    points = [np.array([[40, 30]]), None, np.array([[50, 60]])]
    labels = [np.array([1]), None, np.array([0])]
    batched = predictor.predict_batch(
        images, boxes=boxes, point_coords=points, point_labels=labels, return_logits=True, batch_size=2
    )
    for image, image_boxes, pts, lab, (masks, scores, _) in zip(
        images, boxes, points, labels, batched, strict=True
    ):
        predictor.set_image(image)
        assert masks.shape == (len(image_boxes), 3, *image.shape[:2])
        for k, box in enumerate(image_boxes):
            single, single_scores, single_low = predictor.predict(pts, lab, box, return_logits=True)
            if pts is not None:  # the point-free image's sets carry padding points (label -1), as in SAM
                np.testing.assert_allclose(masks[k], single, rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(scores[k], single_scores, rtol=1e-4, atol=1e-5)
    # Points only, the same count per image: equal to single-image prediction.
    pts = [np.array([[30, 40], [90, 20]]), np.array([[10, 50], [60, 10]])]
    labs = [np.array([1, 0]), np.array([1, 1])]
    batched = predictor.predict_batch(
        images[:2],
        boxes=None,
        point_coords=pts,
        point_labels=labs,
        multimask_output=False,
        return_logits=True,
    )
    for image, p, lab, (masks, _, _) in zip(images[:2], pts, labs, batched, strict=True):
        predictor.set_image(image)
        single, _, _ = predictor.predict(p, lab, multimask_output=False, return_logits=True)
        assert masks.shape == (1, 1, *image.shape[:2])
        np.testing.assert_allclose(masks[0], single, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="boxes for every image or for none"):
        predictor.predict_batch(
            images[:2],
            boxes=[np.array([0, 0, 5, 5]), None],
            point_coords=[None, np.array([[1, 1]])],
            point_labels=[None, [1]],
        )
