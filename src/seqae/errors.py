"""Mistakes in what a user asked for: each says what is wrong in one paragraph, naming the file,
key or value and what was expected.

They derive from Hydra's ``CompactHydraException``, so ``python train.py`` (and the scripts)
print the message alone, with no traceback, and exit with code 1; ``HYDRA_FULL_ERROR=1`` shows
the whole traceback. Any other exception is a bug and keeps its traceback. Each also derives from
the built-in exception a caller would expect (``ValueError``, ``FileNotFoundError``, ...).
"""

from __future__ import annotations

from typing import Any

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Something the user can fix: a value, a file, a folder, a checkpoint."""


class ConfigError(UserError, ValueError):
    """A config value out of range or of the wrong kind."""


class DataError(UserError, ValueError):
    """Data that cannot be trained on; the message names the file and what was expected."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used for what was asked of it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the config names that is not there."""


class RunFolderError(UserError, FileExistsError):
    """A run folder that holds an earlier run, which is never overwritten."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss became NaN or infinite; training stopped before any checkpoint could hold it."""


class MissingMetricError(UserError, KeyError):
    """A metric asked for (``optimized_metric``) that the run did not log."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FetchError(UserError, RuntimeError):
    """A download that did not work."""


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, except that a ``UserError`` raised by the target is raised as
    itself, so its one paragraph is what the user reads (not Hydra's wrapper around its repr)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__  # noqa: B904 - the wrapper is in its context, for HYDRA_FULL_ERROR=1
        raise
