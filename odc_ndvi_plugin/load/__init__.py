"""The load path: a task's datasets -> a lazy ``(spec, y, x)`` NDVI stack (see :mod:`._direct`)."""

from ._direct import (
    MAX_LOAD_BLOCK_PX,
    InputReadError,
    SceneRead,
    SolarDay,
    group_by_solar_day,
    load_ndvi_direct,
    measurement_uri,
    read_scene,
)

__all__ = [
    "MAX_LOAD_BLOCK_PX",
    "InputReadError",
    "SceneRead",
    "SolarDay",
    "group_by_solar_day",
    "load_ndvi_direct",
    "measurement_uri",
    "read_scene",
]
