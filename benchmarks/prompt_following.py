"""Which prompted-training setup teaches HRMedSegSAM to follow its box: short runs from scratch
on generated images of identical discs that do not touch (``hrmedseg.data.synthetic.separate_discs``),
where only the box can say which disc is meant.

    python benchmarks/prompt_following.py --steps 200 --seeds 0 1 2

Every candidate trains ``hrmedseg_sam_t`` at the same image size with box prompts only (sides
jittered by 5 %), batch 8, AdamW; then each disc of the held-out images is prompted with its exact
box. Prints a Markdown table, mean and spread over the seeds, of:

- per-object Dice: each box's mask against the disc in the box;
- leak: the share of each box's mask that lies outside the box (0 for a model that follows it);
- union Dice: the union of an image's masks against its mask (the paper's protocol, which a model
  masking every disc for any box also scores well on).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import hrmedseg
from hrmedseg.data.synthetic import separate_discs
from hrmedseg.evaluation.objects import box_leak
from hrmedseg.losses import SegmentationLoss
from hrmedseg.training.prompted import PromptConfig, PromptedObjective, sample_prompt_sets

# name -> (box_region_prompt, loss_margin, other_objects)
CANDIDATES: dict[str, tuple[bool, float | None, bool]] = {
    "paper's prompt encoder, window 1": (False, 1.0, False),
    "paper's prompt encoder, window 1 + other objects": (False, 1.0, True),
    "box region, window 1": (True, 1.0, False),
    "box region, window 3": (True, 3.0, False),
    "box region, whole image": (True, None, False),
    "box region, window 1 + other objects": (True, 1.0, True),
    "box region, window 3 + other objects": (True, 3.0, True),
}


def run(name: str, *, seed: int, steps: int, size: int, discs: int) -> dict[str, float]:
    region, margin, others = CANDIDATES[name]
    torch.manual_seed(seed)
    images, masks = map(torch.from_numpy, separate_discs(64, size, per_image=discs, seed=1000 + seed))
    test_images, test_masks = map(
        torch.from_numpy, separate_discs(16, size, per_image=discs, seed=2000 + seed)
    )
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=size, box_region_prompt=region)
    config = PromptConfig(
        box_probability=1.0, box_jitter=0.05, max_objects=discs, loss_margin=margin, other_objects=others
    )
    objective = PromptedObjective(
        model, SegmentationLoss(1), quality_weight=1.0, prompt_config=config, amp_dtype=None
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    objective.train()
    for _ in range(steps):
        batch = torch.randint(0, len(images), (8,))
        loss, _ = objective(images[batch], masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    objective.eval()
    boxes = sample_prompt_sets(test_masks, config, training=False)["box"]
    with torch.no_grad():
        _, union, object_dice = objective.score_objects(test_images, test_masks)
        features = model.image_encoder(test_images)[boxes.image_index]
        out = model.decode(features, (size, size), boxes=boxes.prompts, multimask_output=False)
    predicted = (out["masks"][:, 0] > 0).numpy()
    leaks = [box_leak(mask, box) for mask, box in zip(predicted, boxes.prompts.numpy(), strict=True)]
    found, truth = union[:, 0] > 0, test_masks > 0
    union_dice = 2 * (found & truth).sum() / (found.sum() + truth.sum()).clamp(min=1)
    return {
        "object_dice": float(object_dice.mean()),
        "leak": float(np.mean(leaks)),
        "union_dice": float(union_dice),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200, help="training steps of batch 8")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--discs", type=int, default=4, help="discs per image")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    setup = f"{args.size}² images with {args.discs} discs, {args.steps} steps"
    print(f"hrmedseg_sam_t, {setup}, seeds {args.seeds}\n")
    print("| setup | per-object Dice | leak | union Dice | s / run |")
    print("|---|---|---|---|---|")
    for name in args.candidates:
        start = time.perf_counter()
        results = [run(name, seed=s, steps=args.steps, size=args.size, discs=args.discs) for s in args.seeds]
        seconds = (time.perf_counter() - start) / len(args.seeds)
        cells = []
        for key in ("object_dice", "leak", "union_dice"):
            values = np.array([r[key] for r in results])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        print(f"| {name} | {' | '.join(cells)} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
