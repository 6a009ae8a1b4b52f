"""``NDVISeasonal``: the odc-stats plugin, glue between the config and the rooms.

config -> ``measurements``; datasets -> ``input_data`` (load/: a ``(spec, y, x)`` NDVI
stack with a solar-date ``time`` coordinate); stack -> ``reduce`` (seasons.py groups,
reduce/: kernels + streaming graph); result -> ``rgba`` preview (preview.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from datacube.model import Dataset, Product
from odc.geo.geobox import GeoBox
from odc.stats.plugins._base import StatsPluginInterface
from odc.stats.plugins._registry import register

from ._version import __version__
from .cogs import encode_cogs_on_workers
from .config import NDVIConfig
from .inputs import product_inputs
from .load import load_ndvi_direct
from .load._odc_stats import load_by_crs, native_ndvi
from .ndvi import NDVIInputs
from .reduce import seasonal_planes

__all__ = ["NDVISeasonal"]


class NDVISeasonal(StatsPluginInterface):
    """Cloud-masked seasonal NDVI statistics (see README for ``plugin_config`` keys)."""

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
        # plain odc-stats run: bands encoded on the workers, no data inside the graph
        encode_cogs_on_workers()

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

    # -- reduction ------------------------------------------------------------------
    def reduce(self, xx: xr.Dataset) -> xr.Dataset:
        """``ndvi (spec, y, x)`` -> one band per (season, statistic), see ``measurements``."""
        cfg = self.config
        ndvi = xx["ndvi"]
        (tdim,) = (d for d in ndvi.dims if d not in ("y", "x"))
        ndvi = ndvi.transpose(tdim, "y", "x")
        times = ndvi["time"].values if "time" in ndvi.coords else ndvi[tdim].values
        groups = cfg.seasons.group_index(times)
        bands = cfg.output_bands
        data = (
            ndvi.data
            if isinstance(ndvi.data, da.Array)
            else da.from_array(ndvi.data, chunks=(-1, -1, -1))
        )
        planes = seasonal_planes(
            data,
            chunks=(cfg.chunks["y"], cfg.chunks["x"]),
            group_index=groups,
            n_groups=len(cfg.seasons.groups),
            statistics=cfg.statistics,
            min_clear=cfg.min_clear,
        )
        coords = {k: v for k, v in ndvi.coords.items() if tdim not in v.dims}
        out = {}
        for band, plane in zip(bands, planes, strict=True):
            if plane.dtype != np.dtype(band.dtype):
                plane = plane.astype(band.dtype)
            out[band.name] = xr.DataArray(
                plane, dims=("y", "x"), coords=coords, attrs={"nodata": band.nodata, "units": "1"}
            )
        return xr.Dataset(out, attrs=xx.attrs)

    def rgba(self, xx: xr.Dataset) -> xr.DataArray | None:
        """Colour-mapped NDVI preview (written as ``rgba`` when cog_opts.overrides has it)."""
        from .preview import ndvi_rgba

        band = self.config.preview_band or next(
            (b.name for b in self.config.output_bands if b.statistic != "count"), None
        )
        if band is None:
            return None
        return ndvi_rgba(xx[band])


# the short name for odc-stats (`plugin: ndvi-seasonal`), once this module is imported
register("ndvi-seasonal", NDVISeasonal)
