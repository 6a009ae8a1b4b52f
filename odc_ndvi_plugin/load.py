"""The load path: datasets of one task -> a lazy ``(spec, y, x)`` float32 NDVI stack.

One observation per solar day (``spec`` dimension, coordinate ``time`` = the solar date):
scenes of the same day (overlapping paths) are fused by taking the first clear value.

The ``direct`` loader reads each scene's window with rasterio, computes NDVI at native
resolution, and either pastes it (scene grid aligned with the output grid: exact, no
resampling) or warps the single float32 NDVI band onto the output chunk. One dask task
per (solar day, output chunk); no intermediate integer bands are ever warped or stacked.

The ``odc-stats`` loader runs odc-stats' own ``load_with_native_transform`` with the same
pixel maths as its native transform; it exists as a reference and for benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache, partial

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
import xarray as xr
from affine import Affine
from datacube.model import Dataset
from datacube.utils.dates import normalise_dt
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.geo.xr import xr_coords

from .ndvi import NDVIInputs, ndvi_from_bands

__all__ = [
    "InputReadError",
    "SolarDay",
    "group_by_solar_day",
    "load_ndvi_direct",
    "measurement_uri",
]


class InputReadError(RuntimeError):
    """An input file could not be read; the message names the dataset, band and file."""


@dataclass(frozen=True)
class SolarDay:
    """Datasets observed on one solar day (local date at the tile's longitude)."""

    date: np.datetime64
    datasets: tuple[Dataset, ...]


def _solar_offset(geobox: GeoBox) -> timedelta:
    # same rule as odc-stats' task binning: whole hours from the tile centre's longitude
    lon = geobox.extent.centroid.to_crs("epsg:4326").coords[0][0]
    return timedelta(hours=int(lon * 24 / 360 + 0.5))


def group_by_solar_day(datasets: Sequence[Dataset], geobox: GeoBox) -> list[SolarDay]:
    """Group datasets by solar day, ordered by date; within a day by (time, id)."""
    offset = _solar_offset(geobox)
    days: dict[np.datetime64, list[Dataset]] = {}
    for ds in sorted(datasets, key=lambda d: (normalise_dt(d.center_time), str(d.id))):
        day = np.datetime64((normalise_dt(ds.center_time) + offset).date(), "D")
        days.setdefault(day, []).append(ds)
    return [SolarDay(day, tuple(dss)) for day, dss in sorted(days.items())]


def measurement_uri(ds: Dataset, band: str) -> str:
    """Absolute URI of ``band`` of ``ds``; ``KeyError`` naming both when it is absent."""
    from datacube.storage import measurement_paths

    paths = measurement_paths(ds)
    if band not in paths:
        raise KeyError(
            f"dataset {ds.id} ({ds.product.name}) has no band {band!r}; it has: {', '.join(sorted(paths))}"
        )
    return paths[band]


def _rio_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


@dataclass(frozen=True)
class _Source:
    """One scene's three band files (picklable: what a worker needs to read it)."""

    dataset_id: str
    product: str
    uris: tuple[str, str, str]  # red, nir, mask
    inputs: NDVIInputs


@lru_cache(maxsize=4096)
def _bounds_in(
    dst_crs: str, bbox: tuple[float, float, float, float], src_crs: str
) -> tuple[float, ...]:
    """A chunk's bounds in a scene's CRS; every scene of a path shares it, so cache it
    (it was a fifth of the warp path's time, recomputed per scene and day)."""
    return tuple(rasterio.warp.transform_bounds(dst_crs, src_crs, *bbox, densify_pts=21))


def _read_window(
    src: rasterio.DatasetReader, window: rasterio.windows.Window, fill: float | int | None
) -> np.ndarray:
    """Read ``window`` (may extend past the file); outside the file is ``fill``."""
    full = rasterio.windows.Window(0, 0, src.width, src.height)
    out = np.full(
        (int(window.height), int(window.width)),
        fill if fill is not None else 0,
        dtype=src.dtypes[0],
    )
    try:
        inner = window.intersection(full)
    except rasterio.errors.WindowError:
        return out
    inner = inner.round_offsets().round_lengths()
    if inner.width <= 0 or inner.height <= 0:
        return out
    r0 = int(inner.row_off - window.row_off)
    c0 = int(inner.col_off - window.col_off)
    out[r0 : r0 + int(inner.height), c0 : c0 + int(inner.width)] = src.read(1, window=inner)
    return out


def _scene_ndvi_on(
    source: _Source,
    dst: GeoBox,
    *,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
) -> np.ndarray:
    """NDVI of one scene on the destination chunk ``dst`` (NaN where not clear/absent)."""
    pad = max((r for _, r in mask_filters), default=0)
    bad_filter = None
    if mask_filters:
        from odc.algo._masking import mask_cleanup_np

        bad_filter = partial(mask_cleanup_np, mask_filters=mask_filters)
    inputs = source.inputs
    fills = (inputs.red.nodata, inputs.nir.nodata, inputs.mask_nodata)
    srcs = []
    try:
        for uri in source.uris:
            srcs.append(rasterio.open(_rio_path(uri)))
        ref = srcs[0]
        src_crs = ref.crs
        if src_crs is None:
            raise InputReadError(f"dataset {source.dataset_id}: {source.uris[0]} has no CRS")
        same_crs = CRS(src_crs.to_wkt()) == dst.crs
        sx, sy = ref.transform.a, ref.transform.e
        dx, dy = dst.affine.a, dst.affine.e
        col = (dst.affine.c - ref.transform.c) / sx
        row = (dst.affine.f - ref.transform.f) / sy
        aligned = (
            same_crs
            and np.isclose(sx, dx)
            and np.isclose(sy, dy)
            and ref.transform.b == 0
            and ref.transform.d == 0
            and abs(col - round(col)) < 1e-6
            and abs(row - round(row)) < 1e-6
        )
        ny, nx = dst.shape.yx
        if aligned:
            window = rasterio.windows.Window(
                round(col) - pad, round(row) - pad, nx + 2 * pad, ny + 2 * pad
            )
            arrays = [_read_window(s, window, f) for s, f in zip(srcs, fills, strict=True)]
            ndvi = ndvi_from_bands(*arrays, inputs, bad_filter=bad_filter)
            return ndvi[pad : pad + ny, pad : pad + nx]
        # not aligned: read the native window covering the chunk (+ margin), warp NDVI
        left, bottom, right, top = _bounds_in(
            dst.crs.to_wkt(), tuple(dst.boundingbox), src_crs.to_wkt()
        )
        margin = 2 + pad
        window = rasterio.windows.from_bounds(left, bottom, right, top, ref.transform)
        window = rasterio.windows.Window(
            int(np.floor(window.col_off)) - margin,
            int(np.floor(window.row_off)) - margin,
            int(np.ceil(window.width)) + 2 * margin + 1,
            int(np.ceil(window.height)) + 2 * margin + 1,
        )
        arrays = [_read_window(s, window, f) for s, f in zip(srcs, fills, strict=True)]
        ndvi = ndvi_from_bands(*arrays, inputs, bad_filter=bad_filter)
        out = np.full((ny, nx), np.nan, dtype=np.float32)
        rasterio.warp.reproject(
            ndvi,
            out,
            src_transform=rasterio.windows.transform(window, ref.transform),
            src_crs=src_crs,
            src_nodata=np.nan,
            dst_transform=Affine(*dst.affine[:6]),
            dst_crs=dst.crs.to_wkt(),
            dst_nodata=np.nan,
            resampling=rasterio.warp.Resampling[resampling],
        )
        return out
    except rasterio.errors.RasterioIOError as err:
        bad = source.uris[len(srcs)] if len(srcs) < 3 else ", ".join(source.uris)
        raise InputReadError(
            f"dataset {source.dataset_id} ({source.product}): cannot read {bad}: {err}"
        ) from err
    except Exception as err:  # decoding errors surface at read time, not open time
        if isinstance(err, InputReadError):
            raise
        raise InputReadError(
            f"dataset {source.dataset_id} ({source.product}): failed reading "
            f"{', '.join(source.uris)}: {type(err).__name__}: {err}"
        ) from err
    finally:
        for s in srcs:
            s.close()


def _day_chunk(
    sources: tuple[_Source, ...],
    dst: GeoBox,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
) -> np.ndarray:
    """One solar day on one output chunk: first clear value across the day's scenes."""
    out: np.ndarray | None = None
    for source in sources:
        ndvi = _scene_ndvi_on(source, dst, resampling=resampling, mask_filters=mask_filters)
        if out is None:
            out = ndvi
        else:
            np.copyto(out, ndvi, where=np.isnan(out))
        if not np.isnan(out).any():
            break
    assert out is not None
    return out[None]


def load_ndvi_direct(
    datasets: Sequence[Dataset],
    geobox: GeoBox,
    *,
    inputs_for: Callable[[Dataset], NDVIInputs],
    bands: tuple[str, str, str],
    chunks: tuple[int, int],
    resampling: str = "nearest",
    mask_filters: tuple[tuple[str, int], ...] = (),
) -> xr.Dataset:
    """Lazy NDVI stack of ``datasets`` on ``geobox`` as ``Dataset({"ndvi": (spec, y, x)})``."""
    days = group_by_solar_day(datasets, geobox)
    day_sources = [
        tuple(
            _Source(
                str(ds.id),
                ds.product.name,
                tuple(measurement_uri(ds, b) for b in bands),  # type: ignore[arg-type]
                inputs_for(ds),
            )
            for ds in day.datasets
        )
        for day in days
    ]
    cy, cx = (
        geobox.shape.y if chunks[0] == -1 else chunks[0],
        geobox.shape.x if chunks[1] == -1 else chunks[1],
    )
    tiles = GeoboxTiles(geobox, (cy, cx))
    ny_t, nx_t = tiles.shape.yx
    rows = []
    for sources in day_sources:
        row_blocks = []
        for iy in range(ny_t):
            col_blocks = []
            for ix in range(nx_t):
                sub = tiles[iy, ix]
                block = dask.delayed(_day_chunk, pure=True)(sources, sub, resampling, mask_filters)
                col_blocks.append(
                    da.from_delayed(block, shape=(1, *sub.shape.yx), dtype=np.float32)
                )
            row_blocks.append(col_blocks)
        rows.append(da.block(row_blocks))
    if rows:
        data = da.concatenate(rows, axis=0)
    else:
        data = da.full((0, *geobox.shape.yx), np.nan, dtype=np.float32, chunks=(1, cy, cx))
    times = np.array([d.date for d in days], dtype="datetime64[ns]")
    coords = {"time": ("spec", times), **xr_coords(geobox)}
    ndvi = xr.DataArray(
        data, dims=("spec", "y", "x"), coords=coords, attrs={"nodata": np.nan, "units": "1"}
    )
    return xr.Dataset({"ndvi": ndvi})
