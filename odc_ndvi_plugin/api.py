"""The plugin as one call in a notebook: ``seasonal_ndvi(dc, ...)`` -> a lazy ``xr.Dataset``.

Same engine as a batch run, tile by tile:

* the configuration goes through ``NDVISeasonal(**plugin_config)`` (so
  ``NDVIConfig.from_plugin_config``: presets, validation, the plugin's own errors);
* datasets are found with ``dc.find_datasets`` and kept the way ``odc-stats save-tasks``
  keeps them for a task: the query is padded by 0.6 days and a dataset stays when its
  *solar* time (UTC + the tile's whole-hour longitude offset) falls inside the window;
* each output tile is ``plugin.reduce(plugin.input_data(datasets, tile))``, exactly what
  the runner computes for a task; tiles are stitched lazily with ``da.block``.

The requested region is cut into tiles of ``tile_px`` on the *output* grid, so the graph
grows with the number of tiles, and the work of one tile is bounded by its own solar days
and reduction blocks whatever the size of the region (:func:`max_tasks_per_tile`). Nothing
is computed here: ``.compute()``, ``.persist()`` or ``.to_zarr()`` run it on whatever dask
client is active (a ``LocalCluster``, a gateway cluster's client, or none).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from datacube.model import Dataset, Product
from datacube.utils.dates import normalise_dt
from odc.geo import geom, res_, resyx_
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.geo.xr import xr_coords

from ._anomaly_api import anomaly_bands, anomaly_request
from ._validate import did_you_mean
from .config import NDVIConfig
from .load import MAX_LOAD_BLOCK_PX, group_by_solar_day
from .plugin import NDVISeasonal
from .seasons import Seasons, period_problem

if TYPE_CHECKING:
    from datacube import Datacube

__all__ = [
    "DEFAULT_TILE_PX",
    "KEYWORDS",
    "NOT_HONOURED",
    "QUERY_PAD_DAYS",
    "TilePlan",
    "TimeWindow",
    "find_input_datasets",
    "max_tasks_per_tile",
    "output_geobox",
    "plan_tiles",
    "seasonal_ndvi",
]

#: side of the internal tiles: odc-stats' production tile (au-30 grid: 3200 px of 30 m)
DEFAULT_TILE_PX = 3200
#: days added on each side of the window for the index query (odc-stats save-tasks: 0.6)
QUERY_PAD_DAYS = 0.6


# ----------------------------------------------------------------------------- time


@dataclass(frozen=True)
class TimeWindow:
    """A closed interval of *solar* time, ``start <= t <= end`` (naive datetimes).

    odc-stats' task periods are half-open ``[start, start + period)``; ``end`` is the last
    instant before the next period, as odc-stats' ``DateTimeRange`` has it.
    """

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def parse(cls, time: Any) -> TimeWindow:
        """``"2019-12--P12M"`` (an odc-stats period), ``"2020"`` / ``"2020-03"`` (that
        whole year / month), or ``(start, end)`` as ``dc.load`` takes it: dates or strings,
        the end inclusive to the end of its day (month, year) when given as a string."""
        if isinstance(time, TimeWindow):
            return time
        if isinstance(time, str) and "--P" in time:
            from odc.stats.model import DateTimeRange

            period = DateTimeRange(time)
            return cls(_naive(period.start), _naive(period.end))
        if isinstance(time, (str, dt.date)):
            start, end = time, time
        elif isinstance(time, Sequence) and len(time) == 2:
            start, end = time
        else:
            raise ValueError(
                f"time: expected an odc-stats period like '2019-12--P12M', a year or month "
                f"like '2020', or a (start, end) pair; got {time!r}"
            )
        first = _naive(pd.Timestamp(start).to_pydatetime())
        if isinstance(end, dt.datetime):
            last = _naive(end)
        else:  # a date or a string: the whole day / month / year it names
            last = _naive(pd.Period(str(end)).end_time.to_pydatetime())
        if last < first:
            raise ValueError(f"time: the end {last} is before the start {first}")
        return cls(first, last)

    def __contains__(self, when: dt.datetime) -> bool:
        return self.start <= when <= self.end

    @property
    def months(self) -> list[tuple[int, int]]:
        """Calendar months ``(year, month)`` the window touches, in order."""
        first = self.start.year * 12 + self.start.month - 1
        last = self.end.year * 12 + self.end.month - 1
        return [(m // 12, m % 12 + 1) for m in range(first, last + 1)]

    def query(self, pad_days: float = QUERY_PAD_DAYS) -> tuple[dt.datetime, dt.datetime]:
        """UTC range for the index query: solar offsets are within +-14 h, so a padded
        window finds every dataset whose solar time can fall inside."""
        pad = dt.timedelta(days=pad_days)
        return self.start - pad, self.end + pad

    @property
    def label(self) -> str:
        """``start/end``: dates when the window is whole days, else ISO times."""
        whole_days = self.start.time() == dt.time.min and self.end.time() == dt.time.max
        if whole_days:
            return f"{self.start:%Y-%m-%d}/{self.end:%Y-%m-%d}"
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def _naive(when: dt.datetime) -> dt.datetime:
    """UTC without tzinfo, as odc-stats and datacube's ``normalise_dt`` compare times."""
    return normalise_dt(when)


