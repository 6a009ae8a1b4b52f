"""Reading a climatology tile for an anomaly task: found by its STAC item, read per chunk.

``plugin_config.baseline`` is where a climatology run wrote (its ``--location``). Its
STAC items (``*.stac-item.json``, as odc-stats writes them) are listed once per plugin
instance, through the same readers as ``odc-ndvi mosaic`` (``file://`` or ``s3://`` with
the process' credentials, as for inputs); no datacube query, nothing inside ``reduce``
but lazy window reads. The baseline tile of a task is the item whose grid
(``proj:epsg``/``proj:code``, ``proj:transform``, ``proj:shape``) equals the task's:

* exactly one -> its ``ndvi_mean_<s>``, ``ndvi_std_<s>`` and ``clear_years_<s>`` COGs are
  read window by window on the workers (same grid: a chunk is a plain window);
* several -> :class:`BaselineError` naming them;
* none, but items overlapping the tile on another grid -> :class:`BaselineError` (refused);
* none at all -> :class:`BaselineMissingError` naming the tile and the location ("run the
  climatology first"): not transient, so ``odc-ndvi run`` does not retry it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from odc.geo.geobox import GeoBox

from .storage import as_url, path_or_url, store_for

__all__ = [
    "BASELINE_ATTR",
    "BaselineError",
    "BaselineIndex",
    "BaselineMissingError",
    "BaselineTile",
    "baseline_bands",
    "failing_plane",
]

#: key of the reduced Dataset's attrs naming the baseline item ({"id", "href"}); the STAC
#: item of the task gets it as a link and a property (cogs.add_baseline_lineage)
BASELINE_ATTR = "odc_ndvi:baseline"


class BaselineError(ValueError):
    """The baseline of a tile cannot be used (one line: the tile, the items, the problem)."""


class BaselineMissingError(BaselineError):
    """No baseline item for a tile under the baseline location (not transient)."""


@dataclass(frozen=True)
class BaselineTile:
    """The climatology item of one tile: its id, URL and band files."""

    item_id: str
    href: str
    assets: Mapping[str, str]


def _tile_text(geobox: GeoBox) -> str:
    bb = geobox.extent.boundingbox
    crs = f"EPSG:{geobox.crs.epsg}" if geobox.crs.epsg else str(geobox.crs)
    return (
        f"tile {geobox.shape.x}x{geobox.shape.y} px at ({bb.left:.0f}, {bb.bottom:.0f}, "
        f"{bb.right:.0f}, {bb.top:.0f}) {crs}"
    )


def _same_grid(a: GeoBox, b: GeoBox) -> bool:
    if tuple(a.shape) != tuple(b.shape) or a.crs != b.crs:
        return False
    return bool(np.allclose(tuple(a.affine)[:6], tuple(b.affine)[:6], rtol=0, atol=1e-6))


class BaselineIndex:
    """The climatology items under one location, listed on first use and kept."""

    def __init__(self, location: str):
        self.location = location
        self._items: list[tuple[str, dict[str, Any], GeoBox]] | None = None
        self._lock = threading.Lock()

    def _listing(self) -> list[tuple[str, dict[str, Any], GeoBox]]:
        with self._lock:
            if self._items is None:
                self._items = _list_items(self.location)
            return self._items

    def find(self, geobox: GeoBox) -> BaselineTile:
        """The one item on ``geobox``'s grid (errors: see the module docstring)."""
        items = self._listing()
        same = [(url, doc) for url, doc, grid in items if _same_grid(grid, geobox)]
        if len(same) == 1:
            url, doc = same[0]
            from .mosaic import TaskOutput

            out = TaskOutput.from_item(url, doc)
            return BaselineTile(str(doc.get("id", "")), url, dict(out.assets))
        if len(same) > 1:
            raise BaselineError(
                f"baseline: {len(same)} items under {self.location} are on the grid of "
                f"{_tile_text(geobox)}: {', '.join(url for url, _ in same)}; keep one "
                "climatology per location"
            )
        overlapping = [url for url, _, grid in items if _overlaps(grid, geobox)]
        if overlapping:
            raise BaselineError(
                f"baseline: {_tile_text(geobox)} is not on the grid of the baseline items that "
                f"overlap it ({', '.join(overlapping[:3])}{' ...' if len(overlapping) > 3 else ''}); "
                "the climatology must be run on the anomaly's grid"
            )
        raise BaselineMissingError(
            f"baseline: no climatology item for {_tile_text(geobox)} under {self.location} "
            f"({len(items)} items there); run the climatology first"
        )


