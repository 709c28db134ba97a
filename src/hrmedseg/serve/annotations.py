"""The folder the page annotates (``hrmedseg serve --input DIR --output DIR``) and the files of an
image's objects.

Each image's objects are saved under its stem in the output folder, in the files
``predict --prompts`` writes and reads:

- ``<stem>.png``: the union of the objects, 0/255 (a ``masks/`` folder's format, ready to train on);
- ``<stem>_objects.png``: object k labelled k (1..N, 16-bit beyond 255 objects); where objects
  overlap, the later one is kept;
- ``<stem>.json``: each object's prompts, in the format ``predict --prompts`` reads.

An image counts as done once its ``<stem>.json`` exists, and reopening it shows its saved objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import write_text
from ..data.io import read_image, write_mask
from ..errors import DataError
from ..inference.files import list_unique_images
from ..inference.prompted import checked_prompts, prompt_entries
from ..output import ensure_output_folder


def object_label_map(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Object k of ``masks`` (each (H, W) bool) labelled k + 1, later objects over earlier ones."""
    labels = np.zeros(shape, dtype=np.int64)
    for k, mask in enumerate(masks):
        labels[mask] = k + 1
    return labels


@dataclass
class SavedObjects:
    """An image's saved objects: their prompt entries (JSON form) and their masks, (H, W) bool each,
    or None when ``<stem>_objects.png`` is missing or does not match the prompts."""

    prompts: list[dict[str, Any]]
    masks: list[np.ndarray] | None


class AnnotationFolder:
    """The images of ``inputs`` (directly inside it, one per stem) and their saved objects in
    ``output``, which must not be the input folder.

    Args:
        inputs: the folder of images to annotate.
        output: the folder the objects are saved in (created if needed).
    """

    def __init__(self, inputs: str | Path, output: str | Path) -> None:
        self.images = list_unique_images(inputs)
        if len(self.images) == 1 and Path(inputs).is_file():
            raise DataError(f"{inputs}: give a folder of images to annotate, not one file")
        self.output = ensure_output_folder(output, inputs=inputs)

    def paths(self, index: int) -> dict[str, Path]:
        stem = self.image(index).stem
        return {
            "mask": self.output / f"{stem}.png",
            "objects": self.output / f"{stem}_objects.png",
            "prompts": self.output / f"{stem}.json",
        }

    def image(self, index: int) -> Path:
        if not 0 <= index < len(self.images):
            raise IndexError(f"no image {index}: the folder holds {len(self.images)}")
        return self.images[index]

    def entries(self) -> list[dict[str, Any]]:
        """Per image: its file name and whether its objects are saved."""
        return [
            {"name": path.name, "done": self.paths(i)["prompts"].is_file()}
            for i, path in enumerate(self.images)
        ]

    def read(self, index: int) -> tuple[np.ndarray, SavedObjects | None]:
        """The image (H, W, 3) float in [0, 1] and its saved objects (None before any save)."""
        image = read_image(self.image(index))
        paths = self.paths(index)
        if not paths["prompts"].is_file():
            return image, None
        prompts = prompt_entries(paths["prompts"])
        checked_prompts(prompts, image.shape[:2], source=paths["prompts"])  # still fits the image
        masks = None
        if paths["objects"].is_file():
            with Image.open(paths["objects"]) as stored:  # our own label map: no mask conventions
                labels = np.asarray(stored).astype(np.int64)
            if labels.shape == image.shape[:2] and labels.max(initial=0) <= len(prompts):
                masks = [labels == k + 1 for k in range(len(prompts))]
        return image, SavedObjects(prompts, masks)

    def save(self, index: int, prompts: list[dict[str, Any]], masks: list[np.ndarray]) -> list[Path]:
        """Write the image's union mask, object label map and prompts (each atomically; the prompt
        file last, so an image is never marked done before its masks are written)."""
        if len(prompts) != len(masks):
            raise ValueError(f"{len(prompts)} prompt entries for {len(masks)} masks")
        paths = self.paths(index)
        height, width = masks[0].shape if masks else read_image(self.image(index)).shape[:2]
        labels = object_label_map(masks, (height, width))
        write_mask(paths["mask"], np.where(labels > 0, 255, 0))
        write_mask(paths["objects"], labels)
        write_text(paths["prompts"], json.dumps({"objects": prompts}, indent=1) + "\n")
        return [paths["mask"], paths["objects"], paths["prompts"]]
