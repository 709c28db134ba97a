"""Training losses: the paper's Dice + focal for binary masks, Dice + cross-entropy for classes,
an optional boundary term, and the IoU-head (quality) regression target; with them the one
overlap helper (hard Dice and IoU) that validation and the IoU-head targets share.

All losses are computed in float32, also when the model ran under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .errors import ConfigError

# A loss is built from the number of classes and the weights of a training config, and maps
# (B, K, H, W) logits and (B, H, W) integer targets to a scalar.
LossBuilder = Callable[..., nn.Module]
_LOSSES: dict[str, LossBuilder] = {}
DEFAULT_LOSS = "dice_focal"


def soft_dice(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    smooth: float = 1.0,
    dims: tuple[int, ...] = (0, 2, 3),
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice of (B, K, H, W) probabilities and one-hot targets, summed over ``dims``: by
    default pooled over the batch, (K,); ``dims=(2, 3)`` gives one per map, (B, K).

    ``region`` (broadcastable to ``probs``, 0/1) restricts the sums to where it is 1.
    """
    if region is not None:
        probs, target = probs * region, target * region
    intersection = (probs * target).sum(dims)
    return (2 * intersection + smooth) / (probs.sum(dims) + target.sum(dims) + smooth)


def overlap_scores(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU of boolean masks (..., H, W), broadcast against each other: two (...) tensors,
    1 where both masks are empty."""
    intersection = (pred & truth).sum((-2, -1)).float()
    total = pred.sum((-2, -1)).float() + truth.sum((-2, -1)).float()
    empty, ones = total == 0, torch.ones_like(total)
    dice = torch.where(empty, ones, 2 * intersection / total.clamp(min=1))
    iou = torch.where(empty, ones, intersection / (total - intersection).clamp(min=1))
    return dice, iou


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class indices -> (B, K, H, W) float one-hot; binary (K=1) -> the foreground map."""
    if num_classes == 1:
        return (target > 0).float().unsqueeze(1)
    return F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).float()


def signed_distance(truth: torch.Tensor) -> torch.Tensor:
    """Signed distance of every pixel to the outline of its map in ``truth`` (..., H, W), boolean,
    as a fraction of the map's larger side: the distance to the nearest foreground pixel outside,
    0 on the outermost foreground pixels, minus the depth below them inside. A map with no outline
    (empty or full) is 0 throughout. float32, on ``truth``'s device.

    Computed on the CPU (scipy's exact Euclidean distance transform), so a GPU step waits for it.
    """
    height, width = truth.shape[-2:]
    masks = truth.detach().cpu().numpy().astype(bool).reshape(-1, height, width)
    distances = np.zeros(masks.shape, dtype=np.float32)
    for index, mask in enumerate(masks):
        if mask.any() and not mask.all():
            outside = ndimage.distance_transform_edt(~mask)
            depth = ndimage.distance_transform_edt(mask)
            distances[index] = np.where(mask, 1.0 - depth, outside) / max(height, width)
    return torch.from_numpy(distances.reshape(truth.shape)).to(truth.device)


