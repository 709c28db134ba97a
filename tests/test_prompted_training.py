"""Training HRMedSegSAM with ground-truth prompts."""

import numpy as np
import pytest
import torch
from PIL import Image

import hrmedseg
from hrmedseg.data import find_dataset
from hrmedseg.data.prompts import label_objects
from hrmedseg.data.synthetic import make_synthetic_dataset, separate_discs
from hrmedseg.losses import SegmentationLoss, binary_loss_per_mask, object_windows
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import make_loaders, train
from hrmedseg.training.prompted import PromptConfig, PromptedObjective, loss_windows, sample_prompt_sets
from hrmedseg.training.run_log import read_log


def _two_object_masks():
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[0, 2:8, 3:10] = 1
    masks[0, 20:30, 15:28] = 1
    return masks  # image 1 has no object


def test_evaluation_prompts_every_object_with_its_exact_box():
    masks = _two_object_masks()
    groups = sample_prompt_sets(masks, PromptConfig(), training=False)
    assert set(groups) == {"box"}
    boxes = groups["box"]
    assert boxes.image_index.tolist() == [0, 0]
    torch.testing.assert_close(boxes.prompts, torch.tensor([[3.0, 2.0, 9.0, 7.0], [15.0, 20.0, 27.0, 29.0]]))
    labels, _ = label_objects(masks[0].numpy())
    for k in range(2):
        np.testing.assert_array_equal(boxes.targets[k].numpy(), labels == k + 1)


def test_training_prompts_mix_kinds_and_respect_the_object_limit():
    torch.manual_seed(0)
    masks = _two_object_masks()
    groups = sample_prompt_sets(masks, PromptConfig(box_probability=0.0, max_objects=1), training=True)
    assert set(groups) == {"point"}
    (x, y), target = groups["point"].prompts[0].long().tolist(), groups["point"].targets[0]
    assert len(groups["point"].image_index) == 1 and target[y, x]


def test_outward_box_jitter_keeps_each_object_inside_its_training_box():
    masks = _two_object_masks()
    exact = torch.tensor([[3.0, 2.0, 9.0, 7.0], [15.0, 20.0, 27.0, 29.0]])
    config = PromptConfig(box_probability=1.0, box_jitter=0.3, box_jitter_outward=True)
    torch.manual_seed(0)
    moved = False
    for _ in range(10):
        boxes = sample_prompt_sets(masks, config, training=True)["box"]
        order = boxes.targets.flatten(1).float().sum(1).argsort()  # the small object first, as in exact
        prompts = boxes.prompts[order]
        assert torch.all(prompts[:, :2] <= exact[:, :2]) and torch.all(prompts[:, 2:] >= exact[:, 2:])
        moved |= bool(torch.any(prompts != exact))
    assert moved


def touching_pair_folder(root, *, instances: bool):
    """One 40 x 60 image whose two rectangles touch (one connected component), and, when asked,
    its instance map that keeps them apart (values 7 and 9: labels need not be consecutive)."""
    for name in ("images", "masks", *(["instances"] if instances else [])):
        (root / name).mkdir(parents=True)
    labels = np.zeros((40, 60), np.uint8)
    labels[5:30, 4:20], labels[5:30, 20:50] = 7, 9
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(root / "masks" / "a.png")
    if instances:
        Image.fromarray(labels).save(root / "instances" / "a.png")
    return root


@pytest.mark.parametrize("instances", [True, False])
def test_prompted_training_data_keeps_touching_instances_apart(tmp_path, instances):
    """With an instance map, two touching objects are two prompt sets, each with its own target,
    also after resizing; without one, the connected component is one object."""
    from hrmedseg.data import SegmentationDataset, find_dataset

    samples = list(find_dataset(touching_pair_folder(tmp_path, instances=instances)).samples.values())
    common = {"num_classes": 1, "pixel_mean": (0.5,) * 3, "pixel_std": (0.25,) * 3}
    mask = SegmentationDataset(samples, (20, 30), objects=True, **common)[0]["mask"]
    assert mask.unique().tolist() == ([0, 1, 2] if instances else [0, 1])
    assert SegmentationDataset(samples, (20, 30), **common)[0]["mask"].unique().tolist() == [0, 1]
    groups = sample_prompt_sets(mask[None], PromptConfig(), training=False)
    boxes = groups["box"]
    if instances:
        torch.testing.assert_close(
            boxes.prompts, torch.tensor([[2.0, 2.0, 9.0, 14.0], [10.0, 2.0, 24.0, 14.0]])
        )
        windows = loss_windows(boxes, PromptConfig(other_objects=True), mask[None])
        for k in range(2):
            assert torch.equal(boxes.targets[k], mask == k + 1)
            assert windows[k][(mask > 0) & (mask != k + 1)].all()  # the touching neighbour counts
    else:
        assert len(boxes.prompts) == 1 and torch.equal(boxes.targets[0], mask > 0)


