"""Copy a dataset folder with its images re-encoded as JPEG, to carry it to a lent GPU machine.

    python benchmarks/copy_as_jpeg.py ../shared/data/hc18 gpu_data/hc18      # 64 MB -> about 28 MB

Images become ``<stem>.jpg`` (quality 90 by default; grey stays grey). Masks and any other
top-level file (``meta.json``, the README with source and licence) are copied as they are and the
split is written as ``split.json``, so the copy is the same dataset to ``hrmedseg``: masks match
images by stem. ``gpu_data/`` is git-ignored; never commit data.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image

from hrmedseg.data import find_dataset


def copy_as_jpeg(source: Path, destination: Path, quality: int) -> int:
    index = find_dataset(source)  # checks the layout and pairs images with masks
    for sub in ("images", "masks"):
        (destination / sub).mkdir(parents=True, exist_ok=True)
    for sample in index.samples.values():
        with Image.open(sample.image) as image:
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
            image.save(destination / "images" / f"{sample.stem}.jpg", quality=quality)
        shutil.copy2(sample.mask, destination / "masks" / sample.mask.name)
    if index.split is not None:  # in this layout's name, whatever the source's was
        (destination / "split.json").write_text(json.dumps(index.split, indent=1))
    for extra in source.iterdir():
        if extra.is_file() and not extra.name.endswith("split.json"):
            shutil.copy2(extra, destination / extra.name)
    return len(index.samples)


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
