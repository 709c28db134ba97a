"""A disk cache of teacher embeddings, so that the teacher runs once per image, not once per epoch.

Layout of a cache folder::

    manifest.json              what the embeddings are: teacher, checkpoint hash, preprocessing,
                               input size, embedding shape, dtype, shard size and the image list
    shard_00000.safetensors    "embeddings": (n, 256, N/16, N/16) float16 for n consecutive images
    shard_00001.safetensors    ...

A shard file appears only when it is complete (written to a temporary name and renamed), so an
interrupted fill resumes with the missing shards. A cache is reused only when its manifest
matches the run exactly; otherwise the run stops and says which fields differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_write
from ..errors import ConfigError, HRMedSegError, InputNotFoundError

FORMAT_NAME = "hrmedseg-embedding-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CacheMismatchError(HRMedSegError, ValueError):
    """An existing cache folder was made for other images, another teacher or preprocessing."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingCache:
    """Embeddings of ``files`` (in this order), grouped into shards of ``shard_size`` images.

    ``header`` describes how they were computed and must match on reuse; it includes
    ``embedding_shape`` (C, h, w).
    """

    def __init__(self, root: str | os.PathLike, header: dict[str, Any], files: list[str], *, shard_size: int):
        if shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.header = header
        self.files = list(files)
        self.shard_size = shard_size
        self.embedding_shape = tuple(header["embedding_shape"])

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "header": self.header,
            "shard_size": self.shard_size,
            "files": self.files,
        }

    @classmethod
    def open(
        cls, root: str | os.PathLike, header: dict[str, Any], files: list[str], *, shard_size: int
    ) -> EmbeddingCache:
        """Reuse the cache in ``root`` if it matches, or start a new one there."""
        cache = cls(root, header, files, shard_size=shard_size)
        path = cache.root / MANIFEST
        if not path.is_file():
            if any(cache.root.glob("shard_*.safetensors")):
                raise CacheMismatchError(
                    f"{cache.root} holds shard files but no {MANIFEST}; use an empty folder"
                )
            cache.root.mkdir(parents=True, exist_ok=True)
            # JSON round trip, so the comparison on reuse sees lists where tuples were given.
            cache.header = json.loads(json.dumps(header))
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(cache.manifest(), indent=1)))
            return cache
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CacheMismatchError(f"{path}: unreadable cache manifest ({err})") from None
        expected = json.loads(json.dumps(cache.manifest()))
        differing = [key for key in ("format", "version", "shard_size") if stored.get(key) != expected[key]]
        stored_header = stored.get("header", {})
        differing += [
            f"header.{key}"
            for key in sorted(set(stored_header) | set(expected["header"]))
            if stored_header.get(key) != expected["header"].get(key)
        ]
        if stored.get("files") != expected["files"]:
            added = len(set(expected["files"]) - set(stored.get("files", [])))
            removed = len(set(stored.get("files", [])) - set(expected["files"]))
            differing.append(f"files ({added} new, {removed} gone)")
        if differing:
            raise CacheMismatchError(
                f"the embedding cache in {cache.root} was made for another setting; differing: "
                f"{', '.join(differing)}. Use a new --cache folder, or delete this one to rebuild it."
            )
        cache.header = stored["header"]
        return cache

    @property
    def num_shards(self) -> int:
        return -(-len(self.files) // self.shard_size)

    def shard_path(self, shard: int) -> Path:
        return self.root / f"shard_{shard:05d}.safetensors"

    def shard_files(self, shard: int) -> list[str]:
        return self.files[shard * self.shard_size : (shard + 1) * self.shard_size]

    def missing_shards(self) -> list[int]:
        return [k for k in range(self.num_shards) if not self.shard_path(k).is_file()]

    @property
    def complete(self) -> bool:
        return not self.missing_shards()

    def write_shard(self, shard: int, embeddings: torch.Tensor) -> Path:
        """Store the embeddings (n, C, h, w) of shard ``shard``'s images, as float16."""
        expected = (len(self.shard_files(shard)), *self.embedding_shape)
        if tuple(embeddings.shape) != expected:
            raise ValueError(f"shard {shard}: embeddings {tuple(embeddings.shape)}, expected {expected}")
        tensors = {"embeddings": embeddings.detach().to("cpu", torch.float16).contiguous()}
        return atomic_write(self.shard_path(shard), lambda tmp: save_file(tensors, tmp))

    def read(self, index: int) -> torch.Tensor:
        """The (C, h, w) float16 embedding of ``files[index]``."""
        shard, row = divmod(index, self.shard_size)
        path = self.shard_path(shard)
        if not path.is_file():
            raise InputNotFoundError(
                f"{path} is missing; the cache is incomplete (delete the cache folder to rebuild it)"
            )
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("embeddings")[row : row + 1][0]
