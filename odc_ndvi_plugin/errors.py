"""One root for the errors this package raises on purpose: :class:`NDVIPluginError`.

Each is a problem a user can fix or must know about, with a one-line message naming it
(key, file, dataset, URL); the command line prints that line with the error's
:attr:`~NDVIPluginError.exit_code` (2: the command line or a configuration is wrong; 1: the
work could not be done). Any other exception reaching the command line is a bug, and says
so. Each class keeps the built-in base it had before the root existed (``ConfigError`` is
still a ``ValueError``, ``InputReadError`` a ``RuntimeError``...), so ``except`` clauses
written against those still catch them.

The layers' own errors (``ops``: task db, gateway; ``dev``: the embedded index) derive
from the same root in their modules.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "ConfigError",
    "DatacubeUnavailable",
    "InputReadError",
    "MissingExtra",
    "NDVIPluginError",
    "OutputLocationError",
    "S3AccessError",
    "TaskDbError",
    "TaskDbMissing",
]

#: exit status of a command whose work failed
EXIT_FAILED = 1
#: exit status of a command given a wrong command line or configuration
EXIT_USAGE = 2


class NDVIPluginError(Exception):
    """The root: a problem stated in one line for the person who can fix it."""

    #: the command line's exit status for this error
    exit_code: int = EXIT_FAILED


class ConfigError(NDVIPluginError, ValueError):
    """A value that cannot be used: ``str()`` is ``"<where>: <problem>"`` on one line."""

    exit_code = EXIT_USAGE

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        text = f"{where}: {problem}" if where else problem
        super().__init__(" ".join(text.split()))  # one line, whatever the parts held


class InputReadError(NDVIPluginError, RuntimeError):
    """An input file could not be read; the message names the dataset, band and file.

    The fields say the same for code: ``transient`` is true when the read failed on a
    timeout, an HTTP 5xx/429 or a dropped connection (or such a failure came first and
    the retries ran out), i.e. when the same read may well succeed later. It is rebuilt
    from its message and fields alone (it travels from dask workers: see
    :mod:`odc_ndvi_plugin._portable`)."""

    def __init__(
        self,
        message: str,
        *,
        dataset_id: str = "",
        band: str = "",
        url: str = "",
        transient: bool = False,
    ):
        super().__init__(message)
        self.dataset_id = dataset_id
        self.band = band
        self.url = url
        self.transient = transient

    def __reduce__(self) -> tuple:
        return (type(self), (str(self),), dict(self.__dict__))


class TaskDbError(NDVIPluginError, ValueError):
    """A task db that cannot be used (not a task db, corrupt or incomplete)."""


class TaskDbMissing(TaskDbError):
    """The task db named on the command line does not exist: a usage error."""

    exit_code = EXIT_USAGE


class MissingExtra(NDVIPluginError, RuntimeError):
    """An optional dependency is not installed (the message names the extra)."""


class OutputLocationError(NDVIPluginError, ValueError):
    """The output location cannot be written (checked before any work)."""


class S3AccessError(NDVIPluginError, ValueError):
    """S3 access cannot be set up for a run (no credentials found, a bad profile...)."""


class DatacubeUnavailable(NDVIPluginError, RuntimeError):
    """The configured datacube cannot be reached or asked (the message says why)."""
