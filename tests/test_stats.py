"""reduce/ kernels against plain numpy on small synthetic stacks."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from odc_ndvi_plugin.reduce._kernels import (
    COUNT_NODATA,
    STATISTICS,
    STREAMABLE,
    band_dtype_nodata,
    reduce_block,
    stream_finish,
    stream_fold,
    stream_start,
)
from tests.helpers.truth import nan_stat


def _stack(kind: str, rng: np.random.Generator, t: int = 9, shape=(5, 6)) -> np.ndarray:
    obs = rng.uniform(-0.3, 0.95, size=(t, *shape)).astype(np.float32)
    if kind == "clear":
        pass
    elif kind == "random_nan":
        obs[rng.random(obs.shape) < 0.4] = np.nan
    elif kind == "all_cloud":
        obs[:] = np.nan
    elif kind == "one_obs":
        obs[1:] = np.nan
    elif kind == "nodata_edge":
        obs[:, :, :2] = np.nan  # scene edge: left columns never observed
        obs[rng.random(obs.shape) < 0.3] = np.nan
    elif kind == "ties":
        obs[:] = np.round(obs, 1)
    return obs


KINDS = ["clear", "random_nan", "all_cloud", "one_obs", "nodata_edge", "ties"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stat", STATISTICS)
@pytest.mark.parametrize("min_clear", [1, 3])
def test_single_group_matches_numpy(kind, stat, min_clear):
    # zlib.crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED), so the
    # data (and a failure) would differ from run to run
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{stat}".encode()))
    obs = _stack(kind, rng)
    out = reduce_block(
        obs, np.zeros(len(obs), int), n_groups=1, statistics=(stat,), min_clear=min_clear
    )
    expected = nan_stat(obs, stat, min_clear)
    assert out.shape == (1, *obs.shape[1:]) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=2e-6, equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_groups_are_independent_and_empty_groups_are_nodata(kind):
    rng = np.random.default_rng(7)
    obs = _stack(kind, rng, t=12)
    groups = np.array([0, 0, 1, 1, 1, 3, 3, 3, 3, -1, -1, 0])  # group 2 empty, -1 ignored
    stats = ("mean", "std", "count", "max")
    out = reduce_block(obs, groups, n_groups=4, statistics=stats, min_clear=1)
    assert out.shape == (4 * len(stats), *obs.shape[1:])
    for g in range(4):
        sel = obs[groups == g]
        for s, stat in enumerate(stats):
            expected = nan_stat(sel, stat)
            np.testing.assert_allclose(out[g * len(stats) + s], expected, atol=2e-6, equal_nan=True)
    # empty season: counts are 0, not NaN; float statistics are NaN
    assert (out[2 * len(stats) + 2] == 0).all()
    assert np.isnan(out[2 * len(stats) + 0]).all()


def test_empty_stack():
    out = reduce_block(
        np.zeros((0, 3, 4), np.float32), np.zeros(0, int), n_groups=2, statistics=("mean", "count")
    )
    assert out.shape == (4, 3, 4)
    assert np.isnan(out[0]).all() and (out[1] == 0).all()


def test_std_is_stable_for_tiny_variance():
    obs = (0.8 + np.arange(40, dtype=np.float64)[:, None, None] * 1e-5).astype(
        np.float32
    ) * np.ones((1, 2, 2), np.float32)
    out = reduce_block(obs, np.zeros(40, int), n_groups=1, statistics=("std",))
    np.testing.assert_allclose(out[0], np.std(obs.astype(np.float64), axis=0), rtol=1e-3)


def test_counts_saturate_below_the_nodata_value():
    obs = np.zeros((3, 1, 1), np.float32)
    out = reduce_block(obs, np.zeros(3, int), n_groups=1, statistics=("count",))
    assert out[0, 0, 0] == 3
    assert COUNT_NODATA == 65535


@pytest.mark.parametrize(
    "stat, dtype, nodata_is_nan",
    [(s, "float32", True) for s in STATISTICS if s != "count"] + [("count", "uint16", False)],
)
def test_band_encoding(stat, dtype, nodata_is_nan):
    dt, nodata = band_dtype_nodata(stat)
    assert dt == np.dtype(dtype)
    assert np.isnan(nodata) == nodata_is_nan


@pytest.mark.parametrize("split", [[12], [1] * 12, [5, 7], [3, 0, 9]])
def test_blocks_in_time_order_equal_one_stack(split):
    rng = np.random.default_rng(11)
    obs = _stack("random_nan", rng, t=12)
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, -1, 0, 1])
    stats = ("mean", "std", "median", "count", "min")
    blocks = np.split(obs, np.cumsum(split)[:-1])
    whole = reduce_block(obs, groups, n_groups=3, statistics=stats)
    np.testing.assert_array_equal(reduce_block(blocks, groups, n_groups=3, statistics=stats), whole)


def test_group_labels_must_match_observations():
    with pytest.raises(ValueError, match="3 group labels for 2 observations"):
        reduce_block(
            np.zeros((2, 1, 1), np.float32), np.zeros(3, int), n_groups=1, statistics=("mean",)
        )


# -- streaming reduction: the same numbers, folded one time block after another ---------------
def _streamed(obs, groups, n_groups, stats, min_clear, split):
    state = stream_start(obs.shape[1:], groups, n_groups)
    edges = [0, *split, len(obs)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        state = stream_fold(state, obs[a:b], groups[a:b], statistics=stats, min_clear=min_clear)
    planes = stream_finish(state, statistics=stats, min_clear=min_clear)
    assert len(planes) == n_groups * len(stats)
    return np.stack(planes) if planes else np.empty((0, *obs.shape[1:]), np.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "groups, split",
    [
        ([0, 0, 1, 1, 1, 3, 3, 3, 3, -1, -1, 0], list(range(1, 12))),  # one obs a fold
        ([0, 0, 1, 1, 1, 3, 3, 3, 3, -1, -1, 0], [4, 5]),  # uneven blocks
        ([0] * 12, []),  # one block
        ([3, 3, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3], [2, 9]),  # DJF split across the year boundary
        ([-1] * 12, [6]),  # nothing belongs to a group
    ],
)
@pytest.mark.parametrize("stats", [("mean", "count"), ("min", "max", "count", "mean")])
@pytest.mark.parametrize("min_clear", [1, 2])
def test_streamed_reduction_equals_reduce_block(kind, groups, split, stats, min_clear):
    obs = _stack(kind, np.random.default_rng(11), t=12)
    groups = np.array(groups)
    expected = reduce_block(obs, groups, n_groups=4, statistics=stats, min_clear=min_clear)
    got = _streamed(obs, groups, 4, stats, min_clear, split)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_streamable_statistics_are_the_ones_without_a_second_pass():
    assert STREAMABLE == {"mean", "count", "min", "max"}
    obs = _stack("random_nan", np.random.default_rng(1), t=4)
    state = stream_start(obs.shape[1:], np.zeros(4, int), 1)
    with pytest.raises(ValueError, match="'median' needs the observations"):
        stream_fold(state, obs, np.zeros(4, int), statistics=("median",))


def test_a_reduction_state_reports_its_arrays_to_dask():
    from dask.sizeof import sizeof

    obs = _stack("random_nan", np.random.default_rng(2), t=4, shape=(50, 40))
    groups = np.array([0, 0, 1, 1])
    state = stream_fold(
        None, obs[:3], groups[:3], statistics=("mean", "count"), group_index=groups, n_groups=2
    )
    # group 0 done (mean + count planes, float32), group 1 open (uint16 count + float64 sum)
    assert sizeof(state) >= 2 * 50 * 40 * 4 + 50 * 40 * (2 + 8)
    assert state.open[1].count.dtype == np.uint16


# -- accumulators against float64 truth at adversarial sizes -----------------------------------
def _adversarial(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` observations of 6 pixels: near +1 (a big sum), near +-1 alternating (the sum
    cancels), 1.0 among tiny values, a mixed range, mostly cloud, and every value one
    float32 step below 1."""
    near_one = (1 - rng.integers(1, 64, n) * 2.0**-24).astype(np.float32)
    signs = np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.float32)
    obs = np.empty((n, 2, 3), np.float32)
    obs[:, 0, 0] = near_one
    obs[:, 0, 1] = signs * near_one
    obs[:, 0, 2] = np.where(np.arange(n) % 97 == 0, 1.0, 1e-7)
    obs[:, 1, 0] = rng.uniform(-1, 1, n)
    obs[:, 1, 1] = np.where(rng.random(n) < 0.9, np.nan, rng.uniform(-1, 1, n))
    obs[:, 1, 2] = np.nextafter(np.float32(1), np.float32(0))
    return obs


