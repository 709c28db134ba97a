"""Splits: reading a split file (checked: known stems, one split per case), dealing a seeded
split, and the folds of a cross-validation. Imports no PyTorch."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import InputNotFoundError
from .io import (
    DataError,
)

SPLITS = ("train", "val", "test")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable JSON ({err})") from None


def read_split(
    path: Path, known: Iterable[str], *, authors: bool = False, what: str = "image"
) -> dict[str, list[str]]:
    """A split file's train/val/test lists of stems, every stem among ``known`` (else a
    :class:`DataError` naming the first ten, with no ``what``)."""
    split = _read_split(path, authors)
    unknown = sorted({s for stems in split.values() for s in stems} - set(known))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DataError(f"{path}: {len(unknown)} stem(s) with no {what}: {shown}")
    return split


def read_split_file(path: str | Path, known: Iterable[str], what: str = "image") -> dict[str, list[str]]:
    """:func:`read_split` of a split file the user names (e.g. a training run's ``split.json``)
    in place of the dataset's own; a missing file is named as such."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: split file not found")
    return read_split(path, known, what=what)


def _read_split(path: Path, authors: bool) -> dict[str, list[str]]:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a split must be an object of lists of stems")
    rename = {"valid": "val"} if authors else {}
    not_lists = sorted(k for k, v in raw.items() if not isinstance(v, list))
    if not_lists:
        raise DataError(f"{path}: split(s) {not_lists} must each be a list of stems")
    split = {rename.get(k, k): [Path(str(s)).stem if authors else str(s) for s in v] for k, v in raw.items()}
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise DataError(f"{path}: unknown split name(s) {unknown}; expected {list(SPLITS)}")
    # A case in two splits would, e.g., put a training case into the test score.
    seen: dict[str, str] = {}
    shared = []
    for name, stems in split.items():
        for stem in dict.fromkeys(stems):
            if stem in seen:
                shared.append(f"{stem} ({seen[stem]} and {name})")
            seen.setdefault(stem, name)
    if shared:
        shown = ", ".join(shared[:10]) + (f" and {len(shared) - 10} more" if len(shared) > 10 else "")
        raise DataError(f"{path}: {len(shared)} case(s) in more than one split: {shown}")
    return split


def make_split(
    stems: Iterable[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict:
    """A deterministic random train/val/test split (70/10/20 by default) of the given stems."""
    stems = sorted(stems)
    random.Random(seed).shuffle(stems)
    n_train = round(fractions[0] * len(stems))
    n_val = round(fractions[1] * len(stems))
    if len(stems) >= 3:  # every part gets at least one case
        n_train = min(max(n_train, 1), len(stems) - 2)
        n_val = min(max(n_val, 1), len(stems) - n_train - 1)
    return {
        "train": stems[:n_train],
        "val": stems[n_train : n_train + n_val],
        "test": stems[n_train + n_val :],
    }


def cross_validation_split(
    split: dict[str, list[str]],
    folds: int,
    fold: int,
    *,
    seed: int,
    group: Callable[[str], str] = lambda stem: stem,
) -> dict[str, list[str]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation over ``split``'s train and val cases:
    their groups (``group(stem)``; the scan of a volume's slice, so a scan stays in one fold) are
    shuffled with ``seed`` and dealt into ``folds`` parts; part ``fold`` validates, the rest
    trains. The test cases stay as they are. The same seed gives every fold the same partition."""
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(
            f"cross-validation needs folds >= 2 and 0 <= fold < folds, got fold {fold} of {folds}"
        )
    pool = [*split.get("train", []), *split.get("val", [])]
    groups = sorted({group(stem) for stem in pool})
    if len(groups) < folds:
        raise DataError(f"{folds} folds need at least {folds} cases to validate on; there are {len(groups)}")
    random.Random(seed).shuffle(groups)
    held_out = set(groups[fold::folds])
    return {
        "train": sorted(s for s in pool if group(s) not in held_out),
        "val": sorted(s for s in pool if group(s) in held_out),
        "test": list(split.get("test", [])),
    }
