"""The streaming reduction's loads never run more than LOAD_AHEAD time blocks ahead of the
folds, whatever the scheduler prefers; and the bound changes no result."""

from __future__ import annotations

import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest

from odc_ndvi_plugin.reduce import _graph
from odc_ndvi_plugin.reduce._graph import LOAD_AHEAD, stream_reduce
from odc_ndvi_plugin.reduce._kernels import reduce_block

DAYS, SHAPE, CHUNKS = 14, (8, 6), (4, 3)  # 4 reduction blocks (chains) per day


def _days(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-0.2, 0.9, size=(DAYS, *SHAPE)).astype(np.float32)
    obs[rng.random(obs.shape) < 0.3] = np.nan
    return obs


class _Log:
    """What ran: loads started per day, and per day how many chains have folded it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folded = [0] * DAYS
        self.too_early: list[tuple[int, list[int]]] = []

    def load(self, obs: np.ndarray, t: int) -> np.ndarray:
        with self.lock:
            # every chain must have folded day t - LOAD_AHEAD before day t is loaded
            if t >= LOAD_AHEAD and self.folded[t - LOAD_AHEAD] < 4:
                self.too_early.append((t, list(self.folded)))
        return obs[t : t + 1]


def _loaded(obs: np.ndarray, log: _Log) -> da.Array:
    blocks = [
        da.from_delayed(dask.delayed(log.load, pure=False)(obs, t), (1, *SHAPE), np.float32)
        for t in range(DAYS)
    ]
    return da.concatenate(blocks)


def test_loads_wait_for_the_folds_of_the_day_load_ahead_before(monkeypatch):
    log = _Log()
    fold = _graph.stream_fold
    chains: dict[tuple, int] = {}  # a chain (its region) folds the days in order

    def slow_fold(state, block, labels, **kw):
        time.sleep(0.01)  # folds slower than loads: unbounded, every load would run first
        state = fold(state, block, labels, **kw)
        with log.lock:
            region = tuple((s.start, s.stop) for s in kw["region"])
            day = chains[region] = chains.get(region, -1) + 1
            log.folded[day] += 1
        return state

    monkeypatch.setattr(_graph, "stream_fold", slow_fold)
    obs = _days()
    groups = np.arange(DAYS) % 4
    planes = stream_reduce(
        _loaded(obs, log),
        chunks=CHUNKS,
        group_index=groups,
        n_groups=4,
        statistics=("mean", "count"),
        min_clear=1,
    )
    got = np.stack(dask.compute(*planes, scheduler="threads", num_workers=4))
    assert log.too_early == []
    assert log.folded == [4] * DAYS
    expected = reduce_block(obs, groups, n_groups=4, statistics=("mean", "count"))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("days", [1, LOAD_AHEAD, LOAD_AHEAD + 1])
def test_few_time_blocks_and_in_memory_stacks_give_the_same_numbers(days):
    obs = _days()[:days]
    groups = np.zeros(days, int)
    data = da.from_array(obs, chunks=(1, 5, -1))  # one constant: nothing is gated
    planes = stream_reduce(
        data, chunks=(3, 4), group_index=groups, n_groups=1, statistics=("mean",), min_clear=1
    )
    got = np.stack(dask.compute(*planes, scheduler="sync"))
    expected = reduce_block(obs, groups, n_groups=1, statistics=("mean",))
    np.testing.assert_array_equal(got, expected)
