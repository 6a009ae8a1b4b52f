"""Real scenes with synthetic pixels, and their numpy truth (no plugin code).

The dataset documents are real (tests/data/real: grids, CRSs, footprints, timestamps, band
file names, as their producers wrote them). Only the pixels are made here: for each scene,
band files at exactly the document's grid, written sparse (a GeoTIFF of the full scene
size whose blocks outside a crop window around the test tile are never written, so they
read as nodata: a 7,800 x 7,800 px scene costs a few hundred kB).

Pixel values follow each family's real encoding: C2 L2 digital numbers (uint16, nodata 0,
reflectance = DN * 0.0000275 - 0.2, QA_PIXEL codes as USGS writes them) or DEA ARD
(int16 reflectance * 10000, nodata -999, fmask 0-5). Outside the scene's footprint the
files hold nodata; inside, a few reflectance pixels are nodata under a clear mask value
(never clear, README rule).

Truth: each scene's arrays warped onto the tile with GDAL's nearest neighbour (as the
synthetic archive's truth does), clear = ``datacube.utils.masking.make_mask`` on the real
flags_definition and both reflectances valid, NDVI on reflectance from the family's
published scaling (restated here, not taken from the plugin), one value per solar day
(UTC + round(lon / 15) hours at the tile centre), the first clear scene of the day in
(time, id) order winning.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import xarray as xr
import yaml
from affine import Affine
from datacube.utils.masking import make_mask
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from rasterio.io import MemoryFile
from rasterio.windows import Window

__all__ = [
    "FAMILIES",
    "DATA",
    "Family",
    "RealScene",
    "Painted",
    "dea_record",
    "paint",
    "product_bands",
    "product_definition",
    "read_docs",
    "solar_days",
]

DATA = Path(__file__).resolve().parents[1] / "data" / "real"


@dataclass(frozen=True)
class Family:
    """A product family's pixel encoding (as its producer publishes it)."""

    dtype: str
    mask_dtype: str
    reflectance_nodata: int
    mask_nodata: int
    scale: float
    offset: float
    #: (mask value, probability) of the scene's mask band, nodata excluded
    mask_codes: tuple[tuple[int, float], ...]

    def to_dn(self, reflectance: np.ndarray) -> np.ndarray:
        return np.round((reflectance - self.offset) / self.scale).astype(self.dtype)

    def reflectance(self, dn: np.ndarray) -> np.ndarray:
        return dn * self.scale + self.offset


FAMILIES: Mapping[str, Family] = {
    # USGS C2 L2 QA_PIXEL values as USGS writes them: clear land, clear water, high cloud,
    # shadow, dilated cloud, medium cloud (clear bit set), cirrus, snow
    "c2": Family(
        "uint16",
        "uint16",
        0,
        1,
        0.0000275,
        -0.2,
        (
            (21824, 0.5),
            (21952, 0.06),
            (22280, 0.14),
            (23888, 0.08),
            (21762, 0.06),
            (22080, 0.07),
            (54596, 0.05),
            (30048, 0.04),
        ),
    ),
    # DEA fmask: valid, cloud, shadow, snow, water
    "dea": Family(
        "int16",
        "uint8",
        -999,
        0,
        0.0001,
        0.0,
        ((1, 0.6), (2, 0.18), (3, 0.08), (4, 0.04), (5, 0.1)),
    ),
}


def product_definition(name: str) -> dict[str, Any]:
    """The vendored definition of product ``name`` (several may share a file)."""
    for path in sorted((DATA / "products").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("name") == name:
                return doc
    raise KeyError(name)


def product_bands(name: str) -> list[str]:
    """The measurement names of product ``name``."""
    return [m["name"] for m in product_definition(name)["measurements"]]


def read_docs(path: Path) -> list[dict[str, Any]]:
    """The eo3 documents of a vendored file (YAML, several per file allowed)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def dea_record(name: str) -> tuple[dict[str, Any], str]:
    """A record of odc-stats' real DEA dataset cache: (eo3 document, its real S3 URI)."""
    record = json.loads(
        (DATA / "datasets" / "odc-stats_ga_ls8c_ard_3_2015-01--P3M" / name).read_text()
    )
    return record["metadata"], record["uris"][0]


@dataclass(frozen=True)
class RealScene:
    """A real dataset document and where its files live (its URI, as indexed)."""

    doc: Mapping[str, Any]
    uri: str  #: the document's location; band paths are relative to it

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def crs(self) -> str:
        return str(self.doc["crs"])

    @property
    def time(self) -> dt.datetime:
        value = self.doc["properties"]["datetime"]
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)

    def grid(self, band: str) -> tuple[tuple[int, int], Affine]:
        m = self.doc["measurements"][band]
        grid = self.doc["grids"][m.get("grid", "default")]
        return tuple(grid["shape"]), Affine(*grid["transform"][:6])

    def band_uri(self, band: str) -> str:
        return urljoin(self.uri, self.doc["measurements"][band]["path"])


