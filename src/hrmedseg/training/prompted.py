"""Training HRMedSegSAM with prompts derived from the ground truth (paper section 4).

Every object of a training mask becomes a prompt set: its box (optionally jittered) or one
positive point inside it, with that object's mask as the target. The masks the training data
gives hold object labels (the folder's instance maps where it has them, so touching nuclei stay
apart; see :class:`~hrmedseg.data.SegmentationDataset`); a 0/1 mask's objects are its connected
components. Box prompts
train the single-mask output; point prompts, which are ambiguous, train the three multimask
outputs SAM-style: only the output with the lowest loss is penalised. The IoU head learns the IoU
each output actually achieved. The image embedding is computed once per image and shared by all
of its prompt sets.

Each object's loss is computed over a window around it (its box enlarged by ``loss_margin`` box
sizes per side), so that a small object is not a few pixels of foreground in a whole image of
background; for large objects the window is the whole image. With ``other_objects`` the pixels of
the image's other objects join every window wherever they lie, so a mask painted on a neighbour
outside the window is still penalised.

In evaluation mode every object is prompted with its exact box, and the union of the predicted
object masks is the image's prediction. Validation also scores each object's mask against its own
object (:meth:`PromptedObjective.score_objects`): the union cannot tell a model that follows its
prompt from one that masks every object whatever the prompt, so the per-object Dice picks the best
epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.prompts import consecutive_labels, label_objects, prompts_from_labels
from ..errors import ConfigError, UnknownOptionError
from ..losses import SegmentationLoss, binary_loss_per_mask, object_windows, overlap_scores
from ..modeling import PromptableSegmentationModel
from ..schema import checked_fields
from .objectives import Objective


@dataclass(frozen=True)
class PromptConfig:
    box_probability: float = 0.5  # share of prompt sets given a box; the others get one point
    box_jitter: float = 0.1  # box sides move by up to this fraction of the box size
    # Sides only move outwards, so a box always holds its whole object: the model learns that
    # nothing of its object lies outside the box, as a user's box means.
    box_jitter_outward: bool = False
    max_objects: int = 8  # prompt sets drawn per image (a random subset of its objects)
    # Each object's loss covers its box enlarged by this many box sizes on every side (null: the
    # whole image). Small objects scored over a whole image are a tiny foreground among a huge
    # background, which drives all logits negative and stalls training (seen on nuclei at 256^2).
    loss_margin: float | None = 1.0
    # Add the image's other objects to each object's loss window, wherever they lie: a mask that
    # also covers objects outside its prompt is penalised there.
    other_objects: bool = False
    # Share of training batches (per prompt kind) decoded twice, SAM-style: the second pass also
    # gets the first pass's low-res logits as a mask prompt, which trains the mask-prompt path.
    mask_prompt_probability: float = 0.25

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise UnknownOptionError(f"unknown prompts option(s) {unknown}; known: {sorted(known)}")
        return cls(**checked_fields(cls, values, source="prompts"))


@dataclass
class PromptSets:
    """Prompt sets of one kind: the image each belongs to, its prompt and its object mask."""

    image_index: torch.Tensor  # (P,)
    prompts: torch.Tensor  # (P, 4) boxes or (P, 2) points, model-input pixels
    targets: torch.Tensor  # (P, H, W) bool


def sample_prompt_sets(masks: torch.Tensor, config: PromptConfig, training: bool) -> dict[str, PromptSets]:
    """Prompt sets for a batch of masks (B, H, W), keyed ``"box"`` and ``"point"``: a mask's
    objects are its labels (values 1..N, gaps allowed), or for a 0/1 mask its connected components.

    Training draws objects, prompt kinds and jitter from torch's global RNG (so a resumed run
    repeats them); evaluation prompts every object with its exact box.
    """
    chosen: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"box": [], "point": []}
    for i, mask in enumerate(masks.cpu().numpy()):
        labels = label_objects(mask)[0] if mask.max(initial=0) <= 1 else consecutive_labels(mask)
        count = int(labels.max(initial=0))
        if count == 0:
            continue
        jitter_rng = np.random.default_rng(int(torch.randint(2**31, ()).item())) if training else None
        boxes, points = prompts_from_labels(
            labels,
            box_jitter=config.box_jitter if training else 0.0,
            outward=config.box_jitter_outward,
            rng=jitter_rng,
        )
        order = torch.randperm(count)[: config.max_objects].tolist() if training else range(count)
        for k in order:
            use_box = not training or torch.rand(()).item() < config.box_probability
            kind, prompt = ("box", boxes[k]) if use_box else ("point", points[k])
            chosen[kind].append((i, prompt, labels == k + 1))
    device = masks.device
    return {
        kind: PromptSets(
            torch.tensor([c[0] for c in items], device=device),
            torch.as_tensor(np.stack([c[1] for c in items]), device=device),
            torch.as_tensor(np.stack([c[2] for c in items]), device=device),
        )
        for kind, items in chosen.items()
        if items
    }


def loss_windows(group: PromptSets, config: PromptConfig, masks: torch.Tensor) -> torch.Tensor | None:
    """(P, H, W) 0/1 weights of each prompt set's loss: its object's window (``loss_margin``), with
    ``other_objects`` also the other objects of its image in ``masks`` (B, H, W), wherever they
    lie; None for the whole image."""
    if config.loss_margin is None:
        return None
    windows = object_windows(group.targets, config.loss_margin)
    if not config.other_objects:
        return windows
    others = (masks[group.image_index] > 0) & ~group.targets
    return torch.maximum(windows, others.float())


def achieved_iou_per_output(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU (P, C) of each output mask (logits > 0) with its object; 1 where both are empty."""
    return overlap_scores(logits > 0, targets.unsqueeze(1))[1]


