"""A worker process's memory under and between tasks: GDAL's block cache and glibc's malloc.

* GDAL's block cache (default: 5 % of RAM, 1.2 GiB on a 24 GiB host) keeps the decoded
  blocks of every open file. The direct loader reads each block of a scene once, copies it
  out and closes the file, so the cache buys it nothing and costs up to three bands x the
  load window per read thread at a task's peak (~60 MiB a thread at 3200 px): it is capped
  at :data:`GDAL_CACHE_BYTES`, unless ``GDAL_CACHEMAX`` is set in the environment.
* glibc hands a freed array back to the OS only if it was mmapped, and its threshold for
  that rises to the largest array freed so far (up to 32 MiB): after a task's first frees,
  the band and NDVI arrays of a load come from the arenas and stay resident when freed.
  A fixed threshold (:data:`MMAP_THRESHOLD_BYTES`) keeps every array of 1 MiB or more out
  of the arenas, so the resident set follows what is alive.
* When the worker falls idle (between tasks): ``malloc_trim(0)`` (the arenas' free pages
  back to the OS) and GDAL's cache emptied.

:class:`MemoryHygiene` does this on a dask worker (registered by ``odc-ndvi run`` and, as
the plugin's ``dask_worker_plugin``, by a plain ``odc-stats run``). Nothing here is needed
for correct results; where glibc or GDAL is missing each step is skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import time
from functools import cache
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = [
    "GDAL_CACHE_BYTES",
    "MMAP_THRESHOLD_BYTES",
    "MemoryHygiene",
    "limit_process_memory",
    "release_memory",
]

_log = logging.getLogger(__name__)

#: GDAL's block cache, process-wide (unless GDAL_CACHEMAX is set in the environment)
GDAL_CACHE_BYTES = 32 * 2**20
#: arrays of at least this size are mmapped by glibc (returned to the OS when freed)
MMAP_THRESHOLD_BYTES = 2**20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


@cache
def _libc() -> Any | None:
    """glibc, or None (musl, macOS: no malloc_trim / mallopt to call)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _set_gdal_cache(nbytes: int) -> bool:
    try:
        from rasterio.env import set_gdal_config
    except ImportError:  # pragma: no cover - rasterio is a dependency
        return False
    set_gdal_config("GDAL_CACHEMAX", int(nbytes))  # rasterio: GDALSetCacheMax64, bytes
    return True


def limit_process_memory() -> dict[str, Any]:
    """Cap GDAL's block cache and fix glibc's mmap threshold, for this process (what was
    done, for the log)."""
    done: dict[str, Any] = {}
    if "GDAL_CACHEMAX" in os.environ:
        done["gdal_cache"] = f"GDAL_CACHEMAX={os.environ['GDAL_CACHEMAX']} (environment)"
    elif _set_gdal_cache(GDAL_CACHE_BYTES):
        done["gdal_cache"] = GDAL_CACHE_BYTES
    libc = _libc()
    if libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        done["mmap_threshold"] = MMAP_THRESHOLD_BYTES
    return done


def release_memory() -> float:
    """GDAL's cached blocks dropped and glibc's free pages returned to the OS; the
    seconds it took."""
    t0 = time.perf_counter()
    if "GDAL_CACHEMAX" not in os.environ and _set_gdal_cache(0):  # evicts every block
        _set_gdal_cache(GDAL_CACHE_BYTES)
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    return time.perf_counter() - t0


class MemoryHygiene(WorkerPlugin):
    """On a dask worker: :func:`limit_process_memory` at setup, and :func:`release_memory`
    once the worker has been idle (nothing running, ready or waiting) for
    :attr:`idle_seconds`: between tasks, not at every gap between two of a task's tasks."""

    name = "odc-ndvi-memory"
    idempotent = True
    idle_seconds = 0.5

    def __init__(self) -> None:
        self._worker: Any = None
        self._idle_since: float | None = None

    def setup(self, worker: Any) -> None:
        self._worker = worker
        _log.debug("worker memory: %s", limit_process_memory())

    def _idle(self) -> bool:
        state = self._worker.state
        return not (state.executing or state.ready or state.constrained or state.waiting)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        # on the worker's event loop: schedule the release, never run it here
        if self._worker is None or not hasattr(self._worker, "state"):
            return
        if not self._idle():
            self._idle_since = None
        elif self._idle_since is None:
            since = self._idle_since = time.monotonic()
            self._worker.loop.call_later(self.idle_seconds, self._release_if_idle, since)

    def _release_if_idle(self, since: float) -> None:
        if self._idle_since == since and self._idle():
            _log.debug("worker idle: memory released in %.3f s", release_memory())