@dataclass
class Painted:
    """One scene's synthetic pixels in its crop window (the truth's input)."""

    scene: RealScene
    window_transform: Affine
    red: np.ndarray
    nir: np.ndarray
    mask: np.ndarray


def _probabilities(codes: Sequence[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([c for c, _ in codes])
    p = np.array([w for _, w in codes], dtype=float)
    return values, p / p.sum()


def _crop_window(scene: RealScene, band: str, tile: GeoBox, margin: int = 8) -> Window:
    (h, w), transform = scene.grid(band)
    left, bottom, right, top = rasterio.warp.transform_bounds(
        str(tile.crs), scene.crs, *tile.boundingbox, densify_pts=21
    )
    win = rasterio.windows.from_bounds(left, bottom, right, top, transform)
    c0 = max(0, int(np.floor(win.col_off)) - margin)
    r0 = max(0, int(np.floor(win.row_off)) - margin)
    c1 = min(w, int(np.ceil(win.col_off + win.width)) + margin)
    r1 = min(h, int(np.ceil(win.row_off + win.height)) + margin)
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"tile does not overlap scene {scene.id}")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _sparse_tiff(
    shape: tuple[int, int],
    transform: Affine,
    crs: str,
    dtype: str,
    nodata: int,
    window: Window,
    data: np.ndarray,
) -> bytes:
    """A tiled GeoTIFF of the scene's full grid holding ``data`` in ``window`` only."""
    profile = dict(
        driver="GTiff",
        width=shape[1],
        height=shape[0],
        count=1,
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        SPARSE_OK=True,
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data, 1, window=window)
        return mem.read()


def paint(
    scene: RealScene,
    tile: GeoBox,
    *,
    family: Family,
    bands: tuple[str, str, str],
    put: Callable[[str, bytes], None],
) -> Painted:
    """Write the scene's (red, NIR, mask) files with ``put(uri, bytes)`` and return what
    was painted. Values are a pure function of the scene id."""
    red_band, nir_band, mask_band = bands
    shape, transform = scene.grid(red_band)
    window = _crop_window(scene, red_band, tile)
    rng = np.random.default_rng(zlib.crc32(scene.id.encode()))
    hw = (int(window.height), int(window.width))
    red_r = rng.uniform(0.01, 0.25, hw)
    nir_r = rng.uniform(0.05, 0.6, hw)
    values, p = _probabilities(family.mask_codes)
    mask = rng.choice(values, size=hw, p=p).astype(family.mask_dtype)
    red, nir = family.to_dn(red_r), family.to_dn(nir_r)
    # reflectance nodata under a clear mask value: never clear
    red[rng.random(hw) < 0.01] = family.reflectance_nodata
    nir[rng.random(hw) < 0.01] = family.reflectance_nodata
    # outside the real footprint: nodata everywhere, as in the producer's files
    win_transform = rasterio.windows.transform(window, transform)
    outside = rasterio.features.geometry_mask(
        [scene.doc["geometry"]], out_shape=hw, transform=win_transform
    )
    red[outside], nir[outside], mask[outside] = (
        family.reflectance_nodata,
        family.reflectance_nodata,
        family.mask_nodata,
    )
    for band, data, nodata in (
        (red_band, red, family.reflectance_nodata),
        (nir_band, nir, family.reflectance_nodata),
        (mask_band, mask, family.mask_nodata),
    ):
        put(
            scene.band_uri(band),
            _sparse_tiff(shape, transform, scene.crs, str(data.dtype), nodata, window, data),
        )
    return Painted(scene, win_transform, red, nir, mask)


def _warp(data: np.ndarray, painted: Painted, tile: GeoBox) -> np.ndarray:
    out = np.full(tile.shape.yx, np.nan)
    rasterio.warp.reproject(
        data.astype(np.float64),
        out,
        src_transform=painted.window_transform,
        src_crs=painted.scene.crs,
        src_nodata=np.nan,
        dst_transform=Affine(*tile.affine[:6]),
        dst_crs=str(tile.crs),
        dst_nodata=np.nan,
        resampling=rasterio.warp.Resampling.nearest,
    )
    return out


def scene_ndvi(
    painted: Painted,
    tile: GeoBox,
    *,
    family: Family,
    flags_definition: Mapping[str, Any],
    good_pixel_flags: Mapping[str, Any],
) -> np.ndarray:
    """The scene's NDVI on the tile: NaN where not clear (or not covered)."""
    red, nir, mask = (_warp(a, painted, tile) for a in (painted.red, painted.nir, painted.mask))
    covered = ~np.isnan(mask)
    codes = np.where(covered, mask, 0).astype(np.int64)
    clear = make_mask(
        xr.DataArray(codes, dims=("y", "x"), attrs={"flags_definition": flags_definition}),
        **good_pixel_flags,
    ).values
    clear &= covered & (red != family.reflectance_nodata) & (nir != family.reflectance_nodata)
    r, n = family.reflectance(red), family.reflectance(nir)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (n - r) / (n + r)
    return np.where(clear & np.isfinite(ndvi), ndvi, np.nan)


def solar_days(
    layers: Sequence[tuple[RealScene, np.ndarray]], tile: GeoBox
) -> list[tuple[np.datetime64, np.ndarray]]:
    """Per solar day (UTC + whole hours of the tile centre's longitude / 15), the first clear
    value of the day's scenes in (time, id) order."""
    lon = tile.extent.centroid.to_crs("epsg:4326").coords[0][0]
    offset = dt.timedelta(hours=int(lon * 24 / 360 + 0.5))
    days: dict[np.datetime64, np.ndarray] = {}
    for scene, ndvi in sorted(layers, key=lambda sl: (sl[0].time, sl[0].id)):
        day = np.datetime64((scene.time + offset).date(), "D")
        days[day] = ndvi if day not in days else np.where(np.isnan(days[day]), ndvi, days[day])
    return sorted(days.items())


def usgs_item_to_eo3(item: Mapping[str, Any]) -> dict[str, Any]:
    """A USGS STAC API item (collection landsat-c2l2-sr) as odc-apps-dc-tools indexes it
    (``stac_transform``: product ``ls8_c2l2_sr``, bands red/nir08/qa_pixel), reading from
    the item's own ``alternate.s3`` hrefs on the requester-pays bucket usgs-landsat."""
    from odc.apps.dc_tools._stac import stac_transform

    item = json.loads(json.dumps(item))
    for asset in item["assets"].values():
        s3 = asset.get("alternate", {}).get("s3", {}).get("href")
        if s3:
            asset["href"] = s3
    return stac_transform(item)


_C2_FILE = re.compile(
    r"_(SR_B\d|QA_PIXEL|QA_RADSAT|SR_QA_AEROSOL|SR_ATMOS_OPACITY|SR_CLOUD_QA)\.TIF$"
)


def usgs_item_to_deafrica(
    item: Mapping[str, Any],
    *,
    product: str,
    bucket: str = "deafrica-landsat",
    mtl: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A USGS C2 item as an eo3 document of a DE Africa product (``ls8_sr``: measurements
    named after the files, ``SR_B4``, ``QA_PIXEL``; files in DE Africa's mirror of the USGS
    layout). Grid from the item's ``proj:`` fields, or from its MTL (corners are pixel
    centres); time from the item, or the MTL's acquisition date and scene centre time."""
    props = item["properties"]
    if "proj:epsg" in props:
        crs = f"epsg:{props['proj:epsg']}"
        shape, transform = props["proj:shape"], props["proj:transform"][:6]
    else:
        proj = mtl["LANDSAT_METADATA_FILE"]["PROJECTION_ATTRIBUTES"]
        crs = f"epsg:326{int(proj['UTM_ZONE']):02d}"
        res = float(proj["GRID_CELL_SIZE_REFLECTIVE"])
        x0 = float(proj["CORNER_UL_PROJECTION_X_PRODUCT"]) - res / 2
        y0 = float(proj["CORNER_UL_PROJECTION_Y_PRODUCT"]) + res / 2
        shape = [int(proj["REFLECTIVE_LINES"]), int(proj["REFLECTIVE_SAMPLES"])]
        transform = [res, 0.0, x0, 0.0, -res, y0]
    when = str(props["datetime"])
    if "T" not in when:
        image = mtl["LANDSAT_METADATA_FILE"]["IMAGE_ATTRIBUTES"]
        when = f"{image['DATE_ACQUIRED']}T{image['SCENE_CENTER_TIME'].rstrip('Z')[:15]}Z"
    geometry = Geometry(item["geometry"], crs="epsg:4326").to_crs(crs)
    measurements = {}
    for asset in item["assets"].values():
        match = _C2_FILE.search(asset["href"])
        if match:
            key = asset["href"].split("/collection02/", 1)[1]
            measurements[match.group(1)] = {"path": f"s3://{bucket}/collection02/{key}"}
    platform = str(props.get("platform") or props.get("eo:platform")).lower().replace("_", "-")
    return {
        "$schema": "https://schemas.opendatacube.org/dataset",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{product}/{item['id']}")),
        "label": item["id"],
        "product": {"name": product},
        "crs": crs,
        "geometry": geometry.json,
        "grids": {"default": {"shape": shape, "transform": [*transform, 0.0, 0.0, 1.0]}},
        "properties": {
            "datetime": when,
            "eo:platform": platform,
            "odc:file_format": "GeoTIFF",
            "odc:region_code": f"{int(props['landsat:wrs_path']):03d}{int(props['landsat:wrs_row']):03d}",
            "landsat:landsat_scene_id": props.get("landsat:scene_id"),
        },
        "measurements": measurements,
        "lineage": {},
    }
