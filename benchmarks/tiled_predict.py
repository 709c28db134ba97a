"""Peak memory and time of `hrmedseg predict` on one large image: resized to the model size
against sliding windows at the image's own resolution (``--tile``).

    python benchmarks/tiled_predict.py --width 4288 --height 2848 --model hrmedseg_b --size 1024

A synthetic RGB photograph of the given size (smooth noise, JPEG, like a dermoscopy image) and a
randomly initialised model (time and memory do not depend on the weights) are written to a
temporary folder; each mode runs in a fresh process, which reports its peak resident set size
(``ru_maxrss``) and wall time. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

RUN = """
import json, resource, sys, time
from hrmedseg.cli import main
started = time.perf_counter()
status = main(sys.argv[1:])
seconds = time.perf_counter() - started
print(json.dumps({"status": status, "seconds": seconds,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def synthetic_photograph(path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.random((height // 64 + 2, width // 64 + 2, 3)).astype(np.float32)
    smooth = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    Image.fromarray(np.asarray(smooth)).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=4288)
    parser.add_argument("--height", type=int, default=2848)
    parser.add_argument("--model", default="hrmedseg_b")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per pass with --tile")
    args = parser.parse_args()

    import hrmedseg

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic_photograph(tmp / "large.jpg", args.width, args.height)
        model = hrmedseg.save_model(
            hrmedseg.create_model(args.model, img_size=args.size), tmp / "m.safetensors"
        )
        base = ["predict", "--checkpoint", str(model), "--input", str(tmp / "large.jpg"), "--quiet",
                "--device", "cpu", "--batch-size", str(args.batch_size)]  # fmt: skip
        rows = []
        for mode, extra in (
            ("resize to the model size", []),
            ("--tile (overlap 0.25, gaussian)", ["--tile"]),
        ):
            out = subprocess.run(
                [sys.executable, "-c", RUN, *base, "--output", str(tmp / mode[:6]), *extra],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((mode, result))
    print(f"| {args.width} x {args.height} image, {args.model} at {args.size}² | seconds | peak RSS (GB) |")
    print("|---|---|---|")
    for mode, result in rows:
        print(f"| {mode} | {result['seconds']:.1f} | {result['peak_gb']:.2f} |")


if __name__ == "__main__":
    main()
