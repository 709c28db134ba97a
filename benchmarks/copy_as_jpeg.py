"""Copy a dataset folder with its images re-encoded as JPEG, to carry it to a lent GPU machine.

    python benchmarks/copy_as_jpeg.py ../shared/data/hc18 gpu_data/hc18      # 64 MB -> about 28 MB

Images become ``<stem>.jpg`` (quality 90 by default; grey stays grey). Masks and any other
top-level file (``meta.json``, the README with source and licence) are copied as they are and the
split is written as ``split.json``, so the copy is the same dataset to ``hrmedseg``: masks match
images by stem. ``gpu_data/`` is git-ignored; never commit data.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common.dataset_copy import copy_dataset  # benchmarks/ is on sys.path when run as a script
from PIL import Image

from hrmedseg.data.folders import Sample


def copy_as_jpeg(source: Path, destination: Path, quality: int) -> int:
    def write_case(sample: Sample, images: Path, masks: Path) -> None:
        with Image.open(sample.image) as image:
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            image.save(images / f"{sample.stem}.jpg", quality=quality)
        shutil.copy2(sample.mask, masks / sample.mask.name)

    return copy_dataset(source, destination, write_case)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="dataset folder (images/ + masks/)")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    count = copy_as_jpeg(args.source, args.destination, args.quality)
    size = sum(f.stat().st_size for f in args.destination.rglob("*") if f.is_file())
    print(f"{count} cases copied to {args.destination} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
