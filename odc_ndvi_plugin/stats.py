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


def _group_stats(
    obs: Sequence[np.ndarray], shape: tuple[int, ...], statistics: Sequence[str], min_clear: int
) -> list[np.ndarray]:
    """Statistics of one group's observations, 2-D planes of ``shape`` (NaN = not clear).

    Accumulates plane by plane into 2-D accumulators, so apart from the median no
    ``(n, y, x)``-sized temporary is ever made; sums are float64.
    """
    count = np.zeros(shape, dtype=np.int32)
    need_mean = "mean" in statistics or "std" in statistics
    total = np.zeros(shape, dtype=np.float64) if need_mean else None
    lowest = np.full(shape, np.inf, dtype=np.float32) if "min" in statistics else None
    highest = np.full(shape, -np.inf, dtype=np.float32) if "max" in statistics else None
    for plane in obs:
        valid = ~np.isnan(plane)
        count += valid
        if total is not None:
            np.add(total, plane, out=total, where=valid)
        if lowest is not None:
            np.fmin(lowest, plane, out=lowest)  # fmin/fmax ignore NaN
        if highest is not None:
            np.fmax(highest, plane, out=highest)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count if total is not None else None
    enough = count >= max(min_clear, 1)
    out: list[np.ndarray] = []
    for stat in statistics:
        if stat == "count":
            out.append(np.minimum(count, COUNT_NODATA - 1).astype(np.float32))
            continue
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
            value = lowest
        elif stat == "max":
            value = highest
        elif stat == "median":
            stack = np.stack(obs) if obs else np.empty((0, *shape), dtype=np.float32)
            value = _nanmedian(stack, ~np.isnan(stack), count)
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
