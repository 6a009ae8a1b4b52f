"""``odc-ndvi mosaic``: one PNG per season of a whole run's outputs, all tiles stitched.

A run writes one folder per task (``<location>/x+NNN/y-NNNN/<period>/``) with a COG per
band and a STAC item, written last. This module finds the STAC items under a location
(``file://``, a plain path, or ``s3://``), groups them by product, version and period, and
for each selected band (``ndvi_mean`` -> ``ndvi_mean`` in task mode, ``ndvi_mean_djf`` ...
in year mode) pastes every tile onto one grid, reading each COG at the overview level that
matches the decimation (a 100-tile region at 3200 px is read as ~1,000 px tiles, not 3200).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
from affine import Affine

from .storage import Store, as_url, is_store_url, path_or_url, store_for

__all__ = [
    "DEFAULT_MAX_PX",
    "Mosaic",
    "TaskOutput",
    "find_outputs",
    "read_json",
    "mosaic_figure",
    "read_mosaic",
    "render_mosaic",
    "select_bands",
    "stac_item_urls",
    "write_mosaics",
]

#: longest side of a mosaic (pixels): tiles are read from the overview level that fits
DEFAULT_MAX_PX = 2048
_STAC_SUFFIX = ".stac-item.json"


@dataclass(frozen=True)
class TaskOutput:
    """One finished task (one STAC item): where its band files are and its grid."""

    item_url: str
    product: str
    version: str
    period: str
    crs: str
    transform: Affine
    shape: tuple[int, int]  # (height, width)
    assets: Mapping[str, str]  # band -> absolute URL of the COG

    @classmethod
    def from_item(cls, url: str, item: Mapping) -> TaskOutput:
        props = item["properties"]
        t = props["proj:transform"]
        # odc-stats layout: <location>/x+NNN/y-NNNN/<period>/<name>.stac-item.json
        period = url.rstrip("/").split("/")[-2]
        return cls(
            item_url=url,
            product=props.get("odc:product", "?"),
            version=str(props.get("odc:dataset_version", "")),
            period=period,
            crs=props["proj:code"] if "proj:code" in props else f"EPSG:{props['proj:epsg']}",
            transform=Affine(*t[:6]),
            shape=tuple(props["proj:shape"]),  # type: ignore[arg-type]
            assets={
                band: urljoin(url, asset["href"])
                for band, asset in item["assets"].items()
                if "data" in asset.get("roles", ["data"])
            },
        )


def stac_item_urls(location: str, *, store: Store | None = None) -> Iterator[str]:
    """URLs of the STAC items under ``location`` (``store``: the location's, if the
    caller keeps one); staging folders (``.staging/``, any hidden folder) hold unfinished
    attempts and are skipped."""
    url = as_url(location)
    if not is_store_url(url):
        raise ValueError(f"{location}: expected a local path, file:// or s3:// location")
    yield from (store or store_for(url)).walk(url.rstrip("/"), _STAC_SUFFIX)


def read_json(url: str, *, store: Store | None = None) -> Any:
    """The JSON document at ``url`` (a STAC item)."""
    return json.loads((store or store_for(url)).read(url))


def find_outputs(location: str) -> list[TaskOutput]:
    """Every finished task under ``location`` (a task without its STAC item is not done)."""
    store = store_for(as_url(location))
    return [
        TaskOutput.from_item(url, read_json(url, store=store))
        for url in stac_item_urls(location, store=store)
    ]


def select_bands(outputs: Sequence[TaskOutput], band: str) -> list[str]:
    """The bands ``band`` names: itself (task and anomaly modes) or ``<band>_<season>``
    (year and climatology modes), in the order the run wrote them."""
    from .preview import season_bands

    return season_bands(list(dict.fromkeys(b for out in outputs for b in out.assets)), band)


@dataclass(frozen=True)
class Mosaic:
    """One band of every tile on one grid (``decimation`` native pixels per pixel)."""

    data: np.ndarray
    transform: Affine
    crs: str
    nodata: float | int | None
    decimation: int
    tiles: int


def read_mosaic(
    outputs: Sequence[TaskOutput], band: str, *, max_px: int = DEFAULT_MAX_PX
) -> Mosaic:
    """Paste ``band`` of every output onto the union of their grids, decimated so that the
    longest side is at most ``max_px``; each tile is read from its largest overview that is
    no coarser than the mosaic (nearest neighbour from there)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    tiles = [o for o in outputs if band in o.assets]
    if not tiles:
        raise ValueError(f"no output has a band {band!r}")
    crs = {o.crs for o in tiles}
    res = {(o.transform.a, o.transform.e) for o in tiles}
    if len(crs) > 1 or len(res) > 1:
        raise ValueError(f"outputs are on different grids ({crs}, {res}); mosaic one product")
    (res_x, res_y), (crs_,) = next(iter(res)), crs
    left = min(o.transform.c for o in tiles)
    top = max(o.transform.f for o in tiles)
    right = max(o.transform.c + o.shape[1] * res_x for o in tiles)
    bottom = min(o.transform.f + o.shape[0] * res_y for o in tiles)
    width, height = round((right - left) / res_x), round((bottom - top) / res_y)
    factor = max(1, math.ceil(max(width, height) / max_px))
    shape = (math.ceil(height / factor), math.ceil(width / factor))
    transform = Affine(res_x * factor, 0, left, 0, res_y * factor, top)
    nodata = None
    out: np.ndarray | None = None
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for tile in tiles:
            url = path_or_url(tile.assets[band])
            with rasterio.open(url) as src:
                levels = [f for f in src.overviews(1) if f <= factor]
                nodata = src.nodata
                if out is None:
                    fill = np.nan if nodata is None or np.isnan(nodata) else nodata
                    out = np.full(shape, fill, dtype=src.dtypes[0])
            # overview_level i is the i-th entry of overviews(): the largest that fits
            kwargs = {"overview_level": len(levels) - 1} if levels else {}
            with rasterio.open(url, **kwargs) as src:
                reproject(
                    source=src.read(1),
                    destination=out,
                    src_transform=src.transform,
                    src_crs=crs_,
                    src_nodata=nodata,
                    dst_transform=transform,
                    dst_crs=crs_,
                    dst_nodata=nodata,
                    init_dest_nodata=False,  # keep the tiles already pasted
                    resampling=Resampling.nearest,
                )
    assert out is not None
    return Mosaic(out, transform, crs_, nodata, factor, len(tiles))


