"""Time per distillation epoch with and without the teacher-embedding cache.

Runs ``hrmedseg.distillation.distill`` twice on the same images: once with the teacher in the loop,
once with ``cache`` (the one-off fill is timed separately). Without ``--teacher-checkpoint`` a
SAM-format checkpoint with random weights is written to a temporary folder: the teacher's cost
does not depend on its weights, and no checkpoint can be downloaded here.

Example:
    python benchmarks/distill_cache.py --data ../shared/data/hc18/images --teacher vit_b \\
        --img-size 256 --images 64 --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from hrmedseg import get_model_config
from hrmedseg.distillation import SAM_TEACHERS, DistillConfig, distill
from hrmedseg.distillation.data import find_images
from hrmedseg.distillation.teacher import build_teacher


def random_sam_checkpoint(teacher: str, folder: Path) -> Path:
    encoder = build_teacher(SAM_TEACHERS[teacher], 1024, get_model_config("hrmedseg_b").patch_size)
    path = folder / f"random_sam_{teacher}.pth"
    torch.save({f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}, path)
    return path


def epoch_seconds(run: Path) -> list[float]:
    with (run / "log.csv").open() as f:
        return [float(row["epoch_seconds"]) for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--teacher", default="vit_b", choices=sorted(SAM_TEACHERS))
    parser.add_argument("--teacher-checkpoint", help="a real SAM checkpoint (default: random weights)")
    parser.add_argument("--student", default="hrmedseg_b")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=64, help="use the first N images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "images"
        data.mkdir()
        for name in find_images(args.data)[: args.images]:
            (data / name.replace("/", "__")).symlink_to(Path(args.data).resolve() / name)
        checkpoint = args.teacher_checkpoint or random_sam_checkpoint(args.teacher, tmp)
        common = dict(
            data=str(data), teacher=args.teacher, teacher_checkpoint=str(checkpoint), student=args.student,
            img_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size, num_workers=2,
            device=args.device, val_fraction=0.1,
        )  # fmt: skip
        distill(DistillConfig(output=str(tmp / "no_cache"), **common), progress=False)
        started = time.perf_counter()
        distill(DistillConfig(output=str(tmp / "fill"), cache=str(tmp / "cache"), **{**common, "epochs": 1}),
                progress=False)  # fmt: skip
        fill_and_one_epoch = time.perf_counter() - started
        distill(DistillConfig(output=str(tmp / "cached"), cache=str(tmp / "cache"), **common), progress=False)
        plain, cached = epoch_seconds(tmp / "no_cache"), epoch_seconds(tmp / "cached")
        fill = fill_and_one_epoch - epoch_seconds(tmp / "fill")[0]
        cache_mb = sum(p.stat().st_size for p in (tmp / "cache").iterdir()) / 2**20

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(f"{args.images} images at {args.img_size}^2, teacher SAM {args.teacher}, student {args.student}, "
          f"batch {args.batch_size}, {device}")  # fmt: skip
    print("| mode | time per epoch (s) | one-off |")
    print("|---|---|---|")
    print(f"| teacher in the loop | {sum(plain) / len(plain):.1f} | - |")
    print(f"| cached embeddings | {sum(cached) / len(cached):.1f} | cache fill {fill:.1f} s "
          f"(with loading the teacher), {cache_mb:.1f} MiB |")  # fmt: skip


if __name__ == "__main__":
    main()
