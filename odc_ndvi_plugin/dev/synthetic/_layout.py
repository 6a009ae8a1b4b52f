"""Scene layout: Landsat-like path/row strips over the region, scene names and files."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, polygon

from ._encodings import _FLAVOUR_INFO, _encode_reflectance
from ._fields import _DateFields, _hash_uniform, _key
from ._spec import ArchiveSpec

# --- scene layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One written (or to be written) scene of the archive (hashable; compared by identity
    fields, the geometry objects are derived from them)."""

    name: str
    product: str
    solar_date: dt.date
    datetime: dt.datetime  # acquisition time, UTC
    wrs_path: int
    wrs_row: int
    geobox: GeoBox = field(compare=False)  # the scene raster grid
    window: tuple[int, int, int, int]  # (row_off, col_off, height, width) on the scene grid
    footprint: Geometry = field(compare=False)  # valid-data polygon (EO3 geometry), scene CRS
    dataset_yaml: Path
    id: uuid.UUID
    measurement_files: tuple[tuple[str, str], ...] = field(repr=False)  # (measurement, file)
    _pixel_polygon: tuple[tuple[float, float], ...] = field(repr=False, compare=False)
    #: (red, nir) factors this scene applies to the day's reflectances (``same_day_spread``)
    calibration: tuple[float, float] = field(default=(1.0, 1.0), repr=False, compare=False)

    @property
    def region_code(self) -> str:
        return f"{self.wrs_path:03d}{self.wrs_row:03d}"

    @property
    def directory(self) -> Path:
        return self.dataset_yaml.parent

    @cached_property
    def footprint_mask(self) -> np.ndarray:
        """Boolean valid-data mask on :attr:`geobox` (pixel centres inside the polygon)."""
        from rasterio.features import rasterize
        from shapely.geometry import Polygon

        r0, c0, h, w = self.window
        poly = Polygon([(x - c0, y - r0) for x, y in self._pixel_polygon])
        mask = rasterize([(poly, 1)], out_shape=(h, w), transform=Affine.identity(), fill=0)
        return mask.astype(bool)


@dataclass(frozen=True)
class _Layout:
    grid: GeoBox  # region on the scene grid (scene CRS)
    region_pix: Any  # shapely polygon: the tiling region in scene-grid pixel coordinates


def _layout(spec: ArchiveSpec) -> _Layout:
    from shapely.geometry import Polygon, box

    region = spec.region_geobox
    if spec.exact:
        return _Layout(region, box(0, 0, spec.width_px, spec.height_px))
    res = spec.resolution
    ext = region.extent.to_crs(spec.crs, resolution=res)
    minx, miny, maxx, maxy = ext.boundingbox
    x0 = (math.floor(minx / res) - 1) * res
    y1 = (math.ceil(maxy / res) + 1) * res
    w = math.ceil(maxx / res) + 1 - math.floor(minx / res) + 1
    h = math.ceil(maxy / res) + 1 - math.floor(miny / res) + 1
    grid = GeoBox((h, w), Affine(res, 0, x0, 0, -res, y1), spec.crs)
    inv = ~grid.affine
    ring = [inv * (x, y) for x, y in ext.exterior.coords]
    return _Layout(grid, Polygon(ring))


def _q(v: float) -> float:
    """Quantise a pixel coordinate to an odd multiple of 1/128 (never on a pixel centre)."""
    return (2 * math.floor(v * 64) + 1) / 128


def _edge(
    key: tuple[Any, ...], base: float, slope: float, along: float, length: float, jitter: float
) -> list[tuple[float, float]]:
    """Points (a, b) of a ragged line b = base + slope * (a - along) + noise, a in [-2, length+2]."""
    n = max(2, int(math.ceil((length + 4) / 8.0)) + 1)
    a = np.linspace(-2.0, length + 2.0, n)
    rng = np.random.default_rng([int(_key(*key)) & 0xFFFFFFFF, 11])
    noise = rng.uniform(-jitter, jitter, size=n)
    return [
        (float(ai), _q(base + slope * (ai - along) + ni)) for ai, ni in zip(a, noise, strict=True)
    ]


