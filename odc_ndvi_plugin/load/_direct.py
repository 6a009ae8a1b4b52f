"""The load path: datasets of one task -> a lazy ``(spec, y, x)`` float32 NDVI stack.

One observation per solar day (``spec`` dimension, coordinate ``time`` = the solar date):
scenes of the same day (overlapping paths) are fused by taking the first clear value.

The ``direct`` loader reads each scene's window with rasterio, computes NDVI at native
resolution, and either pastes it (scene grid aligned with the output grid: exact, no
resampling) or warps the single float32 NDVI band onto the output chunk. One dask task
per solar day (and load block: the whole tile up to ``MAX_LOAD_BLOCK_PX``), so each scene is
opened and decoded once per task; the mask band is read first and red/NIR only in the file
blocks that hold a clear pixel still needed. No integer band is ever warped or stacked.

The ``odc-stats`` loader runs odc-stats' own ``load_with_native_transform`` with the same
pixel maths as its native transform; it exists as a reference and for benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.env
import rasterio.warp
import rasterio.windows
import xarray as xr
from affine import Affine
from datacube.model import Dataset
from datacube.utils.dates import normalise_dt
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.geo.xr import xr_coords

from .._portable import travels
from .._redact import redact_url
from ..item import add_item_properties
from ..ndvi import NDVIInputs, ndvi_where
from ._rio import InputReadError, _Source, read_scene
from ._windows import MAX_LOAD_BLOCK_PX

__all__ = [
    "SKIPPED_INPUTS",
    "SkippedInput",
    "SolarDay",
    "group_by_solar_day",
    "load_ndvi_direct",
    "measurement_uri",
]


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


def _source(ds: Dataset, inputs: NDVIInputs) -> _Source:
    """What a worker needs to read ``ds``: its files of the product's (red, NIR, mask) bands."""
    red, nir, mask = (measurement_uri(ds, band) for band in inputs.bands)
    return _Source(str(ds.id), ds.product.name, (red, nir, mask), inputs)


def _scene_ndvi_on(
    source: _Source,
    dst: GeoBox,
    *,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
    wanted: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """NDVI of one scene on the destination block ``dst``: the values (NaN where not clear)
    and the part of ``dst`` they cover; None if the scene contributes nothing."""
    scene = read_scene(source, dst, mask_filters=mask_filters, wanted=wanted)
    if scene.red is None or scene.nir is None or scene.good is None or scene.box is None:
        return None
    ndvi = ndvi_where(scene.red, scene.nir, scene.good, source.inputs)
    ny, nx = dst.shape.yx
    if scene.aligned:  # paste: the box in window pixels, minus the pad, is the dst part
        rows, cols = scene.box
        p = scene.pad
        r0, r1 = max(rows.start - p, 0), min(rows.stop - p, ny)
        c0, c1 = max(cols.start - p, 0), min(cols.stop - p, nx)
        values = ndvi[
            r0 + p - rows.start : r1 + p - rows.start, c0 + p - cols.start : c1 + p - cols.start
        ]
        return values, (slice(r0, r1), slice(c0, c1))
    # not aligned: warp the single float32 NDVI band from the file's part of the window
    # (the warper skips destination areas it does not reach)
    out = np.full((ny, nx), np.nan, dtype=np.float32)
    rasterio.warp.reproject(
        ndvi,
        out,
        src_transform=rasterio.windows.transform(scene.box_window(), scene.transform),
        src_crs=scene.crs,
        src_nodata=np.nan,
        dst_transform=Affine(*dst.affine[:6]),
        dst_crs=dst.crs.to_wkt(),
        dst_nodata=np.nan,
        resampling=rasterio.warp.Resampling[resampling],
        SKIP_NOSOURCE="YES",
    )
    return out, (slice(0, ny), slice(0, nx))


@dataclass(frozen=True)
class SkippedInput:
    """A scene left out of its task (``on_bad_input: skip``): it could not be decoded."""

    dataset_id: str
    file: str  #: the file that failed (or the dataset document, for a band it lacks)
    band: str
    reason: str

    def as_property(self) -> dict[str, str]:
        """Its entry in the STAC item's ``odc_ndvi:skipped_inputs``."""
        return {"id": self.dataset_id, "file": self.file, "band": self.band, "reason": self.reason}


#: the STAC item property listing a task's skipped inputs (see :class:`SkippedInput`)
SKIPPED_INPUTS = "odc_ndvi:skipped_inputs"


@dataclass(frozen=True)
class _DayPiece:
    """A day block read with ``on_bad_input: skip``: its values, the scenes left out and
    the scenes whose pixels it holds."""

    values: np.ndarray
    skipped: tuple[SkippedInput, ...]
    used: frozenset[str]


@travels  # errors arrive at the client as raised (rasterio's causes cannot be pickled)
def _day_block(
    sources: tuple[_Source, ...],
    dst: GeoBox,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
    read_env: tuple[tuple[str, str], ...] = (),
    skip: bool = False,
) -> np.ndarray | _DayPiece:
    """One solar day on one load block: first clear value across the day's scenes (a later
    scene reads only the blocks where earlier ones left a gap, and fills only those).
    ``skip``: a scene that cannot be decoded is left out (the day fused again without
    it) and the result is a :class:`_DayPiece` saying so.

    Reads run under the S3/GDAL settings the process was given the ecosystem's way
    (``datacube.utils.aws.configure_s3_access``: odc-stats run, ``odc-ndvi run`` and a
    notebook all use it; credentials never travel in the task graph) and the plugin's own
    ``read_env`` (requester pays, HTTP retries: plain, non-secret GDAL options)."""
    from datacube.utils.rio import activate_from_config

    activate_from_config()
    with rasterio.Env(**dict(read_env)):
        if not skip:
            return _fuse_day(sources, dst, resampling, mask_filters)
        return _fuse_day_skipping(sources, dst, resampling, mask_filters)


def _fuse_day_skipping(
    sources: tuple[_Source, ...],
    dst: GeoBox,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
    skipped: tuple[SkippedInput, ...] = (),
) -> _DayPiece:
    """:func:`_fuse_day` leaving out the scenes in ``skipped`` and every scene that cannot
    be decoded; never one whose read failed transiently (that error is raised: the
    task is tried again, the scene is not lost)."""
    skipped_list = list(skipped)
    while True:
        gone = {s.dataset_id for s in skipped_list}
        used: set[str] = set()
        try:
            values = _fuse_day(
                tuple(s for s in sources if s.dataset_id not in gone),
                dst,
                resampling,
                mask_filters,
                used=used,
            )
        except InputReadError as err:
            if err.transient or not err.dataset_id or err.dataset_id in gone:
                raise
            skipped_list.append(SkippedInput(err.dataset_id, err.url, err.band, str(err)))
            continue
        return _DayPiece(values, tuple(skipped_list), frozenset(used))


def _piece_values(piece: _DayPiece) -> np.ndarray:
    return piece.values


def _piece_skipped(piece: _DayPiece) -> tuple[SkippedInput, ...]:
    return piece.skipped


def _union_skipped(*groups: tuple[SkippedInput, ...]) -> tuple[SkippedInput, ...]:
    seen: dict[str, SkippedInput] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item.dataset_id, item)
    return tuple(seen.values())


