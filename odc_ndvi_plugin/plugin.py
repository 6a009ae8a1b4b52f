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
from datacube.utils.dates import normalise_dt
from odc.geo.geobox import GeoBox
from odc.stats.plugins._base import StatsPluginInterface
from odc.stats.plugins._registry import register

from ._version import __version__
from .cogs import encode_cogs_on_workers
from .config import NDVIConfig
from .inputs import product_inputs
from .load import group_by_solar_day, load_ndvi_direct
from .masking import bad_pixel_filter, filter_reach
from .ndvi import NDVIInputs, ndvi_from_bands
from .reduce import STREAMABLE, reduce_block, stream_reduce

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
        )

    def native_transform(self, xx: xr.Dataset) -> xr.Dataset:
        """odc-stats loader path: the three native bands -> one float32 NDVI band."""
        cfg = self.config
        inputs = next(iter(self._inputs.values()))
        pad = filter_reach(cfg.mask_filters)
        bad_filter = bad_pixel_filter(cfg.mask_filters)

        def _ndvi(red: np.ndarray, nir: np.ndarray, mask: np.ndarray) -> np.ndarray:
            if red.ndim == 3:
                return np.stack(
                    [
                        ndvi_from_bands(r, n, m, inputs, bad_filter=bad_filter)
                        for r, n, m in zip(red, nir, mask, strict=True)
                    ]
                )
            return ndvi_from_bands(red, nir, mask, inputs, bad_filter=bad_filter)

        red, nir, mask = (xx[b] for b in cfg.input_bands)
        depth = {red.dims.index("y"): pad, red.dims.index("x"): pad} if pad else 0
        data = da.map_overlap(
            _ndvi, red.data, nir.data, mask.data, depth=depth, boundary="none", dtype=np.float32
        )
        ndvi = xr.DataArray(data, dims=red.dims, coords=red.coords, attrs={"nodata": np.nan})
        return xr.Dataset({"ndvi": ndvi}, attrs=xx.attrs)

    def _input_data_odc_stats(
        self, datasets: Sequence[Dataset], geobox: GeoBox, **kwargs: Any
    ) -> xr.Dataset:
        if len({self.ndvi_inputs(ds.product) for ds in datasets}) > 1:
            raise ValueError(
                "plugin_config.loader: 'odc-stats' applies one product's band encoding and flags "
                "to every dataset, but this task mixes products that differ; use loader: direct"
            )
        kwargs = {k: v for k, v in kwargs.items() if k not in ("XSCALE", "YSCALE")}
        # odc-stats 1.9.7 cannot fuse loads of several CRSs (io.py concatenates them along
        # `Dataset.dims[0]`, a KeyError for any plugin; its upstream fix, PR #235, looks
        # up an input band in the output, which ours does not keep): load each CRS on its
        # own and fuse the solar days here, by the same rule as the direct loader
        by_crs: dict[str, list[Dataset]] = {}
        for ds in datasets:
            by_crs.setdefault(str(ds.crs), []).append(ds)
        parts = [self._odc_stats_ndvi(group, geobox, **kwargs) for group in by_crs.values()]
        if len(parts) == 1:
            return xr.Dataset({"ndvi": parts[0]})
        return xr.Dataset({"ndvi": _fuse_first_clear(parts, list(by_crs.values()), geobox)})

    def _odc_stats_ndvi(
        self, datasets: Sequence[Dataset], geobox: GeoBox, **kwargs: Any
    ) -> xr.DataArray:
        """odc-stats' own load of datasets in one CRS -> ``ndvi (spec, y, x)``, one per solar
        day, with the solar date as the ``time`` coordinate."""
        xx = super().input_data(datasets, geobox, **kwargs)
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
        kwargs = dict(
            group_index=groups,
            n_groups=len(cfg.seasons.groups),
            statistics=cfg.statistics,
            min_clear=cfg.min_clear,
        )
        chunks = (cfg.chunks["y"], cfg.chunks["x"])
        if STREAMABLE.issuperset(cfg.statistics):
            planes = stream_reduce(data, chunks=chunks, **kwargs)
        else:
            data = data.rechunk({1: chunks[0], 2: chunks[1]})  # time blocks as they are
            # blockwise with the time index contracted and concatenate=False: the kernel
            # gets each spatial block's observations as a list (the stack is not copied)
            stack = da.blockwise(
                reduce_block,
                "byx",
                data,
                "tyx",
                new_axes={"b": len(bands)},
                concatenate=False,
                dtype=np.float32,
                **kwargs,
            )
            planes = [stack[i] for i in range(len(bands))]
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