def _strip(
    key: tuple[Any, ...],
    k: int,
    n: int,
    size: float,
    other: float,
    slope: float,
    shift: float,
    across_x: bool,
) -> Any:
    """Polygon of strip k of n spanning part of one axis (0..size), with overlapping, slanted,
    ragged edges; the outer edges of the first and last strips lie far outside (the region clip
    makes them straight). Points are built as (a, b): a along the edges (0..other), b across.
    ``across_x``: the strip spans an x range (a path), so (a, b) is (y, x)."""
    from shapely.geometry import Polygon

    s = size / n
    o = 0.2 * s
    far = 10.0 + abs(slope) * other
    lo, hi = k * s - o + shift, (k + 1) * s + o + shift
    if k == 0:
        lo_pts = [(-2.0, -far), (other + 2.0, -far)]
    else:
        lo_pts = _edge((*key, "lo"), lo, slope, other / 2, other, 1.5)
    if k == n - 1:
        hi_pts = [(-2.0, size + far), (other + 2.0, size + far)]
    else:
        hi_pts = _edge((*key, "hi"), hi, slope, other / 2, other, 1.5)
    ring = lo_pts + hi_pts[::-1]
    if across_x:
        return Polygon([(b, a) for a, b in ring])
    return Polygon(ring)


def _scene_name(spec: ArchiveSpec, path: int, row: int, when: dt.datetime) -> str:
    if spec.flavour == "usgs_c2":
        proc = (when + dt.timedelta(days=16)).date()
        sat = spec.platform.split("-")[-1].zfill(2)
        return f"LC{sat}_L2SP_{path:03d}{row:03d}_{when:%Y%m%d}_{proc:%Y%m%d}_02_T1"
    sat = spec.platform.split("-")[-1]
    return f"ga_ls{sat}c_ard_3-2-1_{path:03d}{row:03d}_{when:%Y-%m-%d}_final"


def _measurement_files(spec: ArchiveSpec, name: str) -> tuple[tuple[str, str], ...]:
    info = _FLAVOUR_INFO[spec.flavour]
    if spec.flavour == "usgs_c2":
        return (
            (info.red, f"{name}_SR_B4.TIF"),
            (info.nir, f"{name}_SR_B5.TIF"),
            (info.mask, f"{name}_QA_PIXEL.TIF"),
        )
    nb = name.replace("_ard_", "_nbart_")
    oa = name.replace("_ard_", "_oa_")
    return (
        (info.red, f"{nb}_band04.tif"),
        (info.nir, f"{nb}_band05.tif"),
        (info.mask, f"{oa}_fmask.tif"),
    )


