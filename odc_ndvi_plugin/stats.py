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

import numpy as np

__all__ = [
    "COUNT_DTYPE",
    "COUNT_NODATA",
    "FLOAT_DTYPE",
    "STATISTICS",
    "band_dtype_nodata",
    "reduce_block",
]

STATISTICS = ("mean", "median", "std", "min", "max", "count")
FLOAT_DTYPE = np.dtype("float32")
COUNT_DTYPE = np.dtype("uint16")
COUNT_NODATA = 65535


def band_dtype_nodata(statistic: str) -> tuple[np.dtype, float | int]:
    """Output dtype and nodata value of a statistic's band."""
    if statistic == "count":
        return COUNT_DTYPE, COUNT_NODATA
    return FLOAT_DTYPE, float("nan")


def _group_stats(obs: np.ndarray, statistics: Sequence[str], min_clear: int) -> list[np.ndarray]:
    """Statistics of one group's observations ``(n, y, x)`` (NaN = not clear)."""
    valid = ~np.isnan(obs)
    count = valid.sum(axis=0, dtype=np.int32)
    enough = count >= max(min_clear, 1)
    out: list[np.ndarray] = []
    need_mean = "mean" in statistics or "std" in statistics
    zeroed = np.where(valid, obs, np.float32(0)) if need_mean else None
    mean = None
    if need_mean:
        total = zeroed.sum(axis=0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
    for stat in statistics:
        if stat == "count":
            out.append(np.minimum(count, COUNT_NODATA - 1).astype(np.float32))
            continue
        if stat == "mean":
            value = mean
        elif stat == "std":
            # two passes over the block in memory: exact, no E[x^2]-E[x]^2 cancellation
            dev = np.where(valid, obs - mean.astype(np.float32), np.float32(0))
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.sqrt(np.einsum("tyx,tyx->yx", dev, dev, dtype=np.float64) / count)
        elif stat == "min":
            value = np.where(valid, obs, np.float32(np.inf)).min(axis=0, initial=np.inf)
        elif stat == "max":
            value = np.where(valid, obs, np.float32(-np.inf)).max(axis=0, initial=-np.inf)
        elif stat == "median":
            value = _nanmedian(obs, valid, count)
        else:  # pragma: no cover - guarded by config validation
            raise ValueError(f"unknown statistic {stat!r}")
        out.append(np.where(enough, value, np.nan).astype(np.float32))
    return out


def _nanmedian(obs: np.ndarray, valid: np.ndarray, count: np.ndarray) -> np.ndarray:
    # sort with NaN last, then average the middle one/two clear values per pixel
    if obs.shape[0] == 0:
        return np.full(obs.shape[1:], np.nan, dtype=np.float32)
    srt = np.sort(np.where(valid, obs, np.inf), axis=0)
    lo = np.clip((count - 1) // 2, 0, None)
    hi = np.clip(count // 2, 0, None)
    a = np.take_along_axis(srt, lo[None], axis=0)[0].astype(np.float64)
    b = np.take_along_axis(srt, hi[None], axis=0)[0].astype(np.float64)
    return (a + b) / 2


def reduce_block(
    ndvi: np.ndarray,
    group_index: np.ndarray,
    *,
    n_groups: int,
    statistics: Sequence[str],
    min_clear: int = 1,
) -> np.ndarray:
    """Reduce an NDVI block ``(time, y, x)`` to ``(n_groups * len(statistics), y, x)`` float32.

    Output planes are group-major: group 0's statistics in ``statistics`` order, then
    group 1's... Counts are returned as exact float32 integers (the caller casts them).
    Observations with ``group_index == -1`` belong to no group and are ignored.
    """
    ndvi = np.asarray(ndvi, dtype=np.float32)
    group_index = np.asarray(group_index)
    planes: list[np.ndarray] = []
    for g in range(n_groups):
        sel = np.flatnonzero(group_index == g)
        obs = ndvi[sel] if len(sel) != ndvi.shape[0] else ndvi
        planes.extend(_group_stats(obs, statistics, min_clear))
    if not planes:
        return np.empty((0, *ndvi.shape[1:]), dtype=np.float32)
    return np.stack(planes)
