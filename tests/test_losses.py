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
