"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""

from collections.abc import Callable
from typing import Any

import pytest


class SimulatedCrash(Exception):
    """Stands for a run killed between two epochs in the resume tests."""


def run_until_crash(run: Callable[..., Any], *args: Any, after_epoch: int = 1, **kwargs: Any) -> None:
    """Call ``run(*args, on_epoch_end=..., **kwargs)`` and stop it at the end of ``after_epoch``,
    after that epoch's checkpoint is written, as a crash there would."""

    def crash(epoch: int, row: dict[str, float]) -> None:
        if epoch == after_epoch:
            raise SimulatedCrash

    with pytest.raises(SimulatedCrash):
        run(*args, on_epoch_end=crash, **kwargs)
