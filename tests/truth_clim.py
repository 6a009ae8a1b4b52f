"""Independent references for climatologies and anomalies (imports no plugin code).

The rules of issue 19, written out again in plain python/numpy:

- a season is a run of consecutive calendar months; an observation belongs to the instance
  of its season that holds its month, named by (year, month) of the instance's first month
  (DJF: 1994-02-10 -> (1993, 12)); one instance = one block's season;
- a block's seasonal mean m[k,s] is the mean of its clear values, missing when fewer than
  ``min_clear`` are clear;
- climatology bands per season: mean, sample std (ddof 1, NaN below 2 blocks), years (blocks
  with a mean), count (clear observations), and median/min/max of the block means;
- anomaly: ndvi_mean - baseline mean, and that over the baseline std; NaN where the season's
  mean is NaN, the baseline has fewer than ``min_baseline_years`` years, or its std is NaN/0.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["anomaly_truth", "climatology_truth", "season_instance"]


def season_instance(day: dt.date, seasons: Mapping[str, Sequence[int]]) -> tuple[str, int, int]:
    """(season, year, month) of the instance of ``day``'s season that holds ``day``."""
    for name, months in seasons.items():
        months = list(months)
        if day.month in months:
            back = months.index(day.month)
            year, month = day.year, day.month - back
            if month < 1:
                year, month = year - 1, month + 12
            return name, year, month
    raise KeyError(f"{day} is in no season")


def block_means(
    days: Sequence[tuple[dt.date, np.ndarray]],
    seasons: Mapping[str, Sequence[int]],
    min_clear: int,
) -> dict[str, dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]]:
    """season -> instance -> (m[k,s], clear count) of the instance's days."""
    grouped: dict[str, dict[tuple[int, int], list[np.ndarray]]] = {s: {} for s in seasons}
    for day, plane in days:
        name, year, month = season_instance(day, seasons)
        grouped[name].setdefault((year, month), []).append(plane)
    out: dict[str, dict] = {}
    for name, instances in grouped.items():
        out[name] = {}
        for key, planes in sorted(instances.items()):
            stack = np.stack(planes).astype(np.float64)
            count = (~np.isnan(stack)).sum(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, 0)
            out[name][key] = (np.where(count >= max(min_clear, 1), mean, np.nan), count)
    return out


def climatology_truth(
    days: Sequence[tuple[dt.date, np.ndarray]],
    seasons: Mapping[str, Sequence[int]],
    *,
    min_clear: int = 1,
    shape: tuple[int, int],
) -> dict[str, np.ndarray]:
    """Every climatology band (``ndvi_mean_<s>`` ...) of ``days`` (date, NaN-masked NDVI)."""
    out: dict[str, np.ndarray] = {}
    for name, instances in block_means(days, seasons, min_clear).items():
        if instances:
            m = np.stack([v[0] for v in instances.values()])
            clear = sum(v[1] for v in instances.values())
        else:
            m = np.full((0, *shape), np.nan)
            clear = np.zeros(shape, dtype=int)
        years = (~np.isnan(m)).sum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = {
                "mean": np.nanmean(m, 0) if len(m) else np.full(shape, np.nan),
                "std": np.nanstd(m, 0, ddof=1) if len(m) else np.full(shape, np.nan),
                "median": np.nanmedian(m, 0) if len(m) else np.full(shape, np.nan),
                "min": np.nanmin(m, 0) if len(m) else np.full(shape, np.nan),
                "max": np.nanmax(m, 0) if len(m) else np.full(shape, np.nan),
            }
        out[f"ndvi_mean_{name}"] = np.where(years >= 1, stats["mean"], np.nan)
        out[f"ndvi_std_{name}"] = np.where(years >= 2, stats["std"], np.nan)
        out[f"clear_years_{name}"] = years
        out[f"clear_count_{name}"] = clear
        for stat in ("median", "min", "max"):
            out[f"ndvi_{stat}_{name}"] = np.where(years >= 1, stats[stat], np.nan)
    return out


def anomaly_truth(
    days: Sequence[tuple[dt.date, np.ndarray]],
    baseline: Mapping[str, np.ndarray],
    season: str,
    *,
    min_clear: int = 1,
    min_baseline_years: int = 10,
) -> dict[str, np.ndarray]:
    """Every anomaly band of one season's ``days`` against ``baseline`` (climatology bands)."""
    stack = np.stack([p for _, p in days]).astype(np.float64)
    count = (~np.isnan(stack)).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.where(count >= min_clear, np.nanmean(stack, 0), np.nan)
    b_mean = baseline[f"ndvi_mean_{season}"].astype(np.float64)
    b_std = baseline[f"ndvi_std_{season}"].astype(np.float64)
    b_years = baseline[f"clear_years_{season}"]
    ok = ~np.isnan(mean) & (b_years >= min_baseline_years) & ~np.isnan(b_std) & (b_std != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "ndvi_mean": mean,
            "clear_count": count,
            "ndvi_anomaly": np.where(ok, mean - b_mean, np.nan),
            "ndvi_std_anomaly": np.where(ok, (mean - b_mean) / b_std, np.nan),
            "baseline_years": b_years,
        }
