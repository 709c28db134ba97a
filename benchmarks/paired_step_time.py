"""The training-step time of one model relative to another, measured in pairs in one process.

    python benchmarks/paired_step_time.py --models hrmedseg_b hrmedseg_detail_b --threads 2
    python benchmarks/paired_step_time.py --models hrmedseg_b hrmedseg_detail_b \\
        --options '{}' '{"detail_half_res_block": "ln_gelu"}' --threads 1

On a shared or frequency-scaling CPU the same step timed in two fresh processes minutes apart
can differ by 30 %, more than the margins a step-time target asks about. Here both models are
built in one process and their steps alternate, so each pair meets the same machine state; the
ratio of each pair (second model / first) is reported as the median and range over the rounds.

A step: forward, binary cross-entropy on a random target, backward, AdamW step (fp32, no
gradient checkpointing), on random images of ``--size``² and ``--batch`` images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def training_step(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor):
    """A function that runs one training step of ``model`` on ``images``."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def seconds(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs=2, default=["hrmedseg_b", "hrmedseg_detail_b"], metavar="NAME")
    parser.add_argument("--options", nargs=2, default=["{}", "{}"], metavar="JSON",
                        help="ModelConfig fields of each model, as JSON")  # fmt: skip
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--rounds", type=int, default=10, help="timed pairs")
    args = parser.parse_args()

    import hrmedseg

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size)
    target = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()
    steps = [
        training_step(hrmedseg.create_model(name, img_size=args.size, **json.loads(options)), images, target)
        for name, options in zip(args.models, args.options, strict=True)
    ]
    for _ in range(args.warmup):
        for step in steps:
            step()
    times = [[seconds(step) for step in steps] for _ in range(args.rounds)]
    first, second = zip(*times, strict=True)
    ratios = [b / a for a, b in times]
    print(
        f"{args.models[0]} {statistics.median(first):.3f} s, {args.models[1]} {args.options[1]} "
        f"{statistics.median(second):.3f} s per step ({args.size}², batch {args.batch}, "
        f"{args.threads} thread(s)); ratio median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}-{max(ratios):.2f} over {args.rounds} pairs"
    )


if __name__ == "__main__":
    main()
