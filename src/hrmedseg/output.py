"""Output folders: created with a clear error when they cannot be, cleared of the temporary files
that an interrupted atomic write (:func:`hrmedseg.atomic.atomic_write`) leaves behind, and
the list of inputs a folder run could not use."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .atomic import write_text
from .data.io import raise_for_problems
from .errors import OutputError

# atomic_write's ".<name>.<random>.tmp", and with the suffixes kept ".<name>.<random>.tmp.nii.gz"
TEMPORARY_PATTERNS = (".*.tmp", ".*.tmp.*")


def ensure_output_folder(path: str | os.PathLike, *, inputs: str | os.PathLike | None = None) -> Path:
    """Create ``path`` (and its parents) if needed and check that files can be written in it.

    ``inputs`` (an input file or folder whose files are read, not its subfolders) must not be
    where the outputs go: masks named by their image's stem would overwrite the images or be read
    as inputs by the next run.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; give a folder (new or existing) as --output")
    if inputs is not None:
        source = Path(inputs) if Path(inputs).is_dir() else Path(inputs).parent
        if path.resolve() == source.resolve():
            raise OutputError(
                f"{path}: the output folder is the input folder {inputs}; the outputs would overwrite "
                "or mix with the inputs, so give another --output"
            )
    _writable_folder(path, subject=path, called="the output folder")
    return path


def ensure_output_file(path: str | os.PathLike) -> Path:
    """Check, before any work, that a file can be written at ``path``: not a folder, in a folder
    that exists or can be created and is writable. Returns ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for this output")
    _writable_folder(path.parent, subject=path, called=f"its folder {path.parent}")
    return path


def _writable_folder(folder: Path, *, subject: Path, called: str) -> None:
    """Create ``folder`` (and its parents) if needed and check that it is writable; errors start
    with ``subject`` and name the folder as ``called``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{subject}: cannot create {called} ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{subject}: {called} is not writable")


def remove_interrupted_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writes that were killed before their rename; returns them."""
    stale = sorted({p for pattern in TEMPORARY_PATTERNS for p in Path(folder).glob(pattern) if p.is_file()})
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def in_the_way(paths: Iterable[Path]) -> str | None:
    """The problem of the first output file whose place holds something else (a folder named
    like it), or None: that input is then recorded as a failure instead of ending the run."""
    for path in paths:
        if path.exists() and not path.is_file():
            return (
                f"{path}: something that is not a file (a folder?) is where this output goes; move it "
                "or choose another --output"
            )
    return None


FAILURES_FILE = "failures.txt"


def write_failures(folder: Path, failures: list[str]) -> Path | None:
    """``failures.txt`` in ``folder``, one problem per line; removed when there is none (a rerun
    that fixed every input leaves no stale list)."""
    path = Path(folder) / FAILURES_FILE
    if not failures:
        path.unlink(missing_ok=True)
        return None
    return write_text(path, "\n".join(failures) + "\n")


def raise_if_nothing_done(done: int, failures: list[str], what: str) -> None:
    """A folder run that could use none of its inputs is a user error: raise it, in one line when
    there was one input."""
    if not done:
        raise_for_problems(failures, f"none of the {len(failures)} {what} could be used")