def _window_season(seasons: Seasons, window: TimeWindow) -> str:
    """The season an anomaly window is (its months are exactly one configured season)."""
    problem = period_problem(seasons, window.start, window.end)
    if problem:
        raise ValueError(f"time: {window.label} is not one season: {problem}")
    return seasons.season_named(np.array([window.start], dtype="datetime64[D]"))


def _check_window_for_seasons(plugin: NDVISeasonal, window: TimeWindow) -> None:
    """Year mode groups by calendar month: a window of more than 12 months would pool, say,
    two Decembers into one DJF. Refuse that; warn when a season is split by the window."""
    seasons = plugin.config.seasons
    if seasons.mode == "climatology":
        problem = period_problem(seasons, window.start, window.end)
        if problem:
            raise ValueError(f"time: {window.label} is not a climatology window: {problem}")
        return
    if seasons.mode != "year":
        return
    months = window.months
    if len(months) > 12:
        raise ValueError(
            f"time: season_mode 'year' groups observations by calendar month, so a window of "
            f"{len(months)} months ({window.label}) would pool the same month of different "
            "years into one season; give at most 12 months, e.g. '2019-12--P12M'"
        )
    position = {month: i for i, (_, month) in enumerate(months)}
    for name, season_months in zip(seasons.names, seasons.months, strict=True):
        where = sorted(position[m] for m in season_months if m in position)
        if where and where[-1] - where[0] + 1 != len(where):
            taken = ", ".join(f"{y}-{m:02d}" for y, m in (months[i] for i in where))
            warnings.warn(
                f"season {name!r} takes the months {taken} of this window, which are not "
                "contiguous; start the window with the season's first month (e.g. "
                "'2019-12--P12M' for a contiguous DJF)",
                UserWarning,
                stacklevel=3,
            )


# ----------------------------------------------------------------------------- keywords