@travels
def _reconciled(
    piece: _DayPiece,
    day_skipped: tuple[SkippedInput, ...],
    sources: tuple[_Source, ...],
    dst: GeoBox,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
    read_env: tuple[tuple[str, str], ...] = (),
) -> _DayPiece:
    """A day block again without the scenes another block of the same day could not
    decode, if it used any of them: a scene is left out of the whole task or not at all."""
    if not piece.used & {s.dataset_id for s in day_skipped}:
        return piece
    from datacube.utils.rio import activate_from_config

    activate_from_config()
    with rasterio.Env(**dict(read_env)):
        return _fuse_day_skipping(sources, dst, resampling, mask_filters, day_skipped)


def _skipped_inputs(*groups: tuple[SkippedInput, ...]) -> list[dict[str, str]]:
    """The value of the STAC item's ``odc_ndvi:skipped_inputs``: one entry per dataset."""
    return [s.as_property() for s in sorted(_union_skipped(*groups), key=lambda s: s.dataset_id)]


def _fuse_day(
    sources: tuple[_Source, ...],
    dst: GeoBox,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
    used: set[str] | None = None,
) -> np.ndarray:
    out = np.full((1, *dst.shape.yx), np.nan, dtype=np.float32)
    day = out[0]
    first = True
    for source in sources:
        wanted = None if first else np.isnan(day)
        piece = _scene_ndvi_on(
            source, dst, resampling=resampling, mask_filters=mask_filters, wanted=wanted
        )
        if piece is None:
            continue
        if used is not None:
            used.add(source.dataset_id)
        values, where = piece
        if first:
            day[where] = values
            first = False
        else:
            np.copyto(day[where], values, where=wanted[where])
        # the scene's NDVI is pasted: not held while the next scene is read
        del piece, values, wanted
        if not np.isnan(day).any():
            break
    return out


