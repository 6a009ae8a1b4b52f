"""Independent references for the tests: which truth pixels are clear, per-day NDVI, numpy stats.

Nothing here imports plugin code: clear pixels come from the generator's condition codes
through a small table per flag set, NDVI from the decoded reflectances, and the rules the
README documents are written out again in plain numpy:

- a pixel is clear when the mask band passes the flag rule, neither red nor NIR equals its
  band's nodata (the generator's truth holds NaN there) and the ratio is finite;
- scenes of one solar day (overlapping paths and rows) are taken in (centre time, dataset id)
  order and the first clear value wins: a later scene fills only what no earlier one had;
- the day of an observation is its solar date (the local date at the tile), never the UTC
  date of the acquisition.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable

import numpy as np

from odc_ndvi_plugin.dev.synthetic import Condition

__all__ = [
    "CLEAR_RULES",
    "clear_ndvi",
    "disagreeing_overlap_pixels",
    "flag_clear_band_nodata_pixels",
    "nan_stat",
    "truth_days",
]

BadFilter = Callable[[np.ndarray], np.ndarray]


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


def _scene_order(scene) -> tuple[dt.datetime, str]:
    return scene.scene.datetime, str(scene.scene.id)


def clear_ndvi(scene, clear_fn, bad_filter: BadFilter | None = None) -> np.ndarray:
    """One scene's NDVI where it is clear, NaN elsewhere.

    ``bad_filter`` (bool array -> bool array) is applied to the flag rule's not-clear mask
    only, as a morphological clean-up of the mask band would be; band nodata and non-finite
    ratios are never clear, whatever the filter does."""
    flag_clear = clear_fn(scene)
    if bad_filter is not None:
        flag_clear = ~bad_filter(~flag_clear)
    bands_have_data = np.isfinite(scene.red) & np.isfinite(scene.nir)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (scene.nir - scene.red) / (scene.nir + scene.red)
    return np.where(flag_clear & bands_have_data & np.isfinite(ndvi), ndvi, np.nan)


def _scenes_by_solar_day(truth) -> dict[dt.date, list]:
    days: dict[dt.date, list] = {}
    for scene in sorted(truth.scenes, key=_scene_order):
        days.setdefault(scene.solar_date, []).append(scene)
    return dict(sorted(days.items()))


def truth_days(
    archive,
    geobox,
    clear_fn,
    *,
    bad_filter: BadFilter | None = None,
    without: frozenset[str] = frozenset(),
) -> list[tuple[np.datetime64, np.ndarray]]:
    """Per solar day, in date order: the first clear NDVI of the day's scenes taken in
    (centre time, dataset id) order, NaN where none is clear (see the module docstring);
    ``without``: names of scenes left out (as ``on_bad_input: skip`` leaves them out)."""
    out = []
    for day, scenes in _scenes_by_solar_day(archive.truth(geobox)).items():
        fused = np.full(geobox.shape, np.nan)
        for scene in scenes:
            if scene.scene.name in without:
                continue
            ndvi = clear_ndvi(scene, clear_fn, bad_filter)
            gap = np.isnan(fused)
            fused[gap] = ndvi[gap]
        out.append((np.datetime64(day, "D"), fused))
    return out


def disagreeing_overlap_pixels(archive, geobox, clear_fn) -> int:
    """How many (day, pixel) pairs have two scenes of the day both clear with different NDVI:
    the pixels where first-clear-wins and any other choice of scene give different results."""
    total = 0
    for scenes in _scenes_by_solar_day(archive.truth(geobox)).values():
        values = np.stack([clear_ndvi(s, clear_fn) for s in scenes])
        both_clear = (~np.isnan(values)).sum(0) >= 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            spread = np.nanmax(values, 0) - np.nanmin(values, 0)
        total += int((both_clear & (spread > 1e-3)).sum())
    return total


def flag_clear_band_nodata_pixels(archive, geobox, clear_fn) -> int:
    """How many scene pixels pass the flag rule while red or NIR is the band's nodata."""
    return sum(
        int((clear_fn(s) & ~(np.isfinite(s.red) & np.isfinite(s.nir))).sum())
        for s in archive.truth(geobox).scenes
    )


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