class PromptedObjective(Objective):
    """forward(images, masks) -> (loss over all prompt sets, per-image logits (B, 1, H, W)).

    The logits are the maximum over each image's object predictions (the union of its masks),
    very negative where an image has no object.
    """

    def __init__(
        self,
        model: PromptableSegmentationModel,
        loss_fn: SegmentationLoss,
        *,
        quality_weight: float,
        prompt_config: PromptConfig,
        amp_dtype: torch.dtype | None,
    ) -> None:
        if loss_fn.boundary_weight:  # binary_loss_per_mask scores each object without it
            raise ConfigError("boundary_weight applies to automatic models, not to promptable ones")
        super().__init__(model, loss_fn, quality_weight=quality_weight, amp_dtype=amp_dtype)
        self.prompt_config = prompt_config

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, union, _ = self.score_objects(images, masks)
        return loss, union

    def score_objects(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`forward`, plus the Dice (P,) of each prompt set's chosen mask (logits > 0)
        against its own object (1 where both are empty)."""
        size = tuple(images.shape[-2:])
        with self.autocast(images.device.type):
            embedding = self.model.embed(images)
        groups = sample_prompt_sets(masks, self.prompt_config, training=self.training)
        total_sets = sum(len(g.image_index) for g in groups.values())
        # Keeps the graph whole for batches without objects.
        loss = sum(tensor.float().sum() for tensor in embedding.values()) * 0.0
        union = torch.full((len(images), 1, *size), -1e4, device=images.device)
        object_dice = []
        for kind, group in groups.items():
            if kind == "box":
                prompts = {"boxes": group.prompts}
            else:
                labels = torch.ones(len(group.prompts), 1, dtype=torch.long, device=images.device)
                prompts = {"point_coords": group.prompts[:, None, :], "point_labels": labels}
            multimask = kind == "point"
            objects_embedding = {name: tensor[group.image_index] for name, tensor in embedding.items()}
            mask_inputs = None
            if self.training and torch.rand(()).item() < self.prompt_config.mask_prompt_probability:
                mask_inputs = self._previous_prediction(objects_embedding, size, multimask, prompts)
            with self.autocast(images.device.type):
                out = self.model.decode(
                    **objects_embedding, image_size=size, multimask_output=multimask, mask_inputs=mask_inputs,
                    **prompts,
                )  # fmt: skip
            logits = out["masks"].float()
            windows = loss_windows(group, self.prompt_config, masks)
            per_output = binary_loss_per_mask(logits, group.targets, self.loss_fn, weights=windows)  # (P, C)
            best = per_output.argmin(1, keepdim=True)
            share = len(group.image_index) / total_sets
            loss = loss + share * per_output.gather(1, best).mean()
            if self.quality_weight:
                iou = achieved_iou_per_output(logits.detach(), group.targets)
                loss = loss + share * self.quality_weight * F.mse_loss(out["iou_predictions"].float(), iou)
            chosen = logits.gather(1, best[:, :, None, None].expand(-1, 1, *size)).detach()
            object_dice.append(overlap_scores(chosen > 0, group.targets.unsqueeze(1))[0][:, 0])
            chosen = chosen.flatten(1)
            rows = group.image_index[:, None].expand_as(chosen)
            union = union.flatten(1).scatter_reduce(0, rows, chosen, "amax").view_as(union)
        return loss, union, torch.cat(object_dice) if object_dice else union.new_zeros(0)

    @torch.no_grad()
    def _previous_prediction(
        self,
        embedding: dict[str, torch.Tensor],
        size: tuple[int, int],
        multimask: bool,
        prompts: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Low-res logits (P, 1, H/4, W/4) of a first decoding pass, its most confident output."""
        device = embedding["image_embeddings"].device
        with self.autocast(device.type):
            out = self.model.decode(**embedding, image_size=size, multimask_output=multimask, **prompts)
        best = out["iou_predictions"].argmax(1)
        return out["low_res_logits"][torch.arange(len(best), device=best.device), best].unsqueeze(1).float()