def load_ndvi_direct(
    datasets: Sequence[Dataset],
    geobox: GeoBox,
    *,
    inputs_for: Callable[[Dataset], NDVIInputs],
    resampling: str = "nearest",
    mask_filters: tuple[tuple[str, int], ...] = (),
    read_env: tuple[tuple[str, str], ...] = (),
    on_bad_input: str = "fail",
) -> xr.Dataset:
    """Lazy NDVI stack of ``datasets`` on ``geobox`` as ``Dataset({"ndvi": (spec, y, x)})``;
    ``read_env``: GDAL options for the reads (see :func:`_day_block`).

    ``on_bad_input="skip"``: scenes that cannot be decoded are left out of the whole task
    and listed (lazily) in the result's STAC item properties (:data:`SKIPPED_INPUTS`,
    see :mod:`odc_ndvi_plugin.item`)."""
    skip = on_bad_input == "skip"
    days = group_by_solar_day(datasets, geobox)
    day_sources = []
    known_bad: list[SkippedInput] = []  # a band its document lacks: known before any read
    for day in days:
        sources = []
        for ds in day.datasets:
            inputs = inputs_for(ds)
            try:
                sources.append(_source(ds, inputs))
            except KeyError as err:
                if not skip:
                    raise
                uri = ds.uris[0] if ds.uris else ""
                band = next((b for b in inputs.bands if f"'{b}'" in str(err)), "")
                known_bad.append(SkippedInput(str(ds.id), redact_url(uri), band, err.args[0]))
        day_sources.append(tuple(sources))
    # load blocks: the whole tile (each scene opened and decoded once per task, no block
    # decoded twice at chunk edges), split only when a side exceeds MAX_LOAD_BLOCK_PX
    ly, lx = (-(-n // -(-n // MAX_LOAD_BLOCK_PX)) for n in geobox.shape.yx)
    tiles = GeoboxTiles(geobox, (ly, lx))
    ny_t, nx_t = tiles.shape.yx
    rows = []
    day_skips = []  # skip: per day, the scenes left out (delayed)
    for day_index, sources in enumerate(day_sources):
        blocks = {}
        # days load in date order, the order a streaming reduction folds them in
        with dask.annotate(priority=-day_index):
            for iy in range(ny_t):
                for ix in range(nx_t):
                    blocks[iy, ix] = dask.delayed(_day_block, pure=True)(
                        sources, tiles[iy, ix], resampling, mask_filters, read_env, skip
                    )
            if skip:
                blocks, skipped = _skip_consistently(
                    blocks, sources, tiles, resampling, mask_filters, read_env
                )
                day_skips.append(skipped)
        rows.append(
            da.block(
                [
                    [
                        da.from_delayed(
                            blocks[iy, ix], shape=(1, *tiles[iy, ix].shape.yx), dtype=np.float32
                        )
                        for ix in range(nx_t)
                    ]
                    for iy in range(ny_t)
                ]
            )
        )
    if rows:
        # load blocks as they are: the reduction carves its own blocks out of them
        data = da.concatenate(rows, axis=0)
    else:
        data = da.full((0, *geobox.shape.yx), np.nan, dtype=np.float32, chunks=(1, ly, lx))
    times = np.array([d.date for d in days], dtype="datetime64[ns]")
    coords = {"time": ("spec", times), **xr_coords(geobox)}
    ndvi = xr.DataArray(
        data, dims=("spec", "y", "x"), coords=coords, attrs={"nodata": np.nan, "units": "1"}
    )
    out = xr.Dataset({"ndvi": ndvi})
    if skip:
        listed = dask.delayed(_skipped_inputs, pure=True)(tuple(known_bad), *day_skips)
        out = add_item_properties(out, {SKIPPED_INPUTS: listed})
    return out


def _skip_consistently(
    blocks: dict[tuple[int, int], Any],
    sources: tuple[_Source, ...],
    tiles: GeoboxTiles,
    resampling: str,
    mask_filters: tuple[tuple[str, int], ...],
    read_env: tuple[tuple[str, str], ...],
) -> tuple[dict[tuple[int, int], Any], Any]:
    """One day's load blocks read with skip: the values of each block (delayed) and the
    day's skipped scenes. With several blocks (tiles wider than MAX_LOAD_BLOCK_PX), a
    scene one block could not decode is left out of the day's other blocks too."""
    skipped = {k: dask.delayed(_piece_skipped, pure=True)(b) for k, b in blocks.items()}
    day_skipped = dask.delayed(_union_skipped, pure=True)(*skipped.values())
    if len(blocks) > 1:
        blocks = {
            k: dask.delayed(_reconciled, pure=True)(
                b, day_skipped, sources, tiles[k], resampling, mask_filters, read_env
            )
            for k, b in blocks.items()
        }
    values = {k: dask.delayed(_piece_values, pure=True)(b) for k, b in blocks.items()}
    return values, day_skipped
