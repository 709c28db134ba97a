"""Copy a dataset folder with every image and mask cut to its central crop, at its own resolution.

    python benchmarks/center_crop.py ../shared/data/hrf data/hrf_crop1024 --size 1024

Structures keep their size in pixels (a 2-pixel vessel stays 2 pixels), while each image decodes
far faster than the whole photograph: what a short real-data run on a large-image set needs.
Images and masks are written as PNG (lossless), the split as ``split.json``; other top-level files
(the README with source and licence) are copied as they are. Never commit data.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image

from hrmedseg.data import find_dataset


def center_crop(source: Path, destination: Path, size: int) -> int:
    index = find_dataset(source)  # checks the layout and pairs images with masks
    for sub in ("images", "masks"):
        (destination / sub).mkdir(parents=True, exist_ok=True)
    for sample in index.samples.values():
        with Image.open(sample.image) as image, Image.open(sample.mask) as mask:
            if image.size != mask.size:
                raise ValueError(f"{sample.image}: {image.size} but its mask is {mask.size}")
            width, height = image.size
            if min(width, height) < size:
                raise ValueError(f"{sample.image}: {width} x {height} is smaller than the {size}² crop")
            box = ((width - size) // 2, (height - size) // 2, (width + size) // 2, (height + size) // 2)
            image.crop(box).save(destination / "images" / f"{sample.stem}.png")
            mask.crop(box).save(destination / "masks" / f"{sample.stem}.png")
    if index.split is not None:
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
    parser.add_argument("--size", type=int, default=1024, help="side of the square crop, in pixels")
    args = parser.parse_args()
    count = center_crop(args.source, args.destination, args.size)
    print(f"{count} cases cropped to {args.size}² in {args.destination}")


if __name__ == "__main__":
    main()
