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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from datacube.model import Dataset
from datacube.utils.dates import normalise_dt
from odc.geo import geom
from odc.geo.geobox import GeoBox, GeoboxTiles
from odc.geo.xr import xr_coords

from ._anomaly_api import anomaly_bands, anomaly_request
from .load import MAX_LOAD_BLOCK_PX, group_by_solar_day
from .plugin import NDVISeasonal
from .seasons import Seasons, period_problem

if TYPE_CHECKING:
    from datacube import Datacube

__all__ = [
    "DEFAULT_TILE_PX",
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


# ----------------------------------------------------------------------------- space


def output_geobox(
    *,
    x: tuple[float, float] | None = None,
    y: tuple[float, float] | None = None,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    like: Any = None,
    geobox: GeoBox | None = None,
    xy_crs: Any = "EPSG:4326",
) -> GeoBox:
    """The output grid: ``geobox``, or ``like``'s grid (a GeoBox or anything with
    ``.odc.geobox``), or the ``x``/``y`` box (longitude/latitude unless ``xy_crs`` says
    otherwise) in ``crs`` at ``resolution`` (metres; a number, or ``(y, x)`` as ``dc.load``
    takes it), with pixel edges on multiples of the resolution as ``dc.load`` and the
    odc-stats grids place them."""
    given = [name for name, v in (("geobox", geobox), ("like", like)) if v is not None]
    if len(given) > 1 or (given and (x is not None or y is not None)):
        raise ValueError("give one of geobox=, like= or x=/y= (with crs= and resolution=)")
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
    if x is None or y is None or crs is None or resolution is None:
        raise ValueError("give x=, y=, crs= and resolution= (or geobox= / like=)")
    (x0, x1), (y0, y1) = sorted(map(float, x)), sorted(map(float, y))
    if geom.CRS(xy_crs).geographic and not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise ValueError(
            f"x={x}, y={y} are not longitude/latitude; for x/y in another CRS give xy_crs= "
            "(e.g. xy_crs=crs for metres of the output CRS)"
        )
    box = geom.box(x0, y0, x1, y1, xy_crs).to_crs(crs)
    if isinstance(resolution, (int, float)):
        res_y, res_x = -abs(float(resolution)), abs(float(resolution))
    else:
        res_y, res_x = map(float, resolution)
    from odc.geo import resxy_

    return GeoBox.from_bbox(box.boundingbox, crs, resolution=resxy_(res_x, res_y))


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
    products: str | Sequence[str],
    geobox: GeoBox,
    window: TimeWindow,
    plugin: NDVISeasonal,
) -> list[Dataset]:
    """Datasets of ``products`` over ``geobox`` in the padded window (each product first
    checked against the plugin config: a missing band or flag is the plugin's error)."""
    names = [products] if isinstance(products, str) else list(products)
    if not names:
        raise ValueError("product: give a product name or a list of them")
    out: list[Dataset] = []
    for name in names:
        product = dc.index.products.get_by_name(name)
        if product is None:
            known = ", ".join(sorted(p.name for p in dc.index.products.get_all()))
            raise ValueError(f"product: {name!r} is not in this datacube; known: {known}")
        plugin.validate_product(product)
        out += dc.find_datasets(product=name, time=window.query(), geopolygon=geobox.extent)
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
    product: str | Sequence[str],
    time: Any,
    x: tuple[float, float] | None = None,
    y: tuple[float, float] | None = None,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    like: Any = None,
    geobox: GeoBox | None = None,
    xy_crs: Any = "EPSG:4326",
    tile_px: int = DEFAULT_TILE_PX,
    **plugin_config: Any,
) -> xr.Dataset:
    """Cloud-masked seasonal NDVI statistics of ``product`` (a name or a list) over a
    region and time window, as a lazy dask-backed ``xr.Dataset``: the bands, dtypes, nodata
    and values that ``odc-ndvi run`` writes for the same data (``ndvi_<stat>[_<season>]``
    float32 with NaN nodata, ``clear_count[_<season>]`` uint16 with 0 = no clear
    observation).

    ``time``: ``"2019-12--P12M"`` (odc-stats period), ``"2020"``, or ``(start, end)``;
    compared with each scene's *solar* date, as odc-stats tasks are. With
    ``season_mode="year"`` give at most 12 months, starting in December for a contiguous DJF.
    Region: ``x``/``y`` (longitude/latitude, or in ``xy_crs``) with ``crs`` (output CRS) and
    ``resolution``; or ``like=`` / ``geobox=``. ``tile_px``: side of the tiles the region
    is computed in (each is one odc-stats task's worth of work). Every other keyword is a
    ``plugin_config`` key (``preset``, ``statistics``, ``season_mode``, ``chunks``, ...),
    validated by the plugin itself.

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
    anomaly = None
    if plugin_config.get("season_mode") == "anomaly":
        # the season's mean and count as in task mode; the anomaly against the baseline after
        plugin_config, anomaly = anomaly_request(plugin_config)
    plugin = NDVISeasonal(**plugin_config)  # validates: the plugin's own errors
    window = TimeWindow.parse(time)
    _check_window_for_seasons(plugin, window)
    season = None if anomaly is None else _window_season(anomaly.config.seasons, window)
    gbox = output_geobox(
        x=x, y=y, crs=crs, resolution=resolution, like=like, geobox=geobox, xy_crs=xy_crs
    )
    datasets = find_input_datasets(dc, product, gbox, window, plugin)
    plans = plan_tiles(datasets, gbox, window, tile_px)
    n_rows, n_cols = (max(p.index[i] for p in plans) + 1 for i in (0, 1))
    grid: list[list[xr.Dataset]] = [[None] * n_cols for _ in range(n_rows)]  # type: ignore[list-item]
    for plan in plans:
        row, col = plan.index
        grid[row][col] = _tile_result(plugin, plan)
    bands = {}
    for band in plugin.config.output_bands:
        data = da.block([[cell[band.name].data for cell in row] for row in grid])
        attrs = dict(grid[0][0][band.name].attrs)
        bands[band.name] = xr.DataArray(data, dims=("y", "x"), coords=xr_coords(gbox), attrs=attrs)
    names = [product] if isinstance(product, str) else list(product)
    attrs = {
        "products": ", ".join(names),
        "time_range": window.label,
        "season_mode": plugin.config.seasons.mode,
        "tile_px": tile_px,
        "tiles": len(plans),
        "datasets": len({ds.id for p in plans for ds in p.datasets}),
    }
    if anomaly is not None and season is not None:
        bands = anomaly_bands(anomaly, season, xr.Dataset(bands), gbox)
        attrs.update(season_mode="anomaly", season=season, baseline=anomaly.label)
    return xr.Dataset(bands, attrs=attrs)


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
