"""Copy a dataset folder with every image and mask cut to its central crop, at its own resolution.

    python benchmarks/center_crop.py ../shared/data/hrf data/hrf_crop1024 --size 1024

Structures keep their size in pixels (a 2-pixel vessel stays 2 pixels), while each image decodes
far faster than the whole photograph: what a short real-data run on a large-image set needs.
Images and masks are written as PNG (lossless), the split as ``split.json``; other top-level files
(the README with source and licence) are copied as they are. Never commit data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.dataset_copy import copy_dataset  # benchmarks/ is on sys.path when run as a script
from PIL import Image

from hrmedseg.data.folders import Sample


def center_crop(source: Path, destination: Path, size: int) -> int:
    def write_case(sample: Sample, images: Path, masks: Path) -> None:
        with Image.open(sample.image) as image, Image.open(sample.mask) as mask:
            if image.size != mask.size:
                raise ValueError(f"{sample.image}: {image.size} but its mask is {mask.size}")
            width, height = image.size
            if min(width, height) < size:
                raise ValueError(f"{sample.image}: {width} x {height} is smaller than the {size}² crop")
            box = ((width - size) // 2, (height - size) // 2, (width + size) // 2, (height + size) // 2)
            image.crop(box).save(images / f"{sample.stem}.png")
            mask.crop(box).save(masks / f"{sample.stem}.png")

    return copy_dataset(source, destination, write_case)


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
