"""The load path: a task's datasets -> a lazy ``(spec, y, x)`` NDVI stack.

:mod:`._direct` the graph (solar days, one read task per day and load block, first clear
wins), :mod:`._rio` the reads (rasterio), :mod:`._windows` the window maths (no IO); :mod:`._odc_stats` the reference loader
(odc-stats' ``load_with_native_transform``).
"""

from ._direct import (
    SKIPPED_INPUTS,
    SkippedInput,
    SolarDay,
    group_by_solar_day,
    load_ndvi_direct,
    measurement_uri,
)
from ._odc_stats import load_by_crs, native_ndvi
from ._rio import InputReadError, SceneRead, read_scene
from ._windows import MAX_LOAD_BLOCK_PX

__all__ = [
    "SKIPPED_INPUTS",
    "SkippedInput",
    "MAX_LOAD_BLOCK_PX",
    "InputReadError",
    "SceneRead",
    "SolarDay",
    "group_by_solar_day",
    "load_by_crs",
    "load_ndvi_direct",
    "measurement_uri",
    "native_ndvi",
    "read_scene",
]