#: seasonal_ndvi's keywords and what each means here: dc.load's keywords with dc.load's
#: meaning unless said, then our own. The one table of them (the guide renders it; the
#: docstring points here); every other keyword is a ``plugin_config`` key.
KEYWORDS: Mapping[str, str] = MappingProxyType(
    {
        "product": "a product name, or a list of them (loaded as one stack, as odc-stats' "
        "``input_products: a-b``)",
        "time": "the window: ``(start, end)`` as dc.load takes it, a year or month "
        "(``'2020'``), or an odc-stats period (``'2019-12--P12M'``); compared with each "
        "scene's solar date, as odc-stats bins tasks. Default: the time range of ``like``",
        "x, y": "the region's ranges in ``crs`` (longitude/latitude when ``crs`` is not given)",
        "lon, lat": "the region's longitude/latitude ranges (also ``longitude``/``latitude``)",
        "crs": "the CRS of ``x``/``y``, as in dc.load (before this release: the output CRS; "
        "that meaning still works without ``output_crs`` and warns)",
        "geopolygon": "the region as an odc-geo ``Geometry`` (any CRS)",
        "like": "a GeoBox or an xarray object (a ``dc.load`` result): its grid, and its time "
        "range when ``time`` is not given",
        "output_crs, resolution, align": "the output grid, as dc.load makes it "
        "(``resolution``: a number, or ``(y, x)``; ``align``: ``(y, x)`` in CRS units); "
        "default: the product's ``load`` hints",
        "measurements": "output bands to return (default all), or the product bands the "
        "config reads (``red_band``, ``nir_band``, ``mask_band``), which selects all",
        "dask_chunks": "``x``/``y``: the blocks each tile is reduced in (``plugin_config."
        "chunks``); ``time`` is ignored: no time stack is ever held, days are folded in as "
        "they load",
        "group_by": "``'solar_day'``, always: same-day scenes are fused (first clear value), "
        "as odc-stats tasks fuse them",
        "resampling": "for the NDVI band when a scene is not on the output grid: a method, or "
        "dc.load's mapping (the red and NIR bands' entries, else ``'*'``; the mask is applied "
        "at native resolution before the one warp, so its entry does not apply)",
        "datasets": "use these datasets instead of searching the index (``product`` then "
        "defaults to theirs)",
        "dataset_predicate": "keep only the datasets for which it returns true",
        "<search field>=": "any other keyword that is a search field of the product's metadata "
        "type (``cloud_cover=(0, 30)``, ``region_code=...``) narrows the dataset search",
        "geobox": "the output grid as an odc-geo GeoBox (as odc-stac's ``geobox=``)",
        "tile_px": "side of the tiles the region is computed in (one odc-stats task's worth of "
        "work each; default 3200, odc-stats' production tile)",
        "xy_crs": "deprecated: ``crs`` (the CRS of ``x``/``y``) with ``output_crs``",
    }
)

#: dc.load keywords seasonal_ndvi cannot honour: the one line each gets, saying why
NOT_HONOURED: Mapping[str, str] = MappingProxyType(
    {
        "skip_broken_datasets": "an unreadable input fails its tile with one line naming the "
        "dataset, band and URL; skipping it would give statistics that look complete",
        "fuse_func": "same-day scenes are always fused by the first clear value, as "
        "odc-ndvi run fuses them, so results equal a batch run's",
        "progress_cbk": "nothing is loaded by the call (the result is lazy); watch dask's "
        "progress bar or dashboard when you compute",
        "patch_url": "inputs are read from the datasets' own URLs with datacube's "
        "configure_s3_access; for requester-pays buckets give requester_pays=True",
        "limit": "a cap on datasets would cut seasons short without saying so; narrow "
        "time= or the region instead",
        "driver": "the plugin reads with its own loaders (loader='direct' or 'odc-stats')",
    }
)

_OUR_KEYWORDS = (
    "product", "time", "x", "y", "lon", "lat", "longitude", "latitude", "crs", "geopolygon",
    "like", "geobox", "output_crs", "resolution", "align", "measurements", "dask_chunks",
    "group_by", "resampling", "datasets", "dataset_predicate", "tile_px", "xy_crs",
)  # fmt: skip