def _overlaps(grid: GeoBox, geobox: GeoBox) -> bool:
    try:
        other = grid.extent.to_crs(geobox.crs)
    except Exception:  # noqa: BLE001 - an item we cannot project is not this tile's
        return False
    return other.intersection(geobox.extent).area > 0


def _list_items(location: str) -> list[tuple[str, dict[str, Any], GeoBox]]:
    from affine import Affine

    from .mosaic import read_json, stac_item_urls

    out = []
    store = store_for(as_url(location))
    try:
        urls = list(stac_item_urls(location, store=store))
    except ValueError as err:
        raise BaselineMissingError(
            f"baseline: cannot list {location} ({err}); run the climatology first"
        ) from err
    for url in urls:
        doc = read_json(url, store=store)
        props = doc.get("properties", {})
        try:
            crs = props["proj:code"] if "proj:code" in props else f"EPSG:{props['proj:epsg']}"
            grid = GeoBox(tuple(props["proj:shape"]), Affine(*props["proj:transform"][:6]), crs)
        except (KeyError, TypeError, ValueError):
            continue  # not an odc-stats output item
        out.append((url, doc, grid))
    return out


@dataclass(frozen=True)
class _RasterWindows:
    """A single-band COG as a lazy 2-D array: ``[rows, cols]`` reads that window (on the
    worker, under the process' S3/GDAL settings and the plugin's ``read_env``)."""

    url: str
    shape: tuple[int, int]
    dtype: np.dtype
    read_env: tuple[tuple[str, str], ...] = ()

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        import rasterio
        from datacube.utils.rio import activate_from_config
        from rasterio.windows import Window

        rows, cols = key
        activate_from_config()
        path = path_or_url(self.url)
        window = Window.from_slices(rows, cols, height=self.shape[0], width=self.shape[1])
        try:
            with rasterio.Env(**dict(self.read_env)), rasterio.open(path) as src:
                if (src.height, src.width) != self.shape:
                    raise BaselineError(
                        f"baseline: {self.url} is {src.width}x{src.height} px, its STAC item "
                        f"says {self.shape[1]}x{self.shape[0]}"
                    )
                return src.read(1, window=window).astype(self.dtype, copy=False)
        except rasterio.errors.RasterioIOError as err:
            # GDAL's words in the text; no rasterio cause, which does not survive the trip
            # from a worker (the client would get a bare Exception)
            raise BaselineError(f"baseline: cannot read {self.url}: {err}") from None


def baseline_bands(
    tile: BaselineTile,
    season: str,
    *,
    shape: tuple[int, int],
    chunks: tuple[tuple[int, ...], tuple[int, ...]],
    read_env: tuple[tuple[str, str], ...] = (),
) -> dict[str, da.Array]:
    """``mean``, ``std`` (float32) and ``years`` (uint16) of ``season`` from the baseline
    tile, as lazy arrays in ``chunks`` (the anomaly planes' chunks)."""
    wanted = {
        "mean": (f"ndvi_mean_{season}", np.float32),
        "std": (f"ndvi_std_{season}", np.float32),
        "years": (f"clear_years_{season}", np.uint16),
    }
    out = {}
    for key, (band, dtype) in wanted.items():
        url = tile.assets.get(band)
        if url is None:
            raise BaselineError(
                f"baseline: item {tile.href} has no band {band!r} (its bands: "
                f"{', '.join(sorted(tile.assets))}); is it a climatology with season {season!r}?"
            )
        source = _RasterWindows(url, tuple(shape), np.dtype(dtype), tuple(read_env))
        name = f"baseline-{key}-{dask.base.tokenize(url, shape, chunks)}"
        out[key] = da.from_array(source, chunks=chunks, name=name, lock=False, asarray=True)
    return out


def _raise(err: Exception) -> None:
    raise err


def failing_plane(err: Exception, shape: tuple[int, int], dtype: Any) -> da.Array:
    """A ``shape`` array whose computation raises ``err``: a task that cannot run fails when
    computed, not while odc-stats builds graphs (which would end the whole run), and
    without loading its inputs."""
    task = dask.delayed(_raise, pure=True)(err)
    return da.from_delayed(task, shape=shape, dtype=dtype)
