"""Peak memory and time of one training step and of inference, one fresh process per configuration.

    python benchmarks/memory_speed.py                       # CPU (or CUDA if available), all configs
    python benchmarks/memory_speed.py --device cuda --amp bf16 --sizes 1024

A training step is: forward, the paper's loss (0.8 Dice + 0.2 focal on a full-resolution binary
target, plus the IoU-head MSE), backward, Adam step. Inference is a no-grad forward in eval mode.
A distillation step (``--modes distill``) is what ``hrmedseg distill`` trains with a cached
teacher: the model's encoder (with its detail stem where the encoder reads the stem's map)
forward, the MSE against a 256-channel target embedding, backward, Adam step.

Memory method:
- CPU: growth of the process's peak resident set size (``ru_maxrss``) over the resident size
  with the idle model loaded: activations, gradients, Adam state, inputs, temporaries. It runs
  with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc hands freed large blocks back to the system
  and RSS follows the live tensors (the analogue of CUDA's allocated, not reserved, memory); with
  glibc's default the RSS also keeps freed-but-cached heap pages. That setting slows allocation,
  so the time is measured in a second fresh process with the default allocator.
- CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation of the idle model; memory and
  time come from the same process.
Time: median of the timed repeats after one warm-up repeat.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def current_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found")


def run_single(args: argparse.Namespace) -> dict:
    import hrmedseg
    from hrmedseg.losses import SegmentationLoss
    from hrmedseg.training.objectives import AutomaticObjective

    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.model == "unet_resnet34":
        from common.baselines import unet_config  # benchmarks/ is on sys.path when run as a script

        model, quality_weight = hrmedseg.build_model(unet_config(args.size)).to(device), 0.0
    else:
        options = json.loads(args.model_options)
        model = hrmedseg.create_model(args.model, img_size=args.size, **options).to(device)
        quality_weight = 1.0
        model.set_grad_checkpointing(args.checkpointing)
    if args.compile != "none":
        from hrmedseg.runtime import compile_model

        compile_model(model, args.compile)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    if args.mode == "distill":
        from hrmedseg.distillation.engine import DistillationObjective
        from hrmedseg.modeling import embedding_encoder

        trained = embedding_encoder(model)
        # A cached teacher embedding.
        target = torch.randn(args.batch, model.config.decoder_dim, *model.config.grid_size, device=device)
        objective = DistillationObjective(trained, amp_dtype)
    else:
        trained = model
        target = torch.zeros(args.batch, args.size, args.size, dtype=torch.long, device=device)
        target[:, args.size // 4 : 3 * args.size // 4, args.size // 3 : 2 * args.size // 3] = 1
        objective = AutomaticObjective(
            model, SegmentationLoss(num_classes=1), quality_weight=quality_weight, amp_dtype=amp_dtype
        )
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-3)

    def step() -> None:
        if args.mode == "infer":
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(images)
            return
        loss, _ = objective(images, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train(args.mode != "infer")
    if device.type == "cuda":
        torch.cuda.synchronize()
        idle = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        idle = current_rss_bytes()
    times = []
    warmup = 1 if args.compile == "none" else 3  # compilation, then CUDA-graph recording
    for _ in range(args.repeats + warmup):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - idle
        card = torch.cuda.get_device_name()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - idle
        card = f"CPU, {torch.get_num_threads()} threads"
    return {
        "model": args.model,
        "mode": args.mode,
        "size": args.size,
        "batch": args.batch,
        "checkpointing": args.checkpointing,
        "amp": args.amp,
        "device": card,
        "peak_gb": peak / 1e9,
        "peak_gb_per_image": peak / 1e9 / args.batch,
        "compile": args.compile,
        "seconds": statistics.median(times[warmup:]),
        "images_per_second": args.batch / statistics.median(times[warmup:]),
    }


def _measure(cmd: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-300:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="hrmedseg_b", help="a registered name, or unet_resnet34 (needs smp)"
    )
    parser.add_argument(
        "--model-options", default="{}",
        help='JSON of ModelConfig fields, e.g. \'{"detail": ["skips"]}\' (the ablation of the detail path)',
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--modes", nargs="+", default=["train", "infer"], choices=["train", "infer", "distill"]
    )
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after the warm-up")
    parser.add_argument(
        "--compile",
        default="none",
        help="torch.compile mode of our models (none, default, reduce-overhead, ...)",
    )
    parser.add_argument(
        "--no-checkpointing-rows", action="store_true", help="skip the gradient-checkpointing rows"
    )
    parser.add_argument("--json", help="also write all results to this JSON file")
    # Internal: run one configuration in this process.
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model == "unet_resnet34" and "distill" in args.modes:
        parser.error("--modes distill needs one of our models: the U-Net has no image embedding to distil")

    if args.single:
        print(json.dumps(run_single(args)))
        return

    results = []
    print("| mode | size | batch | grad ckpt | amp | compile | peak GB | GB / image | s / step | images / s "
          "| device |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, size, batch, ckpt in itertools.product(args.modes, args.sizes, args.batches, [False, True]):
        if ckpt and (mode == "infer" or args.model == "unet_resnet34" or args.no_checkpointing_rows):
            continue  # checkpointing only changes training, and only our models have it
        cmd = [
            sys.executable,
            __file__,
            "--single",
            "--model",
            args.model,
            "--device",
            args.device,
            "--mode",
            mode,
            "--size",
            str(size),
            "--batch",
            str(batch),
            "--amp",
            args.amp,
            "--repeats",
            str(args.repeats),
            "--compile",
            args.compile,
            "--model-options",
            args.model_options,
        ]
        cmd += ["--checkpointing"] if ckpt else []  # fmt: skip
        try:
            if args.device == "cpu":
                r = _measure(cmd, {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
                timed = _measure(cmd, os.environ)
                r.update(seconds=timed["seconds"], images_per_second=timed["images_per_second"])
            else:
                r = _measure(cmd, os.environ)
        except RuntimeError as err:
            print(f"| {mode} | {size} | {batch} | {ckpt} | {args.amp} | {args.compile} | failed: {err} |")
            continue
        results.append(r)
        print(
            f"| {mode} | {size} | {batch} | {'yes' if ckpt else 'no'} | {args.amp} | {args.compile} | "
            f"{r['peak_gb']:.3f} | "
            f"{r['peak_gb_per_image']:.3f} | {r['seconds']:.3f} | {r['images_per_second']:.2f} | "
            f"{r['device']} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
