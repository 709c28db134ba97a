"""Types of numeric options, checked when the command line is parsed: a batch size of 0 or a
negative pixel limit stops at the door with argparse's one-line usage error, naming the option,
instead of failing (or silently misbehaving) after data has been read."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _checked(text: str, kind: type, holds: Callable[[float], bool], requirement: str) -> int | float:
    value = _number(text, kind)
    if not holds(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value:g}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, "1 or more")


def non_negative_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 0, "0 or more")


def positive_float(text: str) -> float:
    return _checked(text, float, lambda v: v > 0, "above 0")


def non_negative_float(text: str) -> float:
    return _checked(text, float, lambda v: v >= 0, "0 or more")


def port(text: str) -> int:
    return _checked(text, int, lambda v: 1 <= v <= 65535, "a port number, 1 to 65535")