@pytest.mark.parametrize("n", [65_535, 70_001])  # the uint16 counter's limit, and past it
def test_streamed_mean_and_count_stay_within_1e_6_of_float64_truth(n):
    obs = _adversarial(n, np.random.default_rng(n))
    groups = np.zeros(n, int)
    stats = ("mean", "count")
    state = None
    for a in range(0, n, 10_000):  # time blocks of 10,000 observations
        first = {"group_index": groups, "n_groups": 1} if state is None else {}
        state = stream_fold(
            state, obs[a : a + 10_000], groups[a : a + 10_000], statistics=stats, **first
        )
    mean, count = stream_finish(state, statistics=stats)
    truth = np.nanmean(obs.astype(np.float64), axis=0)  # numpy, float64, the whole stack
    assert np.abs(mean.astype(np.float64) - truth).max() <= 1e-6
    expected = np.minimum((~np.isnan(obs)).sum(0), COUNT_NODATA - 1)
    np.testing.assert_array_equal(count, expected)
    # the inputs have teeth: a float32 running sum (no compensation) is off by more
    running = np.zeros((2, 3), np.float32)
    for plane in obs:
        np.add(running, plane, out=running, where=~np.isnan(plane))
    assert np.abs(running / (~np.isnan(obs)).sum(0) - truth).max() > 1e-6