def test_prompted_training_refuses_an_instance_map_that_disagrees_with_its_mask(tmp_path):
    from hrmedseg.data import check_samples, find_dataset
    from hrmedseg.errors import DataError

    root = touching_pair_folder(tmp_path, instances=True)
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(root / "instances" / "a.png")
    samples = list(find_dataset(root).samples.values())
    check_samples(samples, 1)  # automatic training does not read instance maps
    with pytest.raises(DataError, match="instances/a.png: its objects differ from the mask's foreground"):
        check_samples(samples, 1, objects=True)


def test_other_objects_join_each_objects_loss_window():
    """With other_objects, a mask painted on a far neighbour is penalised; without, it is not."""
    masks = torch.zeros(1, 64, 64, dtype=torch.long)
    masks[0, 2:6, 2:6], masks[0, 50:60, 50:60] = 1, 2
    group = sample_prompt_sets(masks, PromptConfig(), training=False)["box"]
    logits = torch.full((1, 1, 64, 64), -20.0)
    logits[..., 2:6, 2:6] = logits[..., 50:60, 50:60] = 20.0  # the first box's mask covers both objects
    for other_objects in (False, True):
        windows = loss_windows(group, PromptConfig(other_objects=other_objects), masks)
        assert windows[1, 55, 55] == 1 and windows[0, 3, 3] == 1  # each window holds its object
        assert windows[0, 55, 55] == other_objects  # the far object: only with other_objects
        loss = binary_loss_per_mask(logits, group.targets[:1], SegmentationLoss(1), weights=windows[:1])
        assert (loss.item() > 0.05) == other_objects, loss
    assert loss_windows(group, PromptConfig(loss_margin=None), masks) is None  # the whole image


def test_prompted_objective_backpropagates_and_handles_object_free_batches():
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=32)
    objective = PromptedObjective(
        model,
        SegmentationLoss(1),
        quality_weight=1.0,
        prompt_config=PromptConfig(box_probability=0.5),
        amp_dtype=None,
    )
    images = torch.randn(2, 3, 32, 32)
    loss, union = objective(images, _two_object_masks())
    loss.backward()
    assert union.shape == (2, 1, 32, 32) and torch.all(union[1] < -1e3)  # no object: empty prediction
    assert model.mask_decoder.iou_prediction_head.layers[0].weight.grad.abs().sum() > 0
    empty, _ = objective(images, torch.zeros(2, 32, 32, dtype=torch.long))
    empty.backward()
    assert empty.item() == 0.0


def test_hrmedseg_sam_trains_with_prompts_and_loads_into_the_predictor(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_images=16, size_range=(60, 90))
    config = TrainConfig(
        data=str(data), output=str(tmp_path / "run"), model="hrmedseg_sam_t", img_size=64, epochs=3,
        batch_size=4, num_workers=0, lr=3e-3, prompts={"box_probability": 0.7, "box_jitter": 0.05},
    )  # fmt: skip
    result = train(config, progress=False)
    rows = read_log(tmp_path / "run" / "log.csv")
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # The best epoch is chosen by each object's own Dice, not by the union's.
    assert result["best_object_dice"] == pytest.approx(max(r["val_object_dice"] for r in rows))
    predictor = hrmedseg.Predictor.from_checkpoint(result["best"], device="cpu")
    predictor.set_image(np.zeros((70, 50, 3), np.uint8))
    masks, scores, _ = predictor.predict(box=np.array([5, 5, 40, 60]))
    assert masks.shape == (3, 70, 50) and scores.shape == (3,)


