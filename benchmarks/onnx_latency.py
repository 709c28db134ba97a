"""Inference latency of one image: PyTorch eager against onnxruntime on the same exported model.

    python benchmarks/onnx_latency.py --model hrmedseg_b --size 1024 --threads 2

Both run the network alone (a normalised (1, 3, S, S) input -> logits), fp32, on the CPU, with the
same number of threads; the time is the median of ``--repeats`` runs after two warm-up runs. The
weights are random (latency does not depend on them). Prints a Markdown row per runtime and the
largest difference of their logits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import hrmedseg
from hrmedseg.deployment.export_onnx import export_onnx


def median_seconds(run, repeats: int) -> float:
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="hrmedseg_b")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = hrmedseg.create_model(args.model, img_size=args.size).eval()
    images = torch.randn(1, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = export_onnx(model, Path(tmp) / "model.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}

    with torch.no_grad():
        torch_seconds = median_seconds(lambda: model(images), args.repeats)
        reference = model(images).numpy()
    onnx_seconds = median_seconds(lambda: session.run(None, feed), args.repeats)
    difference = float(np.abs(session.run(None, feed)[0] - reference).max())

    print(f"| runtime | {args.model} {args.size}², batch 1, {args.threads} threads: ms / image |")
    print("|---|---|")
    print(f"| PyTorch {torch.__version__} eager | {1000 * torch_seconds:.0f} |")
    print(f"| onnxruntime {onnxruntime.__version__} | {1000 * onnx_seconds:.0f} |")
    print(f"\nlargest |logit difference|: {difference:.2e}")


if __name__ == "__main__":
    main()
