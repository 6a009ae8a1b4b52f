"""Anomalies in a notebook: ``seasonal_ndvi(..., season_mode="anomaly", baseline=...)``.

The season's ``ndvi_mean`` and ``clear_count`` are computed tile by tile as in task mode
(what the plugin computes for an anomaly task); the baseline's ``ndvi_mean_<s>``,
``ndvi_std_<s>`` and ``clear_years_<s>`` are put on the request's grid and the anomaly
bands come from the plugin's own kernel (:func:`~odc_ndvi_plugin.reduce.anomaly_block`),
block by block, lazily. The baseline is

* a location (``file://``, a path, ``s3://``): where a climatology run wrote; its STAC
  items are listed now (metadata only) and each output tile reads the windows it needs
  when computed. A batch anomaly task needs its tile's grid to equal a baseline tile's; a
  notebook request is cut into its own tiles, so here any request on the baseline's
  *pixel grid* (same CRS and resolution, whole-pixel offsets) inside its tiles will do;
* an ``xr.Dataset``: a climatology in memory (``seasonal_ndvi(..., season_mode=
  "climatology")``, or read back), on the same pixel grid and covering the request.

Anything else (no item, a band missing, another grid, part of the request uncovered) is a
``ValueError`` naming the baseline and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from .config import NDVIConfig
from .reduce import anomaly_block

__all__ = ["AnomalyRequest", "anomaly_bands", "anomaly_request"]

#: stand-in location that lets an in-memory baseline's config be validated like a batch
#: config (the location is never read)
_IN_MEMORY = "file:///in-memory-baseline"


@dataclass(frozen=True)
class AnomalyRequest:
    """A validated anomaly request."""

    #: the anomaly config, validated as ``odc-ndvi run`` would (bands, min_baseline_years)
    config: NDVIConfig
    #: the climatology: its output location, or the Dataset itself
    baseline: str | xr.Dataset

    @property
    def label(self) -> str:
        return self.baseline if isinstance(self.baseline, str) else "in-memory xr.Dataset"


def anomaly_request(plugin_config: Mapping[str, Any]) -> tuple[dict[str, Any], AnomalyRequest]:
    """``plugin_config`` of an anomaly -> (the task-mode config that computes the season's
    mean and count, the validated request)."""
    cfg = dict(plugin_config)
    baseline = cfg.pop("baseline", None)
    if isinstance(baseline, os.PathLike):
        baseline = os.fspath(baseline)
    if baseline is None or not isinstance(baseline, (str, xr.Dataset)):
        raise ValueError(
            "baseline: season_mode 'anomaly' needs baseline=, where a climatology run wrote "
            "(file://..., s3://...) or a climatology xr.Dataset (seasonal_ndvi(..., "
            f"season_mode='climatology')); got {type(baseline).__name__}"
        )
    location = baseline if isinstance(baseline, str) else _IN_MEMORY
    config = NDVIConfig.from_plugin_config({**cfg, "baseline": location})
    # the anomaly's own keys (checked above) mean nothing to the task-mode computation
    compute = {k: v for k, v in cfg.items() if k not in ("min_baseline_years", "preview_band")}
    compute.update(season_mode="task", statistics=["mean", "count"])
    return compute, AnomalyRequest(
        config, config.baseline if isinstance(baseline, str) else baseline
    )


# ----------------------------------------------------------------------------- grids


def _offset(grid: GeoBox, gbox: GeoBox, what: str) -> tuple[int, int] | None:
    """(row, col) of ``gbox``'s top-left pixel in ``grid``, both on one pixel grid; None
    when they do not overlap; ValueError when they overlap on different grids."""
    a, b = grid.affine, gbox.affine
    same = grid.crs == gbox.crs and np.allclose((a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e))
    if same:
        col, row = ~a * (b.c, b.f)
        if abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
            row, col = round(row), round(col)
            h, w = grid.shape.y, grid.shape.x
            inside = row < h and col < w and row + gbox.shape.y > 0 and col + gbox.shape.x > 0
            return (row, col) if inside else None
    if not _overlaps(grid, gbox):
        return None
    raise ValueError(
        f"baseline: {what} ({grid.crs}, {a.a:g} m, origin {a.c:g}, {a.f:g}) is not on the "
        f"request's pixel grid ({gbox.crs}, {b.a:g} m, origin {b.c:g}, {b.f:g}); ask for the "
        "anomaly on the climatology's grid (like=<the climatology>)"
    )


def _overlaps(grid: GeoBox, gbox: GeoBox) -> bool:
    try:
        return grid.extent.to_crs(gbox.crs).intersection(gbox.extent).area > 0
    except Exception:  # noqa: BLE001 - a grid we cannot project is not this one
        return False


def _bands_of(season: str) -> dict[str, str]:
    from .seasons import band_name

    return {
        "mean": band_name("mean", season),
        "std": band_name("std", season),
        "years": band_name("years", season),
    }


# ----------------------------------------------------------------------------- baselines


def _from_dataset(ds: xr.Dataset, season: str, gbox: GeoBox) -> dict[str, da.Array]:
    names = _bands_of(season)
    missing = [n for n in names.values() if n not in ds.data_vars]
    if missing:
        raise ValueError(
            f"baseline: the Dataset has no {', '.join(missing)} (its bands: "
            f"{', '.join(map(str, ds.data_vars))}); give a climatology with season {season!r}"
        )
    grid = ds.odc.geobox
    at = _offset(grid, gbox, "the baseline Dataset")
    row, col = at if at is not None else (-1, -1)
    h, w = gbox.shape.y, gbox.shape.x
    if at is None or row < 0 or col < 0 or row + h > grid.shape.y or col + w > grid.shape.x:
        raise ValueError(
            "baseline: the Dataset does not cover the request; ask for the anomaly inside the "
            "climatology's region (like=<the climatology>)"
        )
    out = {}
    for key, name in names.items():
        data = ds[name].data[row : row + h, col : col + w]
        out[key] = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
    return out


def _splits(start: int, size: int, edges: Sequence[int]) -> tuple[int, ...]:
    """Chunk sizes of ``[start, start + size)`` cut at ``edges``."""
    cuts = sorted({start, start + size, *(e for e in edges if start < e < start + size)})
    return tuple(b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True))


def _from_location(
    location: str, season: str, gbox: GeoBox, read_env: tuple[tuple[str, str], ...]
) -> dict[str, da.Array]:
    """The baseline's bands on ``gbox``: the request cut at the items' edges into cells,
    each cell a slice of one item's lazy bands (whole chunks: only its window is read)."""
    from .baseline import BaselineTile, baseline_bands
    from .mosaic import find_outputs

    names = _bands_of(season)
    try:
        outputs = find_outputs(location)
    except ValueError as err:
        raise ValueError(f"baseline: {err}; run the climatology first") from err
    items = [o for o in outputs if all(n in o.assets for n in names.values())]
    if not items:
        have = sorted({b for o in outputs for b in o.assets})
        raise ValueError(
            f"baseline: no climatology item with {', '.join(names.values())} under {location} "
            f"({len(outputs)} items; bands {', '.join(have[:8]) or 'none'}); run the "
            "climatology first"
        )
    h, w = gbox.shape.yx
    owner = np.full((h, w), -1, dtype=np.int32)  # which item each request pixel is read from
    placed = []  # (item, its top-left row/col in the request)
    for item in items:
        at = _offset(GeoBox(item.shape, item.transform, item.crs), gbox, f"item {item.item_url}")
        if at is None:
            continue
        r, c = -at[0], -at[1]
        window = owner[max(r, 0) : max(r + item.shape[0], 0), max(c, 0) : max(c + item.shape[1], 0)]
        window[window < 0] = len(placed)  # the first item listed wins an overlap
        placed.append((item, r, c))
    if (owner < 0).any():
        rows, cols = np.nonzero(owner < 0)
        x0, y0 = gbox.affine * (int(cols.min()), int(rows.min()))
        raise ValueError(
            f"baseline: no climatology item under {location} covers {(owner < 0).sum()} px of "
            f"the request (from x {x0:g}, y {y0:g} {gbox.crs}); run the climatology there "
            "first"
        )
    # the cells: the request cut at every placed item's edges
    row_edges = sorted(
        {0, h} | {min(max(e, 0), h) for i, r, _ in placed for e in (r, r + i.shape[0])}
    )
    col_edges = sorted(
        {0, w} | {min(max(e, 0), w) for i, _, c in placed for e in (c, c + i.shape[1])}
    )
    bands = []
    for item, r, c in placed:
        tile = BaselineTile(item.item_url, item.item_url, dict(item.assets))
        chunks = (_splits(r, item.shape[0], row_edges), _splits(c, item.shape[1], col_edges))
        bands.append(
            baseline_bands(tile, season, shape=item.shape, chunks=chunks, read_env=read_env)
        )
    out = {}
    for key in ("mean", "std", "years"):
        grid = []
        for y0, y1 in zip(row_edges[:-1], row_edges[1:], strict=True):
            row = []
            for x0, x1 in zip(col_edges[:-1], col_edges[1:], strict=True):
                k = int(owner[y0, x0])
                _, r, c = placed[k]
                row.append(bands[k][key][y0 - r : y1 - r, x0 - c : x1 - c])
            grid.append(row)
        out[key] = da.block(grid)
    return out


