"""``NDVISeasonal``: the odc-stats plugin, glue between the config and the rooms.

config -> ``measurements``; datasets -> ``input_data`` (load/: a ``(spec, y, x)`` NDVI
stack with a solar-date ``time`` coordinate); stack -> ``reduce`` (seasons.py groups,
reduce/: kernels + streaming graph); result -> ``rgba`` preview (preview.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from datacube.model import Dataset, Product
from odc.geo.geobox import GeoBox

from ._compat import (
    StatsPluginInterface,
    encode_cogs_on_workers,
    name_baselines_in_stac_items,
    register,
)
from ._version import __version__
from .baseline import (
    BASELINE_ATTR,
    BaselineIndex,
    BaselineTile,
    baseline_bands,
    failing_plane,
)
from .config import NDVIConfig
from .inputs import product_inputs
from .load import load_by_crs, load_ndvi_direct, native_ndvi
from .ndvi import NDVIInputs
from .reduce import anomaly_block, seasonal_planes
from .seasons import period_problem

__all__ = ["NDVISeasonal"]


class NDVISeasonal(StatsPluginInterface):
    """Cloud-masked seasonal NDVI statistics (``plugin_config`` keys: ``NDVIConfig``, and the
    guide's reference, docs/reference/plugin-config.md)."""

    NAME = "ndvi_seasonal"
    SHORT_NAME = "ndvi_seasonal"
    VERSION = __version__
    PRODUCT_FAMILY = "ndvi"

    def __init__(self, **plugin_config: Any):
        self.config = NDVIConfig.from_plugin_config(plugin_config)
        cfg = self.config
        super().__init__(
            resampling=cfg.resampling,
            input_bands=list(cfg.input_bands),
            chunks=dict(cfg.chunks),
            basis=cfg.red_band,
            group_by="solar_day",
            measurements=cfg.measurements,
        )
        self._inputs: dict[str, NDVIInputs] = {}
        self._baseline_index: BaselineIndex | None = None  # anomaly: listed once

    # -- a run starting -------------------------------------------------------------
    def run_starting(self) -> None:
        """A run with this plugin starts: odc-stats' COG sink encodes bands on the workers
        and, in anomaly mode, names the baseline in each STAC item (patches applied once
        per process, see :mod:`._compat`). Making a plugin (a notebook, ``check-config``)
        does not patch odc-stats; ``odc-ndvi run`` calls this, plain ``odc-stats run``
        reaches it through :attr:`dask_worker_plugin`."""
        encode_cogs_on_workers()
        cfg = self.config
        if cfg.seasons.mode == "anomaly" or cfg.on_bad_input == "skip":
            if not name_baselines_in_stac_items() and cfg.on_bad_input == "skip":
                # the skipped inputs would go unlisted: refuse rather than lose them
                raise RuntimeError(
                    "plugin_config.on_bad_input: skip lists skipped inputs in the STAC item "
                    "through odc-stats 1.9's writer, which this odc-stats does not have"
                )

    @property
    def dask_worker_plugin(self) -> Any:
        """What the run's dask workers need from the plugin: their memory kept to what is
        alive (:class:`~._memory.MemoryHygiene`), unless another worker plugin was set.
        odc-stats' runner asks when it starts its cluster, i.e. when a plain ``odc-stats
        run`` starts: the run is starting (:meth:`run_starting`)."""
        self.run_starting()
        if self._dask_worker_plugin is None:
            from ._memory import MemoryHygiene  # distributed: only when a run starts

            return MemoryHygiene()
        return self._dask_worker_plugin

    @dask_worker_plugin.setter
    def dask_worker_plugin(self, value: Any) -> None:
        self._dask_worker_plugin = value

    # -- products -------------------------------------------------------------------
    def ndvi_inputs(self, product: Product) -> NDVIInputs:
        """Band names (through aliases), encodings and clear rule for ``product``; errors
        name the key, the product and what would be valid (see :mod:`.inputs`).

        This is where ``good_pixel_flags`` meets the mask band's real flags_definition."""
        cached = self._inputs.get(product.name)
        if cached is None:
            cached = self._inputs[product.name] = product_inputs(
                product.name, product.measurements, self.config
            )
        return cached

    def validate_product(self, product: Product) -> None:
        """Fail early (before any task runs) if this config cannot read ``product``."""
        self.ndvi_inputs(product)

    # -- loading --------------------------------------------------------------------
    def input_data(self, datasets: Sequence[Dataset], geobox: GeoBox, **kwargs: Any) -> xr.Dataset:
        cfg = self.config
        for ds in datasets:
            self.ndvi_inputs(ds.product)
        if cfg.loader == "odc-stats" and datasets:
            return self._input_data_odc_stats(datasets, geobox, **kwargs)
        return load_ndvi_direct(
            datasets,
            geobox,
            inputs_for=lambda ds: self.ndvi_inputs(ds.product),
            resampling=cfg.resampling,
            mask_filters=cfg.mask_filters,
            read_env=cfg.read_env,
            on_bad_input=cfg.on_bad_input,
        )

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        """odc-stats loader path: the three native bands -> one float32 NDVI band."""
        cfg = self.config
        inputs = next(iter(self._inputs.values()))
        return native_ndvi(xx, cfg.input_bands, inputs, cfg.mask_filters)

    def _input_data_odc_stats(
        self, datasets: Sequence[Dataset], geobox: GeoBox, **kwargs: Any
    ) -> xr.Dataset:
        if len({self.ndvi_inputs(ds.product) for ds in datasets}) > 1:
            raise ValueError(
                "plugin_config.loader: 'odc-stats' applies one product's band encoding and flags "
                "to every dataset, but this task mixes products that differ; use loader: direct"
            )
        kwargs = {k: v for k, v in kwargs.items() if k not in ("XSCALE", "YSCALE")}
        load = super().input_data
        return load_by_crs(lambda group: load(group, geobox, **kwargs), datasets, geobox)

    def period_problem(self, period: str) -> str | None:
        """Why an odc-stats task period (e.g. ``1993-12--P360M``) does not suit this
        config's ``season_mode`` (climatology: whole blocks from a season's first month;
        anomaly: one season), or None. The plugin itself never sees the period: runners
        that know it ask here (``odc-ndvi run``)."""
        import re

        from odc.stats.model import DateTimeRange

        rng = DateTimeRange(period)
        start, end = rng.start, rng.end
        # odc-stats counts a 'PnY' period in days (2014-12--P6Y ends on 2020-11-29): judge
        # the period the user asked for, n whole years
        years = re.fullmatch(r"(\d+)Y", str(rng.freq))
        if years and start.day == 1:
            months = start.year * 12 + start.month - 1 + 12 * int(years.group(1))
            end = datetime(months // 12, months % 12 + 1, 1) - timedelta(microseconds=1)
        return period_problem(self.config.seasons, start, end)

    # -- reduction ------------------------------------------------------------------
    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        """``ndvi (spec, y, x)`` -> one band per (season, statistic), see ``measurements``."""
        cfg = self.config
        mode = cfg.seasons.mode
        ndvi = xx["ndvi"]
        (tdim,) = (d for d in ndvi.dims if d not in ("y", "x"))
        ndvi = ndvi.transpose(tdim, "y", "x")
        times = ndvi["time"].values if "time" in ndvi.coords else ndvi[tdim].values
        coords = {k: v for k, v in ndvi.coords.items() if tdim not in v.dims}
        bands = cfg.output_bands
        attrs = dict(xx.attrs)
        try:
            baseline = self._anomaly_baseline(ndvi, times) if mode == "anomaly" else None
        except ValueError as err:  # this task cannot be computed: it fails when run
            shape = ndvi.shape[1:]
            planes = [failing_plane(err, shape, np.float32) for _ in bands]
            return self._bands_dataset(planes, coords, attrs)
        data = (
            ndvi.data
            if isinstance(ndvi.data, da.Array)
            else da.from_array(ndvi.data, chunks=(-1, -1, -1))
        )
        climatology = mode == "climatology"
        planes = seasonal_planes(
            data,
            chunks=(cfg.chunks["y"], cfg.chunks["x"]),
            group_index=cfg.seasons.season_of(times)
            if climatology
            else cfg.seasons.group_index(times),
            n_groups=len(cfg.seasons.groups),
            statistics=("mean", "count") if baseline else cfg.band_statistics,
            min_clear=cfg.min_clear,
            blocks=cfg.seasons.instance_index(times) if climatology else None,
        )
        if baseline is not None:
            tile, base = baseline
            planes = [*planes, *self._anomaly_planes(planes[0], base)]
            attrs[BASELINE_ATTR] = {"id": tile.item_id, "href": tile.href}
        return self._bands_dataset(planes, coords, attrs)

    def _bands_dataset(self, planes: list[da.Array], coords: dict, attrs: dict) -> xr.Dataset:
        out = {}
        for band, plane in zip(self.config.output_bands, planes, strict=True):
            if plane.dtype != np.dtype(band.dtype):
                plane = plane.astype(band.dtype)
            out[band.name] = xr.DataArray(
                plane, dims=("y", "x"), coords=coords, attrs={"nodata": band.nodata, "units": "1"}
            )
        return xr.Dataset(out, attrs=attrs)

    def _anomaly_baseline(
        self, ndvi: xr.DataArray, times: np.ndarray
    ) -> tuple[BaselineTile, dict[str, da.Array]]:
        """The task's season (from its observations) and its baseline tile's bands; a
        ``ValueError`` (one line) when either cannot be had."""
        cfg = self.config
        season = cfg.seasons.season_named(times)
        geobox = ndvi.odc.geobox
        if self._baseline_index is None:
            self._baseline_index = BaselineIndex(str(cfg.baseline))
        tile = self._baseline_index.find(geobox)
        shape = tuple(ndvi.shape[1:])
        ys = _block_sizes(shape[0], cfg.chunks["y"])
        xs = _block_sizes(shape[1], cfg.chunks["x"])
        base = baseline_bands(tile, season, shape=shape, chunks=(ys, xs), read_env=cfg.read_env)
        return tile, base

    def _anomaly_planes(self, mean: da.Array, base: dict[str, da.Array]) -> list[da.Array]:
        mean = mean.rechunk(base["mean"].chunks)
        stack = da.map_blocks(
            anomaly_block,
            mean,
            base["mean"],
            base["std"],
            base["years"],
            min_baseline_years=self.config.min_baseline_years,
            new_axis=0,
            chunks=((3,), *base["mean"].chunks),
            dtype=np.float32,
        )
        return [stack[i] for i in range(3)]

    def rgba(self, xx: xr.Dataset) -> xr.DataArray | None:
        """Colour-mapped NDVI preview (written as ``rgba`` when cog_opts.overrides has it)."""
        from .preview import ndvi_rgba

        band = self.config.preview_band or next(
            (b.name for b in self.config.output_bands if b.statistic != "count"), None
        )
        if band is None:
            return None
        return ndvi_rgba(xx[band])


def _block_sizes(size: int, step: int) -> tuple[int, ...]:
    step = size if step == -1 else max(1, step)
    return tuple(min(step, size - a) for a in range(0, size, step))


# the short name for odc-stats (`plugin: ndvi-seasonal`), once this module is imported
register("ndvi-seasonal", NDVISeasonal)
