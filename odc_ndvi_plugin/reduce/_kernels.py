"""Per-season NDVI reduction kernels, and the one place that decides output dtypes and nodata.

Input is a stack of NDVI observations ``(time, y, x)`` as float32 with NaN wherever the
observation is not clear. For each group (season) the kernels produce, in one pass over
the block: the clear-observation count, and the requested statistics of the clear values.

Nodata rules:

* float statistics are float32, nodata NaN; a pixel with fewer than ``min_clear`` clear
  observations in the group is NaN;
* ``clear_count`` is uint16 and always written (0 = no clear observation); its nodata
  value :data:`COUNT_NODATA` (65535) is reserved and never produced (counts saturate at
  65534).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from dask.sizeof import sizeof

__all__ = [
    "COUNT_DTYPE",
    "CLIMATOLOGY_EXTRAS",
    "CLIMATOLOGY_STATISTICS",
    "COUNT_NODATA",
    "COUNT_STATISTICS",
    "FLOAT_DTYPE",
    "SeasonClimate",
    "STATISTICS",
    "band_dtype_nodata",
    "STREAMABLE",
    "GroupAccumulator",
    "StreamState",
    "anomaly_block",
    "reduce_block",
    "stream_finish",
    "stream_fold",
    "stream_start",
    "stream_take",
    "tally_dtype",
]

STATISTICS = ("mean", "median", "std", "min", "max", "count")
FLOAT_DTYPE = np.dtype("float32")
COUNT_DTYPE = np.dtype("uint16")
COUNT_NODATA = 65535


#: statistics written as counts (uint16, nodata 65535)
COUNT_STATISTICS = frozenset({"count", "years", "baseline_years"})
#: climatology: the bands every season gets, then the optional ones (of the block means)
CLIMATOLOGY_STATISTICS = ("mean", "std", "years", "count")
CLIMATOLOGY_EXTRAS = ("median", "min", "max")


def tally_dtype(n_obs: int | None) -> np.dtype:
    """The narrowest counter that cannot overflow for a group of ``n_obs`` observations
    (a pixel's clear count, years...): uint16 up to 65535, else uint32 (None: unknown).
    Counts are exact either way; a uint16 counter is half an int32's memory."""
    return np.dtype("uint16") if n_obs is not None and n_obs <= 65535 else np.dtype("uint32")


def band_dtype_nodata(statistic: str) -> tuple[np.dtype, float | int]:
    """Output dtype and nodata value of a statistic's band."""
    if statistic in COUNT_STATISTICS:
        return COUNT_DTYPE, COUNT_NODATA
    return FLOAT_DTYPE, float("nan")


@dataclass
class GroupAccumulator:
    """Running per-pixel state of one group's clear observations (sums in float64: a
    float32 sum with its compensation term would take the same 8 bytes; counts in
    :func:`tally_dtype` of the group's number of observations)."""

    count: np.ndarray
    total: np.ndarray | None = None
    lowest: np.ndarray | None = None
    highest: np.ndarray | None = None

    @classmethod
    def empty(
        cls, shape: tuple[int, ...], statistics: Sequence[str], n_obs: int | None = None
    ) -> GroupAccumulator:
        """``n_obs``: how many observations the group has (at most; None: unknown)."""
        need_mean = "mean" in statistics or "std" in statistics
        return cls(
            count=np.zeros(shape, dtype=tally_dtype(n_obs)),
            total=np.zeros(shape, dtype=np.float64) if need_mean else None,
            lowest=np.full(shape, np.inf, dtype=np.float32) if "min" in statistics else None,
            highest=np.full(shape, -np.inf, dtype=np.float32) if "max" in statistics else None,
        )

    def add(self, plane: np.ndarray, block: int = 0) -> None:
        """Fold one observation (NaN = not clear) in, in place (``block``: unused here)."""
        valid = ~np.isnan(plane)
        self.count += valid
        if self.total is not None:
            np.add(self.total, plane, out=self.total, where=valid)
        if self.lowest is not None:
            np.fmin(self.lowest, plane, out=self.lowest)  # fmin/fmax ignore NaN
        if self.highest is not None:
            np.fmax(self.highest, plane, out=self.highest)

    @property
    def nbytes(self) -> int:
        arrays = (self.count, self.total, self.lowest, self.highest)
        return sum(a.nbytes for a in arrays if a is not None)

    def finish(self, statistics: Sequence[str], min_clear: int) -> list[np.ndarray]:
        return _finish_group(self, statistics, min_clear)


@dataclass
class SeasonClimate:
    """Running state of one season over a climatology's blocks (season instances).

    Within the open block: the clear observations' float64 sum and count. When the block
    changes, its mean ``m[k,s]`` (missing with fewer than ``min_clear`` clear observations)
    is folded into a Welford mean / M2 (float64) and a count of blocks; min/max of the
    block means are running too. Only ``median`` keeps every block's mean (K planes of
    float32): mean/std/count hold a fixed number of planes whatever the number of years.
    Counts (clear observations, years) in :func:`tally_dtype` of the season's number of
    observations; sums, means and M2 in float64."""

    min_clear: int
    block_sum: np.ndarray
    block_count: np.ndarray
    years: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    clear: np.ndarray
    block: int | None = None
    lowest: np.ndarray | None = None
    highest: np.ndarray | None = None
    means: list[np.ndarray] | None = None

    @classmethod
    def empty(
        cls,
        shape: tuple[int, ...],
        statistics: Sequence[str],
        min_clear: int,
        n_obs: int | None = None,
    ) -> SeasonClimate:
        tally = tally_dtype(n_obs)  # blocks and clear observations: at most n_obs
        return cls(
            min_clear=max(min_clear, 1),
            block_sum=np.zeros(shape, dtype=np.float64),
            block_count=np.zeros(shape, dtype=tally),
            years=np.zeros(shape, dtype=tally),
            mean=np.zeros(shape, dtype=np.float64),
            m2=np.zeros(shape, dtype=np.float64),
            clear=np.zeros(shape, dtype=tally),
            lowest=np.full(shape, np.inf, dtype=np.float32) if "min" in statistics else None,
            highest=np.full(shape, -np.inf, dtype=np.float32) if "max" in statistics else None,
            means=[] if "median" in statistics else None,
        )

    def add(self, plane: np.ndarray, block: int = 0) -> None:
        """Fold one observation of season instance ``block`` in (blocks arrive in order)."""
        if self.block is not None and block != self.block:
            self._close_block()
        self.block = block
        valid = ~np.isnan(plane)
        self.block_count += valid
        self.clear += valid
        np.add(self.block_sum, plane, out=self.block_sum, where=valid)

    def _close_block(self) -> None:
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.block_sum / self.block_count
        ok = self.block_count >= self.min_clear
        m = np.where(ok, m, np.nan)
        self.years += ok
        n = np.maximum(self.years, 1)
        delta = np.where(ok, m - self.mean, 0.0)
        self.mean += delta / n
        self.m2 += np.where(ok, delta * (m - self.mean), 0.0)
        m32 = m.astype(np.float32)
        if self.lowest is not None:
            np.fmin(self.lowest, m32, out=self.lowest)
        if self.highest is not None:
            np.fmax(self.highest, m32, out=self.highest)
        if self.means is not None:
            self.means.append(m32)
        self.block_sum[...] = 0.0
        self.block_count[...] = 0
        self.block = None

    @property
    def nbytes(self) -> int:
        arrays = (
            self.block_sum,
            self.block_count,
            self.years,
            self.mean,
            self.m2,
            self.clear,
            self.lowest,
            self.highest,
            *(self.means or ()),
        )
        return sum(a.nbytes for a in arrays if a is not None)

    def finish(self, statistics: Sequence[str], min_clear: int) -> list[np.ndarray]:
        """Planes in ``statistics`` order (mean, std, years, count, then median/min/max)."""
        if self.block is not None:
            self._close_block()
        years = self.years
        out: list[np.ndarray] = []
        for stat in statistics:
            if stat == "mean":
                value = np.where(years >= 1, self.mean, np.nan)
            elif stat == "std":  # sample std over blocks (ddof 1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    value = np.where(years >= 2, np.sqrt(self.m2 / (years - 1)), np.nan)
            elif stat == "years":
                value = np.minimum(years, COUNT_NODATA - 1)
            elif stat == "count":
                value = np.minimum(self.clear, COUNT_NODATA - 1)
            elif stat == "min":
                value = np.where(years >= 1, self.lowest, np.nan)
            elif stat == "max":
                value = np.where(years >= 1, self.highest, np.nan)
            elif stat == "median":
                means = self.means or []
                stack = np.stack(means) if means else np.empty((0, *years.shape), np.float32)
                value = np.where(years >= 1, _nanmedian(stack, ~np.isnan(stack), years), np.nan)
            else:  # pragma: no cover - guarded by config validation
                raise ValueError(f"unknown climatology statistic {stat!r}")
            out.append(np.asarray(value).astype(np.float32))
        return out


def _finish_group(
    acc: GroupAccumulator,
    statistics: Sequence[str],
    min_clear: int,
    obs: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Output planes of one group, in ``statistics`` order. ``std`` and ``median`` need the
    group's observations ``obs`` (a second pass / a sort); the others only ``acc``."""
    count, shape = acc.count, acc.count.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = acc.total / count if acc.total is not None else None
    enough = count >= max(min_clear, 1)
    out: list[np.ndarray] = []
    for stat in statistics:
        if stat == "count":
            out.append(np.minimum(count, COUNT_NODATA - 1).astype(np.float32))
            continue
        if stat in ("std", "median") and obs is None:
            raise ValueError(f"statistic {stat!r} needs the observations, not a running sum")
        if stat == "mean":
            value = mean
        elif stat == "std":
            # second pass about the mean: exact, no E[x^2]-E[x]^2 cancellation
            m2 = np.zeros(shape, dtype=np.float64)
            for plane in obs:
                dev = plane - mean
                np.add(m2, dev * dev, out=m2, where=~np.isnan(plane))
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.sqrt(m2 / count)
        elif stat == "min":
            value = acc.lowest
        elif stat == "max":
            value = acc.highest
        elif stat == "median":
            stack = np.stack(obs) if obs else np.empty((0, *shape), dtype=np.float32)
            value = _nanmedian(stack, ~np.isnan(stack), count)
        else:  # pragma: no cover - guarded by config validation
            raise ValueError(f"unknown statistic {stat!r}")
        out.append(np.where(enough, value, np.nan).astype(np.float32))
    return out


def _group_stats(
    obs: Sequence[np.ndarray], shape: tuple[int, ...], statistics: Sequence[str], min_clear: int
) -> list[np.ndarray]:
    """Statistics of one group's observations, 2-D planes of ``shape`` (NaN = not clear).

    Accumulates plane by plane into 2-D accumulators, so apart from the median no
    ``(n, y, x)``-sized temporary is ever made; sums are float64.
    """
    acc = GroupAccumulator.empty(shape, statistics, len(obs))
    for plane in obs:
        acc.add(plane)
    return _finish_group(acc, statistics, min_clear, obs)


def _nanmedian(obs: np.ndarray, valid: np.ndarray, count: np.ndarray) -> np.ndarray:
    # sort with NaN last, then average the middle one/two clear values per pixel
    if obs.shape[0] == 0:
        return np.full(obs.shape[1:], np.nan, dtype=np.float32)
    count = count.astype(np.int64)  # signed: count - 1 of an empty pixel is -1, not 65535
    srt = np.sort(np.where(valid, obs, np.inf), axis=0)
    lo = np.clip((count - 1) // 2, 0, None)
    hi = np.clip(count // 2, 0, None)
    a = np.take_along_axis(srt, lo[None], axis=0)[0].astype(np.float64)
    b = np.take_along_axis(srt, hi[None], axis=0)[0].astype(np.float64)
    return (a + b) / 2


def reduce_block(
    ndvi: np.ndarray | Sequence[np.ndarray],
    group_index: np.ndarray,
    *,
    n_groups: int,
    statistics: Sequence[str],
    min_clear: int = 1,
) -> np.ndarray:
    """Reduce NDVI observations to ``(n_groups * len(statistics), y, x)`` float32.

    ``ndvi`` is a ``(time, y, x)`` block or a list of such blocks in time order (dask's
    un-concatenated blocks: no copy of the stack is made). Output planes are group-major:
    group 0's statistics in ``statistics`` order, then group 1's... Counts are returned as
    exact float32 integers (the caller casts them). Observations with
    ``group_index == -1`` belong to no group and are ignored.
    """
    blocks = [ndvi] if isinstance(ndvi, np.ndarray) else list(ndvi)
    planes = [plane for block in blocks for plane in np.asarray(block, dtype=np.float32)]
    shape = blocks[0].shape[1:]
    group_index = np.asarray(group_index)
    if len(group_index) != len(planes):
        raise ValueError(f"{len(group_index)} group labels for {len(planes)} observations")
    out: list[np.ndarray] = []
    for g in range(n_groups):
        obs = [planes[i] for i in np.flatnonzero(group_index == g)]
        out.extend(_group_stats(obs, shape, statistics, min_clear))
    if not out:
        return np.empty((0, *shape), dtype=np.float32)
    return np.stack(out)


#: statistics computable from a running accumulator, one observation at a time
STREAMABLE = frozenset({"mean", "count", "min", "max"})


@dataclass
class StreamState:
    """Per-block state of a streaming reduction: open groups' accumulators, finished groups'
    output planes and how many observations each group still expects."""

    shape: tuple[int, ...]
    remaining: list[int]
    open: dict[int, GroupAccumulator | SeasonClimate] = field(default_factory=dict)
    done: dict[int, list[np.ndarray]] = field(default_factory=dict)


def stream_start(shape: tuple[int, ...], group_index: np.ndarray, n_groups: int) -> StreamState:
    labels = np.asarray(group_index)
    return StreamState(tuple(shape), [int((labels == g).sum()) for g in range(n_groups)])


def stream_fold(
    state: StreamState | None,
    block: np.ndarray,
    labels: np.ndarray,
    *,
    statistics: Sequence[str],
    min_clear: int = 1,
    group_index: np.ndarray | None = None,
    n_groups: int = 0,
    region: tuple[slice, slice] | None = None,
    blocks: np.ndarray | None = None,
) -> StreamState:
    """Fold a ``(t, y, x)`` block of observations (group ``labels``) into ``state``, *in
    place* (the caller chains folds linearly, so no one else holds ``state``). A group
    is finished as soon as its last observation is in: only its output planes stay.

    The first fold of a chain gets ``state=None`` and the whole ``group_index`` and
    ``n_groups``, and starts the state itself (a separate start task would be a root task
    of the graph, which dask schedules after every load and so holds every loaded block).
    ``region`` folds only that ``(y, x)`` part of ``block`` (a view: several chains share
    one loaded block, which is released once all have folded it). ``blocks``: the
    climatology block (season instance) of each observation of ``block``; with it each
    group is a :class:`SeasonClimate` over blocks instead of a plain accumulator."""
    if region is not None:
        block = block[(slice(None), *region)]
    if state is None:
        if group_index is None:
            raise ValueError("the first fold needs group_index and n_groups")
        state = stream_start(block.shape[1:], group_index, n_groups)
    instances = np.zeros(len(labels), dtype=np.int64) if blocks is None else np.asarray(blocks)
    planes = np.asarray(block, dtype=np.float32)
    for plane, g, k in zip(planes, np.asarray(labels), instances, strict=True):
        g = int(g)
        if g < 0:
            continue
        acc = state.open.get(g)
        if acc is None:
            acc = state.open[g] = _empty_accumulator(
                state.shape,
                statistics,
                min_clear,
                climate=blocks is not None,
                n_obs=state.remaining[g],  # none folded yet: the group's whole number
            )
        acc.add(plane, int(k))
        state.remaining[g] -= 1
        if state.remaining[g] == 0:
            state.done[g] = state.open.pop(g).finish(statistics, min_clear)
    return state


def _empty_accumulator(
    shape: tuple[int, ...],
    statistics: Sequence[str],
    min_clear: int,
    *,
    climate: bool,
    n_obs: int | None = None,
) -> GroupAccumulator | SeasonClimate:
    if climate:
        return SeasonClimate.empty(shape, statistics, min_clear, n_obs)
    return GroupAccumulator.empty(shape, statistics, n_obs)


def stream_take(
    state: StreamState,
    group: int,
    *,
    statistics: Sequence[str],
    min_clear: int = 1,
    climate: bool = False,
) -> list[np.ndarray]:
    """The output planes of one group (``statistics`` order), taken out of ``state`` as soon
    as the fold that completes the group has run: its bands can be encoded while later
    seasons are still being folded. A group without observations gives its empty result."""
    planes = state.done.pop(group, None)
    if planes is None:  # no observations in this group
        acc = state.open.pop(group, None) or _empty_accumulator(
            state.shape, statistics, min_clear, climate=climate, n_obs=0
        )
        planes = acc.finish(statistics, min_clear)
    return planes


def stream_finish(
    state: StreamState, *, statistics: Sequence[str], min_clear: int = 1
) -> list[np.ndarray]:
    """Every group's planes, float32, in :func:`reduce_block`'s order (group-major)."""
    return [
        plane
        for g in range(len(state.remaining))
        for plane in stream_take(state, g, statistics=statistics, min_clear=min_clear)
    ]


def _state_nbytes(state: StreamState) -> int:
    """What a reduction state holds, for dask's memory accounting (spilling, pausing)."""
    total = 0
    # list(): a take may pop a finished group in another thread meanwhile (list() of a
    # dict view is one step under the GIL; iterating the view is not)
    for acc in list(state.open.values()):
        total += acc.nbytes
    for planes in list(state.done.values()):
        total += sum(p.nbytes for p in planes)
    return total + 256


sizeof.register(StreamState)(_state_nbytes)


def anomaly_block(
    mean: np.ndarray,
    base_mean: np.ndarray,
    base_std: np.ndarray,
    base_years: np.ndarray,
    *,
    min_baseline_years: int,
) -> np.ndarray:
    """``(3, y, x)`` float32: ``mean - base_mean``, that over ``base_std``, and the baseline's
    years. Both anomalies are NaN where ``mean`` is NaN, the baseline counted fewer than
    ``min_baseline_years`` years, or its std is NaN or 0."""
    base_years = np.asarray(base_years)
    usable = (
        ~np.isnan(mean)
        & (base_years >= min_baseline_years)
        & (base_years != COUNT_NODATA)
        & np.isfinite(base_std)
        & (base_std != 0)
    )
    diff = mean.astype(np.float64) - base_mean.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        std_anomaly = diff / base_std.astype(np.float64)
    return np.stack(
        [
            np.where(usable, diff, np.nan).astype(np.float32),
            np.where(usable, std_anomaly, np.nan).astype(np.float32),
            base_years.astype(np.float32),
        ]
    )
