"""The reference loader: odc-stats' own ``load_with_native_transform`` with the plugin's
pixel maths as its native transform (``plugin_config.loader: odc-stats``).

odc-stats 1.9.7 cannot fuse loads of several CRSs (its io.py concatenates them along
``Dataset.dims[0]``, a KeyError for any plugin; the upstream fix, odc-stats PR #235, looks
up an input band in the output, which ours does not keep): :func:`load_by_crs` loads each
CRS on its own and fuses the solar days here, by the direct loader's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np
import xarray as xr
from datacube.model import Dataset
from datacube.utils.dates import normalise_dt
from odc.geo.geobox import GeoBox

from ..masking import bad_pixel_filter, filter_reach
from ..ndvi import NDVIInputs, ndvi_from_bands
from ._direct import group_by_solar_day

__all__ = ["load_by_crs", "native_ndvi"]


def native_ndvi(
    xx: xr.Dataset,
    bands: tuple[str, str, str],
    inputs: NDVIInputs,
    mask_filters: tuple[tuple[str, int], ...],
) -> xr.Dataset:
    """The native transform: the three native bands ``(red, nir, mask)`` -> one float32
    NDVI band (NaN where not clear), the bad-pixel filters applied with their reach."""
    pad = filter_reach(mask_filters)
    bad_filter = bad_pixel_filter(mask_filters)

    def _ndvi(red: np.ndarray, nir: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if red.ndim == 3:
            return np.stack(
                [
                    ndvi_from_bands(r, n, m, inputs, bad_filter=bad_filter)
                    for r, n, m in zip(red, nir, mask, strict=True)
                ]
            )
        return ndvi_from_bands(red, nir, mask, inputs, bad_filter=bad_filter)

    red, nir, mask = (xx[b] for b in bands)
    depth = {red.dims.index("y"): pad, red.dims.index("x"): pad} if pad else 0
    data = da.map_overlap(
        _ndvi, red.data, nir.data, mask.data, depth=depth, boundary="none", dtype=np.float32
    )
    ndvi = xr.DataArray(data, dims=red.dims, coords=red.coords, attrs={"nodata": np.nan})
    return xr.Dataset({"ndvi": ndvi}, attrs=xx.attrs)


def load_by_crs(
    load: Callable[[Sequence[Dataset]], xr.Dataset],
    datasets: Sequence[Dataset],
    geobox: GeoBox,
) -> xr.Dataset:
    """``ndvi (spec, y, x)``, one observation per solar day, from odc-stats' loads
    (``load(datasets)``: ``StatsPluginInterface.input_data``) of each CRS's datasets."""
    by_crs: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_crs.setdefault(str(ds.crs), []).append(ds)
    parts = [_solar_day_stack(load(group)) for group in by_crs.values()]
    if len(parts) == 1:
        return xr.Dataset({"ndvi": parts[0]})
    return xr.Dataset({"ndvi": _fuse_first_clear(parts, list(by_crs.values()), geobox)})


def _solar_day_stack(xx: xr.Dataset) -> xr.DataArray:
    """odc-stats' fused load -> ``ndvi (spec, y, x)`` with the solar date as ``time``."""
    (tdim,) = (d for d in xx["ndvi"].dims if d not in ("y", "x"))
    times = xx[tdim].values
    if tdim == "spec":
        times = xx["solar_day"].values if "solar_day" in xx.coords else xx["time"].values
    ndvi = xx["ndvi"]
    if tdim != "spec":
        ndvi = ndvi.rename({tdim: "spec"})
    ndvi = ndvi.drop_vars([c for c in ndvi.coords if c not in ("y", "x", "spatial_ref")])
    ndvi = ndvi.assign_coords(
        time=("spec", np.asarray(times, dtype="datetime64[D]").astype("datetime64[ns]"))
    )
    ndvi.attrs["nodata"] = np.nan
    return ndvi


def _fuse_first_clear(
    parts: Sequence[xr.DataArray], groups: Sequence[Sequence[Dataset]], geobox: GeoBox
) -> xr.DataArray:
    """One ``(spec, y, x)`` stack from per-CRS stacks: a solar day's value is the first clear
    one, the parts of a day taken in the order of their first scene (time, id): the direct
    loader's rule for same-day scenes."""
    first_scene: dict[tuple[int, np.datetime64], tuple] = {}
    for i, group in enumerate(groups):
        for day in group_by_solar_day(group, geobox):
            ds = day.datasets[0]
            first_scene[(i, day.date)] = (normalise_dt(ds.center_time), str(ds.id))
    days = sorted({np.datetime64(d, "D") for _, d in first_scene})
    fused = []
    for day in days:
        order = sorted((key, i) for (i, d), key in first_scene.items() if d == day)
        layers = [
            parts[i].isel(
                spec=int(np.flatnonzero(parts[i].time.values.astype("datetime64[D]") == day)[0])
            )
            for _, i in order
        ]
        value = layers[0]
        for layer in layers[1:]:
            value = value.fillna(layer)
        fused.append(value)
    out = xr.concat(fused, dim="spec")
    out.attrs["nodata"] = np.nan
    return out