def mosaic_figure(mosaic: Mosaic, *, title: str, band: str):
    """The matplotlib figure of ``mosaic`` (colours by the band's name, :func:`band_style`:
    NDVI on the plugin's ramp, anomalies on a diverging ramp centred on 0 with symmetric
    limits, counts and years on viridis), with a colour bar and axes in kilometres of the
    output CRS; NaN and count nodata show grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .preview import band_style

    data = mosaic.data
    style = band_style(band, data.dtype)
    h, w = data.shape
    t = mosaic.transform
    extent = [v / 1000 for v in (t.c, t.c + w * t.a, t.f + h * t.e, t.f)]
    scale = min(10.0 / w, 8.0 / h)
    fig, ax = plt.subplots(figsize=(max(4.0, w * scale) + 1.5, max(3.0, h * scale) + 0.8))
    if style.kind == "count":
        shown = np.ma.masked_equal(data, mosaic.nodata) if mosaic.nodata is not None else data
        vmin, vmax = 0, None
    else:
        shown = data
        vmin, vmax = style.limits  # type: ignore[misc]
    image = ax.imshow(
        shown, cmap=style.cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest"
    )
    ax.set_facecolor("#d0d0d0")  # no data shows grey, not white
    ax.set_xlabel(f"x ({mosaic.crs}, km)")
    ax.set_ylabel(f"y ({mosaic.crs}, km)")
    step = f", 1:{mosaic.decimation} from overviews" if mosaic.decimation > 1 else ""
    ax.set_title(f"{title}\n{band}: {mosaic.tiles} tiles, {w}x{h} px{step}", fontsize=10)
    extend = "both" if style.kind == "anomaly" else "neither"  # values beyond are clipped
    fig.colorbar(image, ax=ax, shrink=0.8, label=style.label, extend=extend)
    return fig


def render_mosaic(mosaic: Mosaic, path: Path, *, title: str, band: str) -> Path:
    """A PNG of :func:`mosaic_figure`."""
    import matplotlib.pyplot as plt

    fig = mosaic_figure(mosaic, title=title, band=band)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_mosaics(
    location: str,
    out_dir: Path,
    *,
    band: str = "ndvi_mean",
    max_px: int = DEFAULT_MAX_PX,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """One PNG per (product, version, period, season band) of the run at ``location``."""
    outputs = find_outputs(location)
    if not outputs:
        raise ValueError(f"{location}: no finished task (no {_STAC_SUFFIX}) found")
    groups: dict[tuple[str, str, str], list[TaskOutput]] = {}
    for out in outputs:
        groups.setdefault((out.product, out.version, out.period), []).append(out)
    written = []
    for (product, version, period), members in sorted(groups.items()):
        bands = select_bands(members, band)
        if not bands:
            have = ", ".join(select_bands(members, ""))
            raise ValueError(f"{product} {period}: no band {band!r} or {band}_<season>; has {have}")
        for name in bands:
            mosaic = read_mosaic(members, name, max_px=max_px)
            stem = "_".join(p for p in (product, version.replace(".", "-"), period, name) if p)
            png = render_mosaic(
                mosaic,
                Path(out_dir) / f"{_safe(stem)}.png",
                title=f"{product} {version} {period}".replace("  ", " "),
                band=name,
            )
            written.append(png)
            if progress is not None:
                progress(f"{png} ({mosaic.tiles} tiles, 1:{mosaic.decimation})")
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_+." else "_" for c in name).strip(os.sep)