def boundary_term(probs: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The boundary loss of Kervadec et al. (MIDL 2019), offset to be 0 for a perfect prediction:
    the mean over pixels of ``(p - g) * d``, with ``d`` the truth's :func:`signed_distance`.

    Every wrong pixel costs in proportion to its distance from the true outline, so a mask that
    bulges far past the object (what HD95 measures) costs more than a rim a pixel off, which
    Dice weighs the same. Never negative. probs and truth: (B, K, H, W) -> scalar.
    """
    distance = signed_distance(truth > 0.5)
    return ((probs - truth) * distance).mean()


def focal_weighting(bce: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """The paper's focal term: mean BCE re-weighted by how poor it is, ``alpha (1 - e^-bce)^gamma bce``."""
    return alpha * (1 - torch.exp(-bce)) ** gamma * bce


def object_windows(targets: torch.Tensor, margin: float, min_margin: int = 8) -> torch.Tensor:
    """(P, H, W) float masks of each object's bounding box enlarged on every side by ``margin``
    times the box's size (at least ``min_margin`` pixels); the whole image for an empty target."""
    _, height, width = targets.shape
    rows, cols = targets.any(2), targets.any(1)  # (P, H), (P, W)

    def span(present: torch.Tensor, length: int) -> torch.Tensor:
        positions = torch.arange(length, device=present.device)
        first = torch.where(present, positions, length).amin(1)
        last = torch.where(present, positions, -1).amax(1)
        pad = torch.clamp((margin * (last - first + 1)).ceil().long(), min=min_margin)
        inside = (positions >= (first - pad)[:, None]) & (positions <= (last + pad)[:, None])
        return inside | ~present.any(1, keepdim=True)

    return (span(rows, height)[:, :, None] & span(cols, width)[:, None, :]).float()


def binary_loss_per_mask(
    logits: torch.Tensor, target: torch.Tensor, loss: SegmentationLoss, *, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The binary form of ``loss`` for each mask separately: logits (P, C, H, W) against targets
    (P, H, W) -> (P, C). Used for prompted training, where every prompt has its own object.

    ``weights`` (P, H, W) of 0/1 restricts each mask's Dice and BCE to a region (see
    :func:`object_windows`)."""
    logits = logits.float()
    truth = target.float().unsqueeze(1).expand_as(logits)
    w = torch.ones_like(truth) if weights is None else weights.float().unsqueeze(1).expand_as(logits)
    dice = soft_dice(torch.sigmoid(logits), truth, smooth=loss.smooth, dims=(2, 3), region=w)
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    bce = (bce * w).sum((2, 3)) / w.sum((2, 3)).clamp(min=1)
    focal = focal_weighting(bce, loss.focal_alpha, loss.focal_gamma)
    return loss.dice_weight * (1 - dice) + loss.focal_weight * focal


class SegmentationLoss(nn.Module):
    """``dice_weight * (1 - Dice) + focal_weight * Focal`` (binary) or
    ``dice_weight * (1 - Dice) + ce_weight * CE`` (multi-class).

    Binary (one logit map): the paper's loss. Dice is pooled over the whole batch with smoothing 1;
    the focal term re-weights the batch-mean BCE as ``alpha * (1 - exp(-BCE))**gamma * BCE``
    (alpha 0.8, gamma 2), so it grows in weight while predictions are poor. This is the authors'
    form, not the per-pixel focal loss of RetinaNet or MONAI's ``FocalLoss``.

    Multi-class (K >= 2 logit maps, softmax): Dice averaged over the foreground classes 1..K-1,
    plus pixel-wise cross-entropy.

    ``boundary_weight`` (default 0: the paper's loss) adds that weight times the
    :func:`boundary_term` of the mask (binary) or of each foreground class (multi-class).

    Targets are (B, H, W) integer maps (binary: any non-zero value is foreground).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        dice_weight: float = 0.8,
        focal_weight: float = 0.2,
        ce_weight: float = 0.2,
        boundary_weight: float = 0.0,
        focal_alpha: float = 0.8,
        focal_gamma: float = 2.0,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.focal_weight = focal_weight
        self.ce_weight = ce_weight
        self.boundary_weight = boundary_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        truth = one_hot(target, self.num_classes)
        if self.num_classes == 1:
            probs = torch.sigmoid(logits)
            dice = soft_dice(probs, truth, smooth=self.smooth).mean()
            bce = F.binary_cross_entropy_with_logits(logits, truth)
            loss = self.dice_weight * (1 - dice) + self.focal_weight * focal_weighting(
                bce, self.focal_alpha, self.focal_gamma
            )
        else:
            probs, truth = logits.softmax(1)[:, 1:], truth[:, 1:]  # the foreground classes
            dice = soft_dice(probs, truth, smooth=self.smooth).mean()
            loss = self.dice_weight * (1 - dice) + self.ce_weight * F.cross_entropy(logits, target.long())
        if self.boundary_weight:
            loss = loss + self.boundary_weight * boundary_term(probs, truth)
        return loss


def register_loss(name: str) -> Callable[[LossBuilder], LossBuilder]:
    """Register a loss under ``name``, the value of a training config's ``loss:`` key.

    The builder is called as ``builder(num_classes, dice_weight=..., focal_weight=...,
    ce_weight=..., boundary_weight=...)`` with the config's values (it may ignore the weights)
    and returns a module ``loss(logits (B, K, H, W), target (B, H, W) int) -> scalar``.

    Example:
        >>> @register_loss("dice_only")
        ... def dice_only(num_classes: int, **weights: float) -> nn.Module:
        ...     return SegmentationLoss(num_classes, dice_weight=1.0, focal_weight=0.0, ce_weight=0.0)
    """

    def register(builder: LossBuilder) -> LossBuilder:
        if name in _LOSSES:
            raise ConfigError(f"loss {name!r} is registered already")
        _LOSSES[name] = builder
        return builder

    return register


def build_loss(name: str, num_classes: int, **weights: float) -> nn.Module:
    """The registered loss ``name`` for a ``num_classes`` model, with a config's term weights
    (``TrainConfig.loss_weights()``)."""
    if name not in _LOSSES:
        raise ConfigError(f"unknown loss {name!r}; registered losses: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name](num_classes, **weights)


@register_loss(DEFAULT_LOSS)
def _dice_focal(num_classes: int, **weights: float) -> SegmentationLoss:
    """The paper's loss: Dice + focal (binary), Dice + cross-entropy (multi-class); plus the
    boundary term where its weight is set."""
    return SegmentationLoss(num_classes, **weights)


def hard_masks(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, K, H, W) boolean masks: sigmoid > 0.5 for K=1, argmax otherwise."""
    if logits.shape[1] == 1:
        return logits > 0
    return F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).bool()


@torch.no_grad()
def achieved_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (B, K) of each predicted class mask with the truth; 1 where both are empty."""
    return overlap_scores(hard_masks(logits), one_hot(target, logits.shape[1]).bool())[1]


def quality_loss(predicted_iou: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the IoU head's prediction and the IoU the masks actually achieved (as in SAM)."""
    return F.mse_loss(predicted_iou.float(), achieved_iou(logits, target))