def _plan(spec: ArchiveSpec, root: Path) -> tuple[Scene, ...]:
    lay = _layout(spec)
    gh, gw = lay.grid.shape
    scenes = []
    per_day = spec.n_paths * spec.rows_per_path
    for day in spec.dates:
        # calibration slot of each (path, row) of the day: distinct, in a per-day order, so the
        # first scene of a day is sometimes the greener and sometimes the browner one
        slots = np.random.default_rng([spec.seed & 0xFFFFFFFF, day.toordinal(), 5]).permutation(
            per_day
        )
        for k in range(spec.n_paths):
            path = spec.first_path - k  # WRS path numbers increase westwards
            rng = np.random.default_rng([spec.seed & 0xFFFFFFFF, day.toordinal(), k, 3])
            shift = float(rng.uniform(-2.0, 2.0))
            # track slants ~6 degrees: x decreases by 0.1 px per row southwards
            pstrip = _strip(
                (spec.seed, "path", k, day.toordinal()),
                k,
                spec.n_paths,
                gw,
                gh,
                -0.1,
                shift,
                across_x=True,
            )
            for r in range(spec.rows_per_path):
                row = spec.first_row + r
                rstrip = _strip(
                    (spec.seed, "row", k, r, day.toordinal()),
                    r,
                    spec.rows_per_path,
                    gh,
                    gw,
                    0.1,
                    shift,
                    across_x=False,
                )
                poly = pstrip.intersection(rstrip).intersection(lay.region_pix)
                if poly.is_empty or poly.area < 4 or poly.geom_type != "Polygon":
                    continue
                minx, miny, maxx, maxy = poly.bounds
                c0, r0 = max(0, math.floor(minx)), max(0, math.floor(miny))
                c1, r1 = min(gw, math.ceil(maxx)), min(gh, math.ceil(maxy))
                # 23:49:30 UTC the evening before = local morning at ~148 E (solar offset
                # +10 h): the UTC date is never the solar date
                step = 0 if spec.simultaneous_scenes else 45 * k + 24 * r
                when = dt.datetime.combine(
                    day - dt.timedelta(days=1), dt.time(23, 49, 30), tzinfo=dt.UTC
                ) + dt.timedelta(seconds=step)
                t = -1.0 + 2.0 * (float(slots[k * spec.rows_per_path + r]) + 0.5) / per_day
                calibration = (
                    (1.0 - spec.same_day_spread * t, 1.0 + spec.same_day_spread * t)
                    if spec.same_day_spread
                    else (1.0, 1.0)
                )
                name = _scene_name(spec, path, row, when)
                gbox = GeoBox(
                    (r1 - r0, c1 - c0), lay.grid.affine * Affine.translation(c0, r0), spec.crs
                )
                pix = tuple((float(x), float(y)) for x, y in poly.exterior.coords)
                aff = lay.grid.affine
                world = [aff * (x, y) for x, y in pix]
                world = [(round(x, 3), round(y, 3)) for x, y in world]
                directory = root / spec.product / f"{path:03d}" / f"{row:03d}" / name
                scenes.append(
                    Scene(
                        name=name,
                        product=spec.product,
                        solar_date=day,
                        datetime=when,
                        wrs_path=path,
                        wrs_row=row,
                        geobox=gbox,
                        window=(r0, c0, r1 - r0, c1 - c0),
                        footprint=polygon(world, crs=spec.crs),
                        dataset_yaml=directory / f"{name}.odc-metadata.yaml",
                        id=uuid.uuid5(
                            uuid.NAMESPACE_URL,
                            f"odc-ndvi-synthetic/{spec.seed}/{spec.digest}/{name}",
                        ),
                        measurement_files=_measurement_files(spec, name),
                        _pixel_polygon=pix,
                        calibration=calibration,
                    )
                )
    return tuple(scenes)


def _scene_dns(
    spec: ArchiveSpec,
    scene: Scene,
    fields: _DateFields,
    sl: tuple[slice, slice],
    rows: np.ndarray,
    cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The red and NIR DNs ``scene`` stores on ``fields[sl]`` (footprint not applied yet):
    the day's reflectances times the scene's calibration, quantised, and nodata where
    ``band_nodata_fraction`` drops a band. ``rows``/``cols``: the global scene-grid indices
    of ``sl`` (the dropped pixels are a function of them, so any window agrees)."""
    info = _FLAVOUR_INFO[spec.flavour]
    red_rho, nir_rho = fields.red[sl], fields.nir[sl]
    if spec.same_day_spread:
        red_rho = red_rho * scene.calibration[0]
        nir_rho = nir_rho * scene.calibration[1]
    red = _encode_reflectance(info, red_rho)
    nir = _encode_reflectance(info, nir_rho)
    if spec.band_nodata_fraction:
        u = _hash_uniform(_key(spec.seed, "band-nodata", scene.name), rows, cols)
        f = spec.band_nodata_fraction
        nodata = np.asarray(info.nodata, dtype=info.dtype)
        red = np.where(u < 2 * f / 3, nodata, red)
        nir = np.where((u >= f / 3) & (u < f), nodata, nir)
    return red, nir
