"""Copy a dataset folder through a per-case conversion, keeping what makes it the same dataset."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from hrmedseg.data import find_dataset
from hrmedseg.data.folders import Sample


def copy_dataset(source: Path, destination: Path, write_case: Callable[[Sample, Path, Path], None]) -> int:
    """Call ``write_case(sample, images_dir, masks_dir)`` for every case of ``source`` (checked and
    paired by :func:`hrmedseg.data.find_dataset`), write the split as ``split.json`` whatever the
    source named it, and copy any other top-level file (``meta.json``, the README with source and
    licence) as it is. Returns the number of cases."""
    index = find_dataset(source)
    folders = destination / "images", destination / "masks"
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for sample in index.samples.values():
        write_case(sample, *folders)
    if index.split is not None:
        (destination / "split.json").write_text(json.dumps(index.split, indent=1))
    for extra in source.iterdir():
        if extra.is_file() and not extra.name.endswith("split.json"):
            shutil.copy2(extra, destination / extra.name)
    return len(index.samples)
