"""One training step of hrmedseg_b against the authors' released HRMedSeg, side by side in one
process on the same device.

    python benchmarks/authors_side_by_side.py --authors-repo PATH/TO/HRMedSeg --size 1024 --batch 1

``--authors-repo`` is a local checkout of github.com/xq141839/HRMedSeg (their ``model.py`` needs
``opencv-python-headless`` and ``timm``); their ``MHRMedSeg(dim=96)`` is built from it, nothing
is copied into this project. The step is the same for both: forward, the paper's loss (0.8 Dice
+ 0.2 focal) on the full-resolution logits, backward, Adam; ours adds its IoU-head term, as its
training does. The two models alternate step by step after two warm-up steps each, so a load
that comes and goes on the machine hits both alike; the time is the median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import hrmedseg
from hrmedseg.losses import SegmentationLoss
from hrmedseg.training.objectives import AutomaticObjective


def authors_model(repo: Path, size: int) -> torch.nn.Module:
    sys.path.insert(0, str(repo))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their imports use deprecated timm paths
        from model import MHRMedSeg

    return MHRMedSeg(dim=96, img_size=size)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--authors-repo", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    masks = torch.zeros(args.batch, args.size, args.size, dtype=torch.long, device=device)
    masks[:, args.size // 4 : 3 * args.size // 4, args.size // 3 : 2 * args.size // 3] = 1
    loss_fn = SegmentationLoss(1)

    ours = hrmedseg.create_model("hrmedseg_b", img_size=args.size).to(device)
    objective = AutomaticObjective(ours, loss_fn, quality_weight=1.0, amp_dtype=None)
    # The authors' release has its multiscale pooling commented out (docs/paper notes): the same
    # network as ours without it.
    unpooled = hrmedseg.create_model("hrmedseg_b", img_size=args.size, pool_sizes=()).to(device)
    unpooled_objective = AutomaticObjective(unpooled, loss_fn, quality_weight=1.0, amp_dtype=None)
    theirs = authors_model(args.authors_repo.resolve(), args.size).to(device)
    steps = {}
    for name, model, compute in (
        ("hrmedseg_b (ours)", ours, lambda: objective(images, masks)[0]),
        (
            "hrmedseg_b without the pooling, as their release",
            unpooled,
            lambda: unpooled_objective(images, masks)[0],
        ),
        ("authors' MHRMedSeg(dim=96)", theirs, lambda: loss_fn(theirs(images), masks)),
    ):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(compute=compute, optimizer=optimizer) -> None:
            compute().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[name] = step
    for step in steps.values():
        for _ in range(2):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    setting = f"{args.size}², batch {args.batch}, {where}, torch {torch.__version__}"
    print(f"| model ({setting}) | s / training step |")
    print("|---|---|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
