"""A worker's memory: GDAL's block cache capped, glibc's mmap threshold fixed, and memory
released once the worker falls idle (between tasks) - on a real dask worker."""

from __future__ import annotations

import time

import dask.array as da
import pytest
import rasterio.env

from odc_ndvi_plugin import _memory
from odc_ndvi_plugin._memory import GDAL_CACHE_BYTES, MemoryHygiene, limit_process_memory


def _gdal_cache() -> int:
    with rasterio.env.Env():
        return int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))


def test_the_block_cache_is_capped_unless_the_environment_sets_it(monkeypatch):
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    done = limit_process_memory()
    assert done["gdal_cache"] == GDAL_CACHE_BYTES == _gdal_cache()
    if _memory._libc() is not None:  # glibc
        assert done["mmap_threshold"] == _memory.MMAP_THRESHOLD_BYTES
    monkeypatch.setenv("GDAL_CACHEMAX", "512")
    assert limit_process_memory()["gdal_cache"] == "GDAL_CACHEMAX=512 (environment)"


def test_memory_is_released_when_the_worker_falls_idle_not_between_its_tasks(monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    releases: list[float] = []
    monkeypatch.setattr(_memory, "release_memory", lambda: releases.append(time.monotonic()))
    monkeypatch.setattr(MemoryHygiene, "idle_seconds", 0.3)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(MemoryHygiene())
        total = da.ones((1000, 1000), chunks=100).sum()  # 100 tasks + their sums
        for n in range(2):
            assert client.compute(total + n).result() == 1_000_000 + n
            deadline = time.monotonic() + 10
            while len(releases) < n + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(releases) >= n + 1
        # once per idle spell (a loaded machine may make one inside a graph), not at every
        # gap between two of the graph's 100-odd tasks
        assert len(releases) <= 4
        assert _gdal_cache() == GDAL_CACHE_BYTES  # set up on the worker (this process)


@pytest.mark.skipif(_memory._libc() is None, reason="glibc only")
def test_release_memory_trims_without_error():
    assert _memory.release_memory() >= 0
