"""Resumable training state: model, optimiser, scheduler, scaler, epoch and every RNG.

Saved with ``torch.save`` to a temporary file and renamed (atomic), and read back with
``weights_only=True``, so a resumed run executes no pickled code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..atomic import atomic_write
from ..errors import CheckpointError, InputNotFoundError


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def all_rng_states() -> list[dict[str, Any]]:
    """Every process's RNG state, in rank order (a one-element list without a process group).
    Called on all ranks, so a resumed multi-process run continues each rank's own streams."""
    if not (dist.is_available() and dist.is_initialized()):
        return [rng_state()]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def restore_rng_state(saved: dict[str, Any] | list[dict[str, Any]], rank: int, world_size: int) -> None:
    """Restore this rank's saved RNG state. With a different number of processes than when the
    state was saved, every rank takes rank 0's state (the run continues, not bit-identically)."""
    states = saved if isinstance(saved, list) else [saved]
    set_rng_state(states[rank] if len(states) == world_size else states[0])


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"cannot resume: no training state at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several error types for damaged files
        raise CheckpointError(f"{path}: unreadable training state ({err})") from err
