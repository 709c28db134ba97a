"""Device selection and compilation, shared by training, evaluation and prediction."""

from __future__ import annotations

import torch

from .errors import ConfigError

# torch.compile's modes; "none" runs eagerly. "reduce-overhead" adds CUDA graphs (fixed shapes,
# small batches), "max-autotune" searches kernels longer at the first step.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; anything else is a torch device name,
    which must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name}: not a device name ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def compile_model(model: torch.nn.Module, mode: str) -> None:
    """``torch.compile`` ``model``'s forward in place (its weights keep their names, so checkpoints
    are unchanged); ``"none"`` leaves it eager. The first call of each input shape compiles."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile must be one of {COMPILE_MODES}, got {mode!r}")
    if mode != "none":
        model.compile(mode=mode)