# ----------------------------------------------------------------------------- bands


def anomaly_bands(
    request: AnomalyRequest,
    season: str,
    result: xr.Dataset,
    gbox: GeoBox,
) -> dict[str, xr.DataArray]:
    """The anomaly's bands in the plugin's order, from the season's task-mode ``result``
    (``ndvi_mean``, ``clear_count``) and the baseline on ``gbox``."""
    cfg = request.config
    if isinstance(request.baseline, xr.Dataset):
        base = _from_dataset(request.baseline, season, gbox)
    else:
        base = _from_location(request.baseline, season, gbox, cfg.read_env)
    mean = result["ndvi_mean"].data
    chunks = mean.chunks
    stack = da.map_blocks(
        anomaly_block,
        mean,
        base["mean"].rechunk(chunks),
        base["std"].rechunk(chunks),
        base["years"].rechunk(chunks),
        min_baseline_years=cfg.min_baseline_years,
        new_axis=0,
        chunks=((3,), *chunks),
        dtype=np.float32,
    )
    planes = {"ndvi_anomaly": stack[0], "ndvi_std_anomaly": stack[1], "baseline_years": stack[2]}
    coords = result["ndvi_mean"].coords
    out = {}
    for band in cfg.output_bands:
        if band.name in result.data_vars:
            out[band.name] = result[band.name]
            continue
        plane = planes[band.name]
        if plane.dtype != np.dtype(band.dtype):
            plane = plane.astype(band.dtype)
        out[band.name] = xr.DataArray(
            plane, dims=("y", "x"), coords=coords, attrs={"nodata": band.nodata, "units": "1"}
        )
    return out
