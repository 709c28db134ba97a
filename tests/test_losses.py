"""The segmentation losses against MONAI and against their formulas; the shared overlap helper."""

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

import hrmedseg
from hrmedseg.losses import SegmentationLoss, binary_loss_per_mask, overlap_scores


def random_case(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(3, num_classes, 20, 24, generator=generator)
    target = torch.randint(0, max(num_classes, 2), (3, 20, 24), generator=generator)
    return logits, target


def test_binary_loss_matches_monai_dice_ce_with_the_focal_reweighting_off():
    """With alpha 1 and gamma 0 the paper's focal term is the plain BCE, so the binary loss is
    MONAI's Dice + BCE over the pooled batch with the same smoothing."""
    logits, target = random_case(1)
    ours = SegmentationLoss(1, dice_weight=0.8, focal_weight=0.2, focal_alpha=1.0, focal_gamma=0.0)
    monai = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0, lambda_dice=0.8, lambda_ce=0.2)
    torch.testing.assert_close(ours(logits, target), monai(logits, target[:, None].float()))


def test_binary_focal_term_is_the_papers_reweighted_batch_bce():
    logits, target = random_case(1, seed=1)
    x, y = logits[:, 0].double().numpy(), target.double().numpy()
    bce = np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
    expected = 0.8 * (1 - np.exp(-bce)) ** 2 * bce
    focal_only = SegmentationLoss(1, dice_weight=0.0, focal_weight=1.0)
    assert focal_only(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_multiclass_loss_matches_monai_dice_ce_and_has_its_own_ce_weight():
    logits, target = random_case(4, seed=2)
    monai = DiceCELoss(
        softmax=True, to_onehot_y=True, include_background=False, batch=True,
        smooth_nr=1.0, smooth_dr=1.0, lambda_dice=0.8, lambda_ce=0.3,
    )  # fmt: skip
    expected = monai(logits, target[:, None])
    for focal_weight in (0.0, 0.5):  # the binary focal weight plays no part in the multi-class loss
        ours = SegmentationLoss(4, dice_weight=0.8, focal_weight=focal_weight, ce_weight=0.3)
        torch.testing.assert_close(ours(logits, target), expected)


def test_per_mask_loss_is_the_loss_of_each_mask_alone():
    logits, _ = random_case(3, seed=3)  # 3 prompts x 3 outputs
    targets = torch.randint(0, 2, (3, 20, 24), generator=torch.Generator().manual_seed(4)).bool()
    loss = SegmentationLoss(1)
    per_mask = binary_loss_per_mask(logits, targets, loss)
    assert per_mask.shape == (3, 3)
    for p in range(3):
        for c in range(3):
            torch.testing.assert_close(per_mask[p, c], loss(logits[p : p + 1, c : c + 1], targets[p : p + 1]))


def test_overlap_scores_by_hand_with_the_empty_conventions():
    pred = torch.zeros(4, 5, 6, dtype=torch.bool)
    truth = torch.zeros(4, 5, 6, dtype=torch.bool)
    pred[0, 1:3, 1:3] = True  # 4 pixels
    truth[0, 1:3, 1:4] = True  # 6 pixels, 4 shared
    pred[1, 0, 0] = True  # disjoint from its truth
    truth[1, 4, 5] = True
    truth[2, 0, 0] = True  # empty prediction of a non-empty truth
    # case 3: both empty
    dice, iou = overlap_scores(pred, truth)
    torch.testing.assert_close(dice, torch.tensor([0.8, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(iou, torch.tensor([4 / 6, 0.0, 0.0, 1.0]))
    # Broadcasting: several predictions against one truth.
    dice, iou = overlap_scores(pred[:2], truth[:1])
    torch.testing.assert_close(iou, torch.tensor([4 / 6, 0.0]))


def test_the_loss_key_chooses_a_registered_loss(tmp_path):
    from hrmedseg.losses import build_loss, register_loss
    from hrmedseg.training import TrainConfig
    from hrmedseg.training.engine import make_objective

    @register_loss("test_dice_only")
    def dice_only(num_classes: int, **weights: float) -> SegmentationLoss:
        return SegmentationLoss(num_classes, dice_weight=1.0, focal_weight=0.0, ce_weight=0.0)

    weights = {"dice_weight": 0.5, "focal_weight": 0.5, "ce_weight": 0.0}
    default = build_loss("dice_focal", 1, **weights)
    assert isinstance(default, SegmentationLoss) and default.focal_weight == 0.5
    assert build_loss("test_dice_only", 1, **weights).focal_weight == 0.0
    with pytest.raises(ValueError, match="unknown loss 'dice'; registered losses: dice_focal, test_dice"):
        build_loss("dice", 1, **weights)
    with pytest.raises(ValueError, match="loss 'test_dice_only' is registered already"):
        register_loss("test_dice_only")(dice_only)

    config = TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), loss="test_dice_only")
    objective = make_objective(hrmedseg.create_model("hrmedseg_t", img_size=64), config, None)
    assert objective.loss_fn.dice_weight == 1.0 and objective.loss_fn.focal_weight == 0.0


def brute_force_signed_distance(mask: np.ndarray) -> np.ndarray:
    """fp64, by definition: outside, the distance to the nearest foreground pixel; inside, one
    minus the distance to the nearest background pixel; over the larger side."""
    rows, cols = np.indices(mask.shape)
    points = np.stack([rows.ravel(), cols.ravel()], 1).astype(np.float64)
    foreground, background = points[mask.ravel()], points[~mask.ravel()]
    out = np.empty(mask.size)
    for i, (point, inside) in enumerate(zip(points, mask.ravel(), strict=True)):
        others = background if inside else foreground
        nearest = np.sqrt(((others - point) ** 2).sum(1)).min()
        out[i] = 1 - nearest if inside else nearest
    return out.reshape(mask.shape) / max(mask.shape)


def test_signed_distance_matches_its_definition_and_is_zero_without_an_outline():
    from hrmedseg.losses import signed_distance

    generator = np.random.default_rng(0)
    masks = generator.random((3, 9, 13)) < 0.35  # scattered blobs, holes included
    masks[1] = False
    masks[1, 2:7, 3:11] = True  # one rectangle
    masks[1, 4, 6] = False  # with a one-pixel hole
    ours = signed_distance(torch.from_numpy(masks))
    assert ours.dtype == torch.float32 and ours.shape == (3, 9, 13)
    for mask, distance in zip(masks, ours, strict=True):
        np.testing.assert_allclose(distance.numpy(), brute_force_signed_distance(mask), atol=1e-6)
    empty, full = torch.zeros(2, 5, 5, dtype=torch.bool), torch.ones(1, 5, 5, dtype=torch.bool)
    assert not signed_distance(empty).any() and not signed_distance(full).any()


def test_boundary_term_charges_each_wrong_pixel_its_distance_to_the_outline():
    from hrmedseg.losses import boundary_term

    truth = torch.zeros(1, 1, 20, 20)
    truth[..., 5:10, 5:10] = 1
    assert boundary_term(truth.clone(), truth).item() == 0.0
    for column, distance in ((12, 3), (17, 8)):  # one false-positive pixel, right of the square
        probs = truth.clone()
        probs[..., 7, column] = 1
        assert boundary_term(probs, truth).item() == pytest.approx(distance / 20 / 400)
    probs = truth.clone()
    probs[..., 7, 7] = 0.5  # half a miss, three pixels deep: depth 3, distance -2
    assert boundary_term(probs, truth).item() == pytest.approx(0.5 * 2 / 20 / 400)
    # Continuous probabilities: never below the perfect prediction's 0.
    probs = torch.rand(4, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    assert boundary_term(probs, truth.expand(4, -1, -1, -1)).item() > 0


def test_boundary_term_does_not_depend_on_the_resolution():
    """The same shapes drawn at twice the size cost about the same: distances are fractions of the
    map, so one weight suits every img_size."""
    from hrmedseg.losses import boundary_term

    def case(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        truth = ((y - size * 0.4) ** 2 + (x - size * 0.4) ** 2 < (size * 0.25) ** 2).float()
        bulge = ((y - size * 0.7) ** 2 + (x - size * 0.75) ** 2 < (size * 0.1) ** 2).float()
        return torch.maximum(truth, bulge)[None, None], truth[None, None]

    small, large = boundary_term(*case(64)), boundary_term(*case(128))
    assert small.item() > 0 and large.item() == pytest.approx(small.item(), rel=0.05)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_boundary_weight_adds_the_weighted_term_and_its_gradient(num_classes):
    from hrmedseg.losses import boundary_term, one_hot

    logits, target = random_case(num_classes, seed=5)
    logits.requires_grad_(True)
    plain = SegmentationLoss(num_classes)
    with_boundary = SegmentationLoss(num_classes, boundary_weight=2.5)
    truth = one_hot(target, num_classes)
    if num_classes == 1:
        probs = torch.sigmoid(logits)
    else:
        probs, truth = logits.softmax(1)[:, 1:], truth[:, 1:]
    expected = plain(logits, target) + 2.5 * boundary_term(probs, truth)
    torch.testing.assert_close(with_boundary(logits, target), expected)
    if num_classes == 1:  # d/dlogit of mean(sigmoid(x) * d) is sigmoid'(x) * d / N
        from hrmedseg.losses import signed_distance

        (gradient,) = torch.autograd.grad(boundary_term(probs, truth), logits)
        sigmoid = torch.sigmoid(logits.detach().double())
        by_hand = sigmoid * (1 - sigmoid) * signed_distance(truth > 0.5).double() / truth.numel()
        torch.testing.assert_close(gradient.double(), by_hand)


def test_boundary_weight_reaches_the_loss_from_the_config_and_is_refused_where_it_would_be_ignored(tmp_path):
    from hrmedseg.errors import ConfigError
    from hrmedseg.training import TrainConfig
    from hrmedseg.training.engine import make_objective

    config = TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), boundary_weight=0.5)
    objective = make_objective(hrmedseg.create_model("hrmedseg_t", img_size=64), config, None)
    assert objective.loss_fn.boundary_weight == 0.5
    with pytest.raises(ConfigError, match="boundary_weight applies to automatic models"):
        make_objective(hrmedseg.create_model("hrmedseg_sam_b", img_size=64), config, None)
    with pytest.raises(ConfigError, match="boundary_weight must be >= 0, got -1"):
        TrainConfig(data=str(tmp_path), output=str(tmp_path / "run"), boundary_weight=-1)