def _deprecated(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{old} is deprecated: {new}", FutureWarning, stacklevel=stacklevel + 1)


def _crs_keywords(crs: Any, output_crs: Any, xy_crs: Any, *, stacklevel: int) -> tuple[Any, Any]:
    """``(crs of x/y, output crs)`` from dc.load's keywords and our deprecated ones:
    ``crs`` without ``output_crs`` keeps its old meaning (the output CRS) and warns."""
    if xy_crs is not None and crs is not None and output_crs is not None:
        raise ValueError("give crs= (the CRS of x/y, as in dc.load) or xy_crs=, not both")
    if output_crs is None and crs is not None:
        _deprecated(
            "crs= as the output CRS",
            f"give output_crs={crs!r}; with output_crs=, crs= is the CRS of x/y, as in dc.load",
            stacklevel + 1,
        )
        return xy_crs, crs
    if xy_crs is not None:
        _deprecated(
            "xy_crs=", f"give crs={xy_crs!r} (the CRS of x/y, as in dc.load)", stacklevel + 1
        )
        return xy_crs, output_crs
    return crs, output_crs


def _resolution(resolution: Any) -> Any:
    """dc.load's resolution: a number, an odc-geo Resolution, or ``(y, x)``."""
    if isinstance(resolution, (tuple, list)):
        if len(resolution) != 2:
            raise ValueError(f"resolution: expected a number or (y, x), got {resolution!r}")
        res_y, res_x = map(float, resolution)
        return res_(res_x) if res_y == -res_x else resyx_(res_y, res_x)
    return resolution


# ----------------------------------------------------------------------------- space


def output_geobox(
    *,
    x: Any = None,
    y: Any = None,
    lon: Any = None,
    lat: Any = None,
    longitude: Any = None,
    latitude: Any = None,
    crs: Any = None,
    geopolygon: geom.Geometry | None = None,
    like: Any = None,
    geobox: GeoBox | None = None,
    output_crs: Any = None,
    resolution: Any = None,
    align: Any = None,
    load_hints: Mapping[str, Any] | None = None,
    xy_crs: Any = None,
    _stacklevel: int = 1,
) -> GeoBox:
    """The output grid, as ``dc.load`` makes it from the same keywords: ``geobox``, or
    ``like``'s grid (a GeoBox or anything with ``.odc.geobox``), or the region (``x``/``y``
    in ``crs``, longitude/latitude by default; ``lon``/``lat``; ``geopolygon``) on the grid
    of ``output_crs``, ``resolution`` and ``align`` (default: ``load_hints``, a product's
    ``load`` section), pixel edges on multiples of the resolution. ``KEYWORDS`` says what
    each keyword means."""
    xy, out_crs = _crs_keywords(crs, output_crs, xy_crs, stacklevel=_stacklevel + 1)
    ranges = {
        "x": x, "y": y, "lon": lon, "lat": lat, "longitude": longitude, "latitude": latitude
    }  # fmt: skip
    query: dict[str, Any] = {k: _range(k, v) for k, v in ranges.items() if v is not None}
    given = [name for name, v in (("geobox", geobox), ("like", like)) if v is not None]
    grid = [n for n, v in (("output_crs", out_crs), ("resolution", resolution)) if v is not None]
    if len(given) > 1 or (given and (query or geopolygon is not None or grid or align)):
        raise ValueError(
            "give one of geobox=, like= or a region (x=/y=, lon=/lat= or geopolygon=, with "
            "output_crs= and resolution=)"
        )
    if geobox is not None:
        if not isinstance(geobox, GeoBox):
            raise ValueError(f"geobox: expected an odc.geo GeoBox, got {type(geobox).__name__}")
        return geobox
    if like is not None:
        if isinstance(like, GeoBox):
            return like
        found = getattr(getattr(like, "odc", None), "geobox", None)
        if not isinstance(found, GeoBox):
            raise ValueError("like: expected a GeoBox or an xarray object with .odc.geobox")
        return found
    if geopolygon is not None:
        if query or xy is not None:
            raise ValueError("give geopolygon= or x=/y= (lon=/lat=, crs=), not both")
        region = geopolygon
    else:
        from datacube.api.query import Query  # dc.load's own reading of the region

        region = Query(**query, **({"crs": xy} if xy is not None else {})).geopolygon
    if region is None:
        raise ValueError(
            "give a region: x=/y= (longitude/latitude, or in crs=), lon=/lat=, geopolygon=, "
            "like= or geobox="
        )
    if region.crs is not None and region.crs.geographic:
        x0, y0, x1, y1 = region.boundingbox
        if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
            raise ValueError(
                f"the region {tuple(region.boundingbox)} is not longitude/latitude; for x/y "
                "in another CRS give crs= (e.g. crs=output_crs for metres of the output grid)"
            )
    hints = dict(load_hints or {})
    if out_crs is None and hints.get("output_crs") is None:
        raise ValueError(
            "output_crs: give output_crs= and resolution= (the product has no default grid), "
            "or like= / geobox="
        )
    if out_crs is not None and resolution is None:
        raise ValueError("resolution: give resolution= with output_crs= (e.g. 30, or (-30, 30))")
    from datacube.api.core import output_geobox as dc_output_geobox

    return dc_output_geobox(
        output_crs=out_crs,
        resolution=_resolution(resolution),
        align=align,
        load_hints=hints,
        geopolygon=region,
    )


def _range(name: str, value: Any) -> Any:
    """A coordinate range in increasing order (dc.load takes them either way round)."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name}: expected a number or a (min, max) pair, got {value!r}")
    return tuple(sorted(map(float, value)))


# ----------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class TilePlan:
    """One output tile: where it sits in the tile grid, its grid, and its datasets
    (as ``odc-stats save-tasks`` would put them in this tile's task)."""

    index: tuple[int, int]  # (row, column) in the tile grid
    geobox: GeoBox
    datasets: tuple[Dataset, ...]

    @property
    def solar_days(self) -> int:
        """Observations of the tile after same-day scenes are fused (time steps loaded)."""
        return len(group_by_solar_day(self.datasets, self.geobox))


def find_input_datasets(
    dc: Datacube,
    products: str | Sequence[str] | Sequence[Product],
    geobox: GeoBox,
    window: TimeWindow,
    plugin: NDVISeasonal,
    **search: Any,
) -> list[Dataset]:
    """Datasets of ``products`` (names or products) over ``geobox`` in the padded window,
    narrowed by ``search`` terms as ``dc.load`` takes them (each product first checked
    against the plugin config: a missing band or flag is the plugin's error)."""
    items = [products] if isinstance(products, str) else list(products)
    if not items:
        raise ValueError("product: give a product name or a list of them")
    names = [p for p in items if isinstance(p, str)]
    found = iter(_products(dc, names))
    out: list[Dataset] = []
    for item in items:
        product = next(found) if isinstance(item, str) else item
        plugin.validate_product(product)
        out += dc.find_datasets(
            product=product.name, time=window.query(), geopolygon=geobox.extent, **search
        )
    return out


def plan_tiles(
    datasets: Iterable[Dataset], geobox: GeoBox, window: TimeWindow, tile_px: int
) -> list[TilePlan]:
    """Cut ``geobox`` into tiles of ``tile_px`` and give each the datasets that touch it
    and whose solar time (with the tile's offset, as odc-stats bins) is in ``window``."""
    from odc.dscache.tools import solar_offset  # what odc-stats save-tasks bins with

    if isinstance(tile_px, bool) or not isinstance(tile_px, int) or tile_px < 1:
        raise ValueError(f"tile_px: expected a positive integer, got {tile_px!r}")
    datasets = list(datasets)
    for ds in datasets:
        if ds.extent is None:
            warnings.warn(f"dataset {ds.id} has no extent; skipped", UserWarning, stacklevel=2)
    datasets = [ds for ds in datasets if ds.extent is not None]
    tiles = GeoboxTiles(geobox, (tile_px, tile_px))
    plans = []
    for index in np.ndindex(*tiles.shape.yx):
        tile = tiles[index]
        offset = solar_offset(tile.extent)
        extent_in: dict[Any, geom.Geometry] = {}  # tile extent per dataset CRS
        chosen = []
        for ds in datasets:
            if _naive(ds.center_time) + offset not in window:
                continue
            crs = ds.extent.crs
            if crs not in extent_in:
                extent_in[crs] = tile.extent.to_crs(crs)
            if extent_in[crs].intersects(ds.extent):
                chosen.append(ds)
        plans.append(TilePlan(index, tile, tuple(chosen)))
    return plans


def max_tasks_per_tile(
    solar_days: int,
    *,
    tile_shape: tuple[int, int],
    chunks: Mapping[str, int],
    n_bands: int,
) -> int:
    """Upper bound on the dask tasks one output tile needs (its culled graph), from the
    structure of the load (:func:`~odc_ndvi_plugin.load.load_ndvi_direct`) and of the
    streaming reduction (:func:`~odc_ndvi_plugin.reduce.stream_reduce`):

    * per solar day and load block: a read task, its array wrapper and the concatenation
      into the time stack (3 tasks);
    * per solar day and reduction block: one fold (the time stack is never held);
    * per reduction block: per season, the take of its planes right after the fold of its
      last day (at most one per band), and per band the split-out plane, its array
      wrapper, the assembly of the tile's blocks (``da.block``: along x, then y), a dtype
      cast (count bands) and the stitching into the region (``da.block`` again): at most
      8 tasks per band.

    ``= D * (3 L + R) + 8 R B`` with D solar days, L load blocks (1 up to 4096 px a
    side), R reduction blocks (``ceil(h / chunks.y) * ceil(w / chunks.x)``) and B output
    bands. It depends only on the tile, never on the size of the region: a production
    tile-year (3200 px, 1600 px chunks, 46 solar days, 8 bands) is <= 580 tasks.
    """
    load_blocks, reduction_blocks = 1, 1
    for n, step in zip(tile_shape, (chunks["y"], chunks["x"]), strict=True):
        block = -(-n // -(-n // MAX_LOAD_BLOCK_PX))  # the loader's block side
        sizes = [min(block, n - a) for a in range(0, n, block)]
        load_blocks *= len(sizes)
        # reduction blocks are carved out of each load block
        reduction_blocks *= sum(math.ceil(s / (s if step == -1 else step)) for s in sizes)
    return solar_days * (3 * load_blocks + reduction_blocks) + 8 * reduction_blocks * n_bands


# ----------------------------------------------------------------------------- the call


def seasonal_ndvi(
    dc: Datacube,
    *,
    product: str | Sequence[str] | None = None,
    time: Any = None,
    x: Any = None,
    y: Any = None,
    lon: Any = None,
    lat: Any = None,
    longitude: Any = None,
    latitude: Any = None,
    crs: Any = None,
    geopolygon: geom.Geometry | None = None,
    like: Any = None,
    geobox: GeoBox | None = None,
    output_crs: Any = None,
    resolution: Any = None,
    align: Any = None,
    measurements: str | Sequence[str] | None = None,
    dask_chunks: Mapping[str, Any] | None = None,
    group_by: str | None = "solar_day",
    resampling: str | Mapping[str, str] | None = None,
    datasets: Iterable[Dataset] | None = None,
    dataset_predicate: Callable[[Dataset], bool] | None = None,
    tile_px: int = DEFAULT_TILE_PX,
    xy_crs: Any = None,
    **plugin_config: Any,
) -> xr.Dataset:
    """Cloud-masked seasonal NDVI statistics of ``product`` over a region and time window,
    as a lazy dask-backed ``xr.Dataset``: the bands, dtypes, nodata and values that
    ``odc-ndvi run`` writes for the same data (``ndvi_<stat>[_<season>]`` float32 with NaN
    nodata, ``clear_count[_<season>]`` uint16 with 0 = no clear observation).

    It takes ``dc.load``'s keywords with ``dc.load``'s meaning, so the tutorial's
    ``dc.load(...)`` call becomes this one by its name; :data:`KEYWORDS` says what each
    means here and :data:`NOT_HONOURED` which ``dc.load`` keywords it refuses and why. Every
    other keyword is a ``plugin_config`` key (``preset``, ``statistics``, ``season_mode``,
    ``chunks``, ...), validated by the plugin itself; or, failing that, a search field of
    the product's metadata type. With ``season_mode="year"`` give at most 12 months of
    ``time``, starting in December for a contiguous DJF.

    ``season_mode="climatology"``: ``time`` is whole 12-month blocks starting on a season's
    first month (``"1993-12--P30Y"``); bands ``ndvi_mean_<s>``, ``ndvi_std_<s>``,
    ``clear_years_<s>``, ``clear_count_<s>`` (+ median/min/max of the block means).
    ``season_mode="anomaly"``: ``time`` is one season (``"2023-12--P3M"``) and
    ``baseline=`` a climatology: where a climatology run wrote (``file://``, ``s3://``: its
    tiles are read where the request needs them) or its ``xr.Dataset`` (e.g. this call's
    climatology result); the request must be on the climatology's pixel grid, inside it
    (``like=<the climatology>`` is the simple way). Bands ``ndvi_mean``, ``clear_count``,
    ``ndvi_anomaly``, ``ndvi_std_anomaly``, ``baseline_years``; ``min_baseline_years``
    (default 10) as in a batch run. ``plot_seasons(ds, statistic="std_anomaly")`` draws it.
    """
    for key in plugin_config:
        if key in NOT_HONOURED:
            raise ValueError(f"seasonal_ndvi does not take {key}=: {NOT_HONOURED[key]}")
    if group_by != "solar_day":
        raise ValueError(
            f"group_by: only 'solar_day' (got {group_by!r}): same-day scenes are always fused "
            "by the first clear value, as odc-stats tasks fuse them"
        )
    config_keys = NDVIConfig.keys()
    for key in plugin_config:
        # a typo nearest one of our keywords is ours to name; others are the plugin's error
        near = did_you_mean(key, (*_OUR_KEYWORDS, *config_keys))
        if key not in config_keys and near and near.split("'")[1] in _OUR_KEYWORDS:
            raise ValueError(f"seasonal_ndvi: unknown keyword {key!r}{near}")
    datasets = None if datasets is None else list(datasets)
    names = _product_names(product, datasets)
    products = _products(dc, names)
    fields = {f for p in products for f in p.metadata_type.dataset_fields}
    search = {k: v for k, v in plugin_config.items() if k not in config_keys and k in fields}
    if search and datasets is not None:
        raise ValueError(f"give datasets= or search terms ({', '.join(search)}=), not both")
    config = {k: v for k, v in plugin_config.items() if k not in search}
    config.update(_chunks_from(dask_chunks, config))
    anomaly = None
    if config.get("season_mode") == "anomaly":
        # the season's mean and count as in task mode; the anomaly against the baseline after
        config, anomaly = anomaly_request(config)
    plugin = NDVISeasonal(**config)  # validates: the plugin's own errors
    if resampling is not None:
        plugin = NDVISeasonal(**config, resampling=_ndvi_resampling(resampling, plugin))
    for p in products:
        plugin.validate_product(p)
    if anomaly is None:
        bands = _selected_bands(measurements, plugin)
    else:  # the anomaly needs the season's mean; measurements pick among the anomaly's bands
        bands = list(plugin.measurements)
        wanted = _selected_bands(measurements, plugin, outputs=anomaly.config.measurements)
    if time is None:
        time = _time_of(like)
    window = TimeWindow.parse(time)
    _check_window_for_seasons(plugin, window)
    season = None if anomaly is None else _window_season(anomaly.config.seasons, window)
    gbox = output_geobox(
        x=x, y=y, lon=lon, lat=lat, longitude=longitude, latitude=latitude, crs=crs,
        geopolygon=geopolygon, like=like, geobox=geobox, output_crs=output_crs,
        resolution=resolution, align=align, load_hints=_load_hints(products), xy_crs=xy_crs,
        _stacklevel=2,
    )  # fmt: skip
    if datasets is None:
        datasets = find_input_datasets(dc, products, gbox, window, plugin, **search)
    if dataset_predicate is not None:
        datasets = [ds for ds in datasets if dataset_predicate(ds)]
    plans = plan_tiles(datasets, gbox, window, tile_px)
    n_rows, n_cols = (max(p.index[i] for p in plans) + 1 for i in (0, 1))
    grid: list[list[xr.Dataset]] = [[None] * n_cols for _ in range(n_rows)]  # type: ignore[list-item]
    for plan in plans:
        row, col = plan.index
        grid[row][col] = _tile_result(plugin, plan)
    out = {}
    for band in bands:
        data = da.block([[cell[band].data for cell in row] for row in grid])
        attrs = dict(grid[0][0][band].attrs)
        out[band] = xr.DataArray(data, dims=("y", "x"), coords=xr_coords(gbox), attrs=attrs)
    attrs = {
        "products": ", ".join(names),
        "time_range": window.label,
        "season_mode": plugin.config.seasons.mode,
        "tile_px": tile_px,
        "tiles": len(plans),
        "datasets": len({ds.id for p in plans for ds in p.datasets}),
    }
    if anomaly is not None and season is not None:
        out = anomaly_bands(anomaly, season, xr.Dataset(out), gbox)
        out = {name: out[name] for name in wanted}
        attrs.update(season_mode="anomaly", season=season, baseline=anomaly.label)
    return xr.Dataset(out, attrs=attrs)


def _product_names(product: Any, datasets: list[Dataset] | None) -> list[str]:
    if product is None and datasets is not None:
        return sorted({ds.product.name for ds in datasets})
    names = [product] if isinstance(product, str) else list(product or ())
    if not names:
        raise ValueError("product: give a product name or a list of them (or datasets=)")
    return names


def _products(dc: Datacube, names: Sequence[str]) -> list[Product]:
    out = []
    for name in names:
        found = dc.index.products.get_by_name(name)
        if found is None:
            known = ", ".join(sorted(p.name for p in dc.index.products.get_all()))
            raise ValueError(f"product: {name!r} is not in this datacube; known: {known}")
        out.append(found)
    return out


def _load_hints(products: Sequence[Product]) -> dict[str, Any]:
    """The products' common default grid (their ``load`` sections), if they share one."""
    hints = [p.load_hints() for p in products]
    return dict(hints[0]) if hints and all(h == hints[0] for h in hints) else {}


def _chunks_from(dask_chunks: Mapping[str, Any] | None, config: Mapping[str, Any]) -> dict:
    """dc.load's ``dask_chunks`` as ``plugin_config.chunks`` (the reduction blocks)."""
    if dask_chunks is None:
        return {}
    if "chunks" in config:
        raise ValueError("give dask_chunks= or chunks= (the same blocks), not both")
    if not isinstance(dask_chunks, Mapping) or set(dask_chunks) - {"time", "x", "y"}:
        raise ValueError(
            f"dask_chunks: expected {{x: int, y: int}} (time ignored), got {dask_chunks!r}"
        )
    chunks = {ax: n for ax in ("y", "x") if (n := dask_chunks.get(ax, "auto")) != "auto"}
    return {"chunks": chunks} if chunks else {}


def _ndvi_resampling(resampling: str | Mapping[str, str], plugin: NDVISeasonal) -> str:
    """dc.load's resampling (a method, or band -> method with ``'*'`` for the rest) as the
    one method the NDVI band is warped with: the red and NIR bands' method."""
    if isinstance(resampling, str):
        return resampling
    cfg = plugin.config
    methods = {
        resampling.get(band, resampling.get("*", "nearest"))
        for band in (cfg.red_band, cfg.nir_band)
    }
    if len(methods) > 1:
        raise ValueError(
            f"resampling: {cfg.red_band} and {cfg.nir_band} need one method (NDVI is computed at "
            f"native resolution and warped once), got {sorted(methods)}"
        )
    return methods.pop()


def _selected_bands(
    measurements: str | Sequence[str] | None,
    plugin: NDVISeasonal,
    *,
    outputs: Sequence[str] | None = None,
) -> list[str]:
    """dc.load's ``measurements``: output bands (the plugin's, or ``outputs``), or the
    config's input bands (= all)."""
    outputs = list(plugin.measurements if outputs is None else outputs)
    if measurements is None:
        return outputs
    names = [measurements] if isinstance(measurements, str) else list(measurements)
    if names and all(n in outputs for n in names):
        return names
    if set(names) <= set(plugin.config.input_bands):
        return outputs
    wrong = [n for n in names if n not in outputs]
    raise ValueError(
        f"measurements: {', '.join(map(repr, wrong))} are not output bands "
        f"({', '.join(outputs)}) nor the bands the config reads "
        f"({', '.join(plugin.config.input_bands)}: set with red_band=, nir_band=, mask_band=)"
    )


def _time_of(like: Any) -> tuple[dt.datetime, dt.datetime]:
    """dc.load's default time for ``like=``: the time range of its ``time`` coordinate."""
    times = getattr(like, "coords", {}).get("time") if like is not None else None
    if times is None or times.size == 0:
        raise ValueError(
            "time: give a window, e.g. ('2019-12-01', '2020-11-30') or '2019-12--P12M'"
        )
    values = pd.to_datetime(np.asarray(times.values).ravel())
    return values.min().to_pydatetime(), values.max().to_pydatetime()


def _tile_result(plugin: NDVISeasonal, plan: TilePlan) -> xr.Dataset:
    """What the runner computes for a task: ``reduce(input_data(datasets, geobox))``."""
    return plugin.reduce(
        plugin.input_data(
            plan.datasets,
            plan.geobox,
            transform_code=plugin.transform_code,
            area_of_interest=plugin.area_of_interest,
        )
    )
