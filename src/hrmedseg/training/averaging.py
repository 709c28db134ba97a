"""An exponential moving average (EMA) of a model's weights, kept beside the trained ones.

The average changes less from step to step than the weights it follows, so its validation curve
is less noisy, and ahead while the learning rate is high. A run with ``ema_decay`` validates,
keeps as best and saves the average; ``last.pt`` holds both, so a resumed run continues both
exactly.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_state_dict_checked


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates + 1``: ``min(decay, (1 + updates) / (10 + updates))``.

    The ramp lets the average leave the random initialisation quickly; with a fixed 0.999 it
    would weigh the initial weights for about a thousand steps.
    """
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """A copy of ``module`` whose floating-point parameters and buffers follow the trained
    ones after each optimiser step: ``average <- d * average + (1 - d) * current``, with ``d``
    from :func:`warmed_decay`. Integer buffers are copied.

    Args:
        module: the trained model (before ``torch.compile``; the copy stays eager).
        decay: the decay per optimiser step, in [0, 1); the average spans about
            ``1 / (1 - decay)`` steps.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"an average's decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    def _pairs(self, module: nn.Module) -> zip:
        # parameters() and buffers() list a tensor shared by two modules once, so it is averaged once.
        return zip(
            itertools.chain(self.module.parameters(), self.module.buffers()),
            itertools.chain(module.parameters(), module.buffers()),
            strict=True,
        )

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards ``module``'s current weights (call after each optimiser step)."""
        decay = warmed_decay(self.decay, self.updates)
        for averaged, current in self._pairs(module):
            if averaged.is_floating_point():
                averaged.lerp_(current.detach(), 1 - decay)
            else:
                averaged.copy_(current)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        """Restore a :meth:`state_dict`; ``source`` names where it came from in an error."""
        load_state_dict_checked(self.module, state["weights"], source=source)
        self.updates = int(state["updates"])
