"""Latency of the interactive page's HTTP API: one image embedding and one click.

    python benchmarks/serve_latency.py --model hrmedseg_sam_b --size 1024 --image-size 1024

Starts ``hrmedseg serve``'s app with uvicorn on a local port (a randomly initialised model:
latency does not depend on the weights) and times, through HTTP with httpx, the upload of a PNG
(decode + embedding + preview) and single clicks (decode + mask PNGs at the original size), median
of ``--repeats`` clicks after one warm-up each. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import threading
import time

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

import hrmedseg
from hrmedseg.serve.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="hrmedseg_sam_b")
    parser.add_argument("--size", type=int, default=1024, help="the model's input size")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the uploaded square image")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    app = create_app(hrmedseg.create_model(args.model, img_size=args.size), "cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    side = args.image_size
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    timings: dict[str, list[float]] = {
        "upload + embedding": [],
        "click (1 point, 3 masks)": [],
        "box (1 mask)": [],
    }
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for _ in range(3):
            started = time.perf_counter()
            session = (
                client.post("/api/image", content=buffer.getvalue()).raise_for_status().json()["session"]
            )
            timings["upload + embedding"].append(time.perf_counter() - started)
        rng = np.random.default_rng(1)
        for _ in range(args.repeats + 1):
            x, y = rng.integers(0, side, 2).tolist()
            for name, body in (
                ("click (1 point, 3 masks)", {"points": [[x, y]], "labels": [1], "multimask": True}),
                (
                    "box (1 mask)",
                    {"box": [x // 2, y // 2, x // 2 + side // 3, y // 2 + side // 3], "multimask": False},
                ),
            ):
                started = time.perf_counter()
                client.post("/api/decode", json={"session": session, **body}).raise_for_status()
                timings[name].append(time.perf_counter() - started)
    server.should_exit = True
    threads = torch.get_num_threads()
    print(f"| {args.model} at {args.size}², {side}² image, CPU ({threads} threads) | ms (median) |")
    print("|---|---|")
    for name, values in timings.items():
        print(f"| {name} | {1000 * statistics.median(values[1:]):.0f} |")


if __name__ == "__main__":
    main()