def test_hrmedseg_sam_trains_on_native_windows_and_decodes_objects_in_them(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_images=12, size_range=(50, 90))
    config = TrainConfig(
        data=str(data), output=str(tmp_path / "run"), model="hrmedseg_sam_t", img_size=32, epochs=1,
        batch_size=4, num_workers=0, input_scale="native", prompts={"box_probability": 1.0},
    )  # fmt: skip
    result = train(config, progress=False)
    assert hrmedseg.load_model(result["best"]).config.input_scale == "native"
    assert 0 <= read_log(tmp_path / "run" / "log.csv")[-1]["val_object_dice"] <= 1
    # Validated on one window per image, on an object, the same every epoch.
    _, _, _, val_loader = make_loaders(
        config, [*find_dataset(data).samples.values()][:3], [*find_dataset(data).samples.values()][:3],
        pixel_mean=(0.5,) * 3, pixel_std=(0.25,) * 3, objects=True,
    )  # fmt: skip
    first, again = next(iter(val_loader)), next(iter(val_loader))
    assert first["image"].shape[-2:] == (32, 32) and torch.equal(first["image"], again["image"])
    assert all(mask.max() > 0 for mask in first["mask"])
    # It decodes each object in a window of its own size at the image's resolution, as trained.
    segmenter = hrmedseg.PromptedSegmenter.from_checkpoint(result["best"], device="cpu")
    assert segmenter.window == (32, 32)
    whole = hrmedseg.PromptedSegmenter.from_checkpoint(result["best"], device="cpu", native_windows=False)
    assert whole.window is None


def test_object_windows_enlarge_each_box_and_restrict_the_loss():
    from hrmedseg.losses import SegmentationLoss, binary_loss_per_mask

    targets = torch.zeros(3, 40, 50, dtype=torch.bool)
    targets[0, 10:14, 20:30] = True  # 4 x 10 box
    targets[1, 0:30, 0:50] = True  # large: the window is the whole image
    windows = object_windows(targets, margin=1.0, min_margin=2)
    expected = torch.zeros(40, 50)
    expected[6:18, 10:40] = 1  # 4 rows and 10 columns of margin per side
    torch.testing.assert_close(windows[0], expected)
    assert windows[1].all() and windows[2].all()  # empty target: whole image
    assert object_windows(targets, margin=0.0, min_margin=2)[0].sum() == (4 + 4) * (10 + 4)

    # Outside the window, predictions do not matter.
    loss = SegmentationLoss(1, dice_weight=0.8, focal_weight=0.2)
    logits = torch.where(targets[:1], 5.0, -5.0).float().unsqueeze(1)
    noisy = logits.clone()
    noisy[0, 0, 30:, :] = 5.0  # false positives far from the object
    a = binary_loss_per_mask(logits, targets[:1], loss, weights=windows[:1])
    b = binary_loss_per_mask(noisy, targets[:1], loss, weights=windows[:1])
    torch.testing.assert_close(a, b)
    assert binary_loss_per_mask(noisy, targets[:1], loss) > a  # the whole-image loss sees them


def test_mask_prompts_from_a_first_pass_train_the_mask_prompt_path(monkeypatch):
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=32)
    calls = []
    original = model.decode

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mask_inputs"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "decode", spy)
    config = PromptConfig(box_probability=1.0, mask_prompt_probability=1.0)
    objective = PromptedObjective(
        model, SegmentationLoss(1), quality_weight=1.0, prompt_config=config, amp_dtype=None
    )
    loss, _ = objective(torch.randn(2, 3, 32, 32), _two_object_masks())
    loss.backward()
    assert calls[0] is None and calls[1].shape == (2, 1, 8, 8)  # 2 objects: low-res logits of pass 1
    assert not calls[1].requires_grad
    assert model.prompt_encoder.mask_downscaling[0].weight.grad.abs().sum() > 0
    calls.clear()
    objective.eval()
    with torch.no_grad():
        objective(torch.randn(2, 3, 32, 32), _two_object_masks())
    assert calls == [None]  # evaluation decodes once, without a mask prompt


