"""The errors a user can fix: bad data, a bad setting, a wrong or damaged model file, an unusable
output folder, a missing file or package, a diverged run.

All derive from :class:`HRMedSegError`; the command line prints their message in one line and
exits with status 2, while any other exception is a bug and keeps its traceback. Each also derives
from the built-in error it refines (``ValueError``, ``FileNotFoundError``, ...), so code that
catches those keeps working.
"""

from __future__ import annotations


class HRMedSegError(Exception):
    """Base of the user-fixable errors; the message names the file, flag or field and the problem."""


class ConfigError(HRMedSegError, ValueError):
    """A setting that cannot work: a config file, a flag, a model option, a prompt kind."""


class UnknownOptionError(ConfigError, TypeError):
    """An option name that the model or config does not have (a ``TypeError``, as for a keyword
    argument a function does not take)."""


class DataError(HRMedSegError, ValueError):
    """Bad input data. The message names each offending file and the problem."""


class CheckpointError(HRMedSegError, ValueError):
    """A file that is not the model file, training state or SAM checkpoint it should be."""


class OutputError(HRMedSegError, ValueError):
    """An output path that cannot be used; the message names it and the problem."""


class WriteError(HRMedSegError, OSError):
    """A file that could not be written (a full disk, no permission, a read-only file system); the
    message names it, and the previous file at that path, if any, is unchanged."""


class InputNotFoundError(HRMedSegError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingDependencyError(HRMedSegError, ImportError):
    """An optional package that the requested feature needs is not installed."""
