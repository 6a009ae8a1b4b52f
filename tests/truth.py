"""Independent references for the tests: which truth pixels are clear, per-day NDVI, numpy stats.

Nothing here imports plugin code: clear pixels come from the generator's condition codes
through a small table per flag set, NDVI from the decoded reflectances.
"""

from __future__ import annotations

import warnings

import numpy as np

from odc_ndvi_plugin.dev.synthetic import Condition

__all__ = ["CLEAR_RULES", "nan_stat", "truth_days"]


def _clear_usgs_default(scene) -> np.ndarray:
    # the tutorial's flags: nodata false, cloud & shadow not high confidence, land_or_cloud;
    # the generator sets the water bit for water surfaces except under high-confidence cloud
    return (
        scene.valid
        & ~np.isin(scene.condition, [Condition.CLOUD_HIGH, Condition.SHADOW])
        & ~scene.water
    )


def _clear_dea_valid(scene) -> np.ndarray:
    return scene.condition == Condition.CLEAR_LAND


#: preset name -> truth-scene -> clear mask, for the preset's default good_pixel_flags
CLEAR_RULES = {"usgs_c2": _clear_usgs_default, "dea_ard": _clear_dea_valid}


def truth_days(
    archive, geobox, clear_fn, *, bad_filter=None
) -> list[tuple[np.datetime64, np.ndarray]]:
    """Per solar day: NDVI of the first clear scene (overlaps must agree), NaN elsewhere.

    ``bad_filter`` (bool array -> bool array) is applied to each scene's not-clear mask.
    """
    truth = archive.truth(geobox)
    days: dict = {}
    for scene in truth.scenes:
        clear = clear_fn(scene)
        if bad_filter is not None:
            clear = ~bad_filter(~clear)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndvi = (scene.nir - scene.red) / (scene.nir + scene.red)
        ndvi = np.where(clear & np.isfinite(ndvi), ndvi, np.nan)
        day = np.datetime64(scene.solar_date, "D")
        if day not in days:
            days[day] = ndvi
        else:
            prev = days[day]
            both = ~np.isnan(prev) & ~np.isnan(ndvi)
            np.testing.assert_array_equal(prev[both], ndvi[both])  # same surface, same day
            days[day] = np.where(np.isnan(prev), ndvi, prev)
    return sorted(days.items())


def nan_stat(stack: np.ndarray, stat: str, min_clear: int = 1) -> np.ndarray:
    """Plain-numpy statistic over axis 0 of a NaN-masked stack (count: clear observations)."""
    count = (~np.isnan(stack)).sum(0)
    if stat == "count":
        return count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fn = {
            "mean": np.nanmean,
            "median": np.nanmedian,
            "std": np.nanstd,
            "min": np.nanmin,
            "max": np.nanmax,
        }
        value = (
            fn[stat](stack.astype(np.float64), axis=0)
            if len(stack)
            else np.full(stack.shape[1:], np.nan)
        )
    return np.where(count >= min_clear, value, np.nan)