def test_validation_scores_each_object_against_its_own_object():
    torch.manual_seed(0)
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=32).eval()
    with torch.no_grad():  # a bias that makes some masks non-empty, so the Dice is not trivially 0
        model.mask_decoder.output_hypernetworks_mlps[0].layers[-1].bias.fill_(0.5)
    objective = PromptedObjective(
        model, SegmentationLoss(1), quality_weight=1.0, prompt_config=PromptConfig(), amp_dtype=None
    ).eval()
    images, masks = torch.randn(2, 3, 32, 32), _two_object_masks()
    with torch.no_grad():
        _, union, object_dice = objective.score_objects(images, masks)
        boxes = torch.tensor([[3.0, 2.0, 9.0, 7.0], [15.0, 20.0, 27.0, 29.0]])
        features = model.image_encoder(images[:1]).expand(2, -1, -1, -1)
        out = model.decode(features, (32, 32), boxes=boxes, multimask_output=False)
    labels, _ = label_objects(masks[0].numpy())
    expected = []
    for k in range(2):
        pred, truth = out["masks"][k, 0].numpy() > 0, labels == k + 1
        expected.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    np.testing.assert_allclose(object_dice.numpy(), expected, rtol=1e-5)
    assert 0 < min(expected) < 1  # neither empty nor perfect: the formula is exercised
    np.testing.assert_array_equal((union[0, 0] > 0).numpy(), (out["masks"][:, 0] > 0).any(0).numpy())


def test_a_box_region_covers_every_cell_the_box_touches():
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64, box_region_prompt=True)
    drawn = []
    model.prompt_encoder.box_downscaling[0].register_forward_hook(lambda m, args, out: drawn.append(args[0]))
    boxes = torch.tensor([[5.0, 9.0, 6.0, 9.0], [0.0, 0.0, 63.0, 63.0]])  # a 2 x 1 pixel box; the image
    model.prompt_encoder((64, 64), (4, 4), boxes=boxes)
    regions = drawn[0][:, 0]  # (2, 16, 16): cells of 4 x 4 pixels
    expected = torch.zeros(16, 16)
    expected[2, 1] = 1  # pixels x 5-6, y 9 lie in the cell of columns 4-7, rows 8-11
    torch.testing.assert_close(regions[0], expected)
    assert regions[1].all()
    with pytest.raises(ValueError, match="box_region_prompt is for HRMedSegSAM"):
        hrmedseg.create_model("hrmedseg_t", box_region_prompt=True)


def test_a_box_around_one_object_does_not_return_the_others():
    """Four identical discs per image: a model that masks every disc whatever the box scores a
    per-object Dice near 0.4 and a leak near 0.75 (the paper's prompt encoder, trained the same way:
    0.36 and 0.76). The box's region as a dense prompt makes the mask follow the box."""
    torch.manual_seed(0)
    images, masks = map(torch.from_numpy, separate_discs(64, 64, per_image=4, seed=1))
    test_images, test_masks = map(torch.from_numpy, separate_discs(16, 64, per_image=4, seed=2))
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64, box_region_prompt=True)
    config = PromptConfig(box_probability=1.0, box_jitter=0.05, max_objects=4)
    objective = PromptedObjective(
        model, SegmentationLoss(1), quality_weight=1.0, prompt_config=config, amp_dtype=None
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        batch = torch.randint(0, len(images), (8,))
        loss, _ = objective.train()(images[batch], masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    objective.eval()
    boxes = sample_prompt_sets(test_masks, config, training=False)["box"]
    with torch.no_grad():
        features = model.image_encoder(test_images)[boxes.image_index]
        predicted = (
            model.decode(features, (64, 64), boxes=boxes.prompts, multimask_output=False)["masks"][:, 0] > 0
        )
        _, _, object_dice = objective.score_objects(test_images, test_masks)
    x0, y0, x1, y1 = boxes.prompts.long().T[:, :, None, None]
    rows, cols = torch.arange(64)[None, :, None], torch.arange(64)[None, None, :]
    inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
    leak = ((predicted & ~inside).sum((1, 2)) / predicted.sum((1, 2)).clamp(min=1)).float()
    assert object_dice.mean() > 0.65, object_dice.mean()
    assert leak.mean() < 0.35, leak.mean()
