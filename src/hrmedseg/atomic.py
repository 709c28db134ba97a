"""Atomic writes: every file the package writes is written whole or not at all.

A writer fills a temporary file beside the target, and only a finished file is renamed onto it
(``os.replace`` is atomic within a folder). A crash, a kill or a full disk therefore leaves the
previous file, or none, never a truncated one; the temporary file is removed on failure, and
:func:`hrmedseg.output.remove_interrupted_writes` clears those of a killed process.

An operating-system error on the way (a full disk, no permission) is raised as a
:class:`~hrmedseg.errors.WriteError` naming the file, which the command line prints in one line.

Imports no PyTorch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import WriteError

TEMPORARY_MARK = ".tmp"  # temporary names: ".<name>.<random>.tmp", plus the suffixes if kept


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], object], *, keep_suffixes: bool = False
) -> Path:
    """Call ``write(temporary_path)``, then rename the finished file onto ``path``.

    Args:
        path: the file to write; its folder is created if needed.
        write: fills the file at the path it is given.
        keep_suffixes: end the temporary name with ``path``'s suffixes, for writers that choose
            the format by the file name (NIfTI's ``.nii.gz``).

    Returns:
        ``path``.

    Raises:
        WriteError: the file system refused the folder, the temporary file, a write or the rename.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = TEMPORARY_MARK + ("".join(path.suffixes) if keep_suffixes else "")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from err
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        # Only the operating system's errors (they carry an errno): an encoder's OSError without
        # one (Pillow's "cannot write mode ...") is a bug and keeps its traceback.
        if isinstance(err, OSError) and err.errno is not None and not isinstance(err, WriteError):
            raise _write_error(path, err) from err
        raise
    return path


def _write_error(path: Path, err: OSError) -> WriteError:
    reason = err.strerror or str(err)
    error = WriteError(f"{path}: could not be written ({reason}); any earlier file there is unchanged")
    error.errno = err.errno
    return error


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
