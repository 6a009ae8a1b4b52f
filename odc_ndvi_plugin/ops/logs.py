"""What the default log of a command shows: our lines, not the libraries' chatter.

Without ``-v``, dask's, bokeh's and tornado's INFO records (scheduler and worker start
and stop, dashboards) are held back, and dask's per-key "Compute Failed" records (the
exception and traceback as text, one per failed key) are dropped: the run reports each
failed task as one line of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["CHATTY_LOGGERS", "quiet_libraries", "warnings_only"]

#: libraries whose INFO records (scheduler/worker start and stop, dashboards) are for -v
CHATTY_LOGGERS = ("distributed", "bokeh", "tornado")


@contextlib.contextmanager
def warnings_only(names: tuple[str, ...]) -> Iterator[None]:
    """Hold the named loggers (and their descendants that were set lower) at WARNING,
    restoring their levels after. distributed sets its own level to INFO when it is first
    imported, so it is imported here first."""
    import distributed  # noqa: F401 - its import configures its loggers

    loggers = [logging.getLogger(n) for n in names]
    loggers += [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.split(".")[0] in names
    ]
    saved = {logger: logger.level for logger in loggers}
    for logger in saved:
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)


class _NoComputeFailed(logging.Filter):
    """dask's "Compute Failed" record repeats a task failure the run reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Inside the block, without ``verbose``: the libraries' INFO records held back and
    dask's per-key failure reports dropped (see the module doc); restored after."""
    if verbose:
        yield
        return
    worker_log = logging.getLogger("distributed.worker")
    drop = _NoComputeFailed()
    worker_log.addFilter(drop)
    try:
        with warnings_only(CHATTY_LOGGERS):
            yield
    finally:
        worker_log.removeFilter(drop)
