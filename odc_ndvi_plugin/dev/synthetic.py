"""Deterministic synthetic Landsat archive: scenes, product definitions and ground truth.

The generator writes an archive of Landsat-like scenes (one Cloud Optimised GeoTIFF per band and
an EO3 dataset document per scene) for one of two input flavours:

``usgs_c2``
    USGS Collection 2 Level-2 surface reflectance, product ``ls_c2l2_sr``: ``red`` and ``nir08``
    as uint16 DNs (reflectance = DN * 0.0000275 - 0.2, DN 0 = nodata) and the real C2 ``qa_pixel``
    bit layout (nodata = 1).
``dea_ard``
    Geoscience Australia ARD Collection 3, product ``ga_ls_ard_3``: ``nbart_red`` and ``nbart_nir``
    as int16 (reflectance = DN * 0.0001, nodata -999) and the ``oa_fmask`` enumeration
    (0 nodata, 1 valid, 2 cloud, 3 shadow, 4 snow, 5 water).

Everything is a pure function of the :class:`ArchiveSpec` (seed included). Surface and cloud
fields are evaluated point-wise from global pixel indices with integer hashing and value noise
(no transcendental functions per pixel), so any window of the grid -- a scene, an odc-stats tile,
the whole region -- gets bit-identical values. :meth:`Archive.truth` uses that to regenerate,
for any output :class:`~odc.geo.geobox.GeoBox` aligned to the archive grid, the stored
reflectances and a per-pixel :class:`Condition` code for every scene, without reading the files
and without any plugin code.

Scene layout: ``n_paths`` adjacent WRS paths (west to east) are imaged on the *same* solar day
and overlap by a strip; each path can be cut into ``rows_per_path`` scenes (north to south) that
overlap too. Overlapping scenes of one day observe the same surface and the same clouds, so their
DNs are identical where both have data (unless a hard case below says otherwise); they differ only
in their (slanted, slightly ragged) footprints, outside of which every band is nodata. The
footprint polygon is the EO3 ``geometry``.

Opt-in hard cases (:class:`ArchiveSpec` fields; their defaults reproduce the archives written before
they existed, byte for byte): ``same_day_spread`` gives every scene its own red/NIR calibration,
so overlapping scenes of a day disagree where both are clear; ``band_nodata_fraction`` stores red
and/or NIR as nodata at some pixels whose mask value is unchanged (often clear);
``extra_dates`` adds solar dates, e.g. the first of a month, whose UTC date (the evening before)
falls in the previous month; ``simultaneous_scenes`` gives all scenes of a day one centre time, so
only the dataset id orders them.

With ``crs`` equal to the tiling CRS (EPSG:3577, the default) scenes are windows of the tiling
grid and the truth is exact. With a UTM ``crs`` (e.g. ``"EPSG:32755"``) scenes are on a UTM grid
covering the Albers region; truth on an Albers geobox is then a nearest-neighbour approximation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import click
import numpy as np
import yaml
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, polygon

from .._shipped import cfg_dir
from ..presets import PRESETS

__all__ = [
    "Archive",
    "ArchiveSpec",
    "Condition",
    "DayTruth",
    "FMASK_BY_CONDITION",
    "FLAVOURS",
    "Flavour",
    "LandCover",
    "MEASUREMENTS",
    "PRODUCT_NAMES",
    "ProgressCallback",
    "QA_PIXEL_BY_CONDITION",
    "Scene",
    "SceneTruth",
    "Truth",
    "decode",
    "encode_fmask",
    "encode_qa_pixel",
    "generate_archive",
    "load_archive",
    "plan_archive",
    "product_definition_path",
    "synth_command",
]

Flavour = Literal["usgs_c2", "dea_ard"]
FLAVOURS: tuple[Flavour, ...] = ("usgs_c2", "dea_ard")

#: ``progress(done, total, message)``; called once per scene (written or skipped).
ProgressCallback = Callable[[int, int, str], None]

TILE_CRS = "EPSG:3577"
SPEC_FILENAME = "synthetic-archive.yaml"
DATASET_SCHEMA = "https://schemas.opendatacube.org/dataset"

# Top-left corner of the default region (EPSG:3577 metres): the Monaro / Snowy Mountains in
# south-eastern Australia (about 148.4 E, 36.2 S, UTM zone 55). A multiple of 30 * 1024, so the
# region is aligned to odc-stats tiles "epsg:3577;30;N" for every N dividing 1024.
DEFAULT_ANCHOR: tuple[float, float] = (1_474_560.0, -4_055_040.0)


class Condition(IntEnum):
    """What a scene observed at a pixel (mutually exclusive, highest priority wins).

    Priority (high to low): NODATA, CLOUD_HIGH, CLOUD_DILATED_RING, CLOUD_MEDIUM, SHADOW, CIRRUS,
    SNOW, WATER, CLEAR_LAND. Water surfaces additionally set the qa_pixel water bit under every
    condition except NODATA and CLOUD_HIGH (see :func:`encode_qa_pixel`).
    """

    NODATA = 0
    CLEAR_LAND = 1
    WATER = 2
    SNOW = 3
    CLOUD_HIGH = 4
    CLOUD_MEDIUM = 5
    CLOUD_DILATED_RING = 6
    SHADOW = 7
    CIRRUS = 8


class LandCover(IntEnum):
    """Static land-cover classes of the synthetic surface."""

    WATER = 0
    FOREST = 1
    CROP = 2
    GRASSLAND = 3
    BARE_URBAN = 4


# --- encodings ---------------------------------------------------------------------------------

# USGS C2 QA_PIXEL: every valid pixel carries "low" in the four confidence pairs unless raised.
_QA_LOW_CONFIDENCES = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # 21760
_QA_CLEAR, _QA_WATER = 1 << 6, 1 << 7

#: qa_pixel value per condition for a land surface (water surfaces: see :func:`encode_qa_pixel`).
#: These are the values real C2 L2 products carry (21824 clear, 22280 high-confidence cloud,
#: 21762 dilated cloud, 22080 medium-confidence cloud, 23888 shadow, 30048 snow, 54596 cirrus,
#: 21952 clear water, 1 fill).
QA_PIXEL_BY_CONDITION: dict[Condition, int] = {
    Condition.NODATA: 1,
    Condition.CLEAR_LAND: _QA_LOW_CONFIDENCES | _QA_CLEAR,
    Condition.WATER: _QA_LOW_CONFIDENCES | _QA_CLEAR | _QA_WATER,
    # snow bit 5, snow/ice confidence high, clear
    Condition.SNOW: (_QA_LOW_CONFIDENCES | (3 << 12)) | _QA_CLEAR | (1 << 5),
    # cloud bit 3, cloud confidence high, NOT clear
    Condition.CLOUD_HIGH: (_QA_LOW_CONFIDENCES | (3 << 8)) | (1 << 3),
    # cloud confidence medium only: cloud bit stays 0, clear stays 1 (USGS semantics)
    Condition.CLOUD_MEDIUM: (_QA_LOW_CONFIDENCES & ~(3 << 8) | (2 << 8)) | _QA_CLEAR,
    # dilated cloud bit 1, NOT clear
    Condition.CLOUD_DILATED_RING: _QA_LOW_CONFIDENCES | (1 << 1),
    # shadow bit 4, shadow confidence high, clear
    Condition.SHADOW: (_QA_LOW_CONFIDENCES | (3 << 10)) | _QA_CLEAR | (1 << 4),
    # cirrus bit 2, cirrus confidence high, clear
    Condition.CIRRUS: (_QA_LOW_CONFIDENCES | (3 << 14)) | _QA_CLEAR | (1 << 2),
}

#: oa_fmask value per condition (DEA fmask folds medium-confidence cloud, the dilation ring and
#: cirrus into "cloud").
FMASK_BY_CONDITION: dict[Condition, int] = {
    Condition.NODATA: 0,
    Condition.CLEAR_LAND: 1,
    Condition.WATER: 5,
    Condition.SNOW: 4,
    Condition.CLOUD_HIGH: 2,
    Condition.CLOUD_MEDIUM: 2,
    Condition.CLOUD_DILATED_RING: 2,
    Condition.SHADOW: 3,
    Condition.CIRRUS: 2,
}

_QA_LUT = np.array([QA_PIXEL_BY_CONDITION[c] for c in Condition], dtype=np.uint16)
_FMASK_LUT = np.array([FMASK_BY_CONDITION[c] for c in Condition], dtype=np.uint8)


def encode_qa_pixel(condition: np.ndarray, water: np.ndarray) -> np.ndarray:
    """USGS C2 ``qa_pixel`` for condition codes; ``water`` (surface is water) sets bit 7.

    The water bit ("0: land_or_cloud") is set for water surfaces under every condition except
    NODATA and CLOUD_HIGH, as in real C2 products (e.g. 21890 dilated cloud over water).
    """
    condition = np.asarray(condition)
    qa = _QA_LUT[condition]
    wbit = np.asarray(water, dtype=bool) & (condition != Condition.NODATA)
    wbit &= condition != Condition.CLOUD_HIGH
    return qa | (wbit.astype(np.uint16) << np.uint16(7))


def encode_fmask(condition: np.ndarray) -> np.ndarray:
    """DEA ``oa_fmask`` enumeration for condition codes."""
    return _FMASK_LUT[np.asarray(condition)]


@dataclass(frozen=True)
class _FlavourInfo:
    product: str
    red: str
    nir: str
    mask: str
    dtype: str
    nodata: int
    scale: float
    offset: float
    dn_min: int
    dn_max: int
    mask_dtype: str
    mask_nodata: int
    product_family: str
    producer: str


def _flavour(preset: str, **encoding: Any) -> _FlavourInfo:
    """A flavour's bands and reflectance scaling are its preset's (one place for those
    facts: odc_ndvi_plugin/presets.py); the rest is how the generator encodes files."""
    p = PRESETS[preset]
    scale, offset = p.reflectance_scaling
    return _FlavourInfo(
        red=p.red_band, nir=p.nir_band, mask=p.mask_band, scale=scale, offset=offset, **encoding
    )


_FLAVOUR_INFO: dict[str, _FlavourInfo] = {
    "usgs_c2": _flavour(
        "usgs_c2",
        product="ls_c2l2_sr",
        dtype="uint16",
        nodata=0,
        dn_min=1,
        dn_max=65535,
        mask_dtype="uint16",
        mask_nodata=1,
        product_family="sr",
        producer="usgs.gov",
    ),
    "dea_ard": _flavour(
        "dea_ard",
        product="ga_ls_ard_3",
        dtype="int16",
        nodata=-999,
        dn_min=-998,
        dn_max=32767,
        mask_dtype="uint8",
        mask_nodata=0,
        product_family="ard",
        producer="ga.gov.au",  # the input product's producer (DEA's ARD), not ours
    ),
}

#: Product name per flavour.
PRODUCT_NAMES: dict[str, str] = {k: v.product for k, v in _FLAVOUR_INFO.items()}
#: Measurement names per flavour: (red, nir, mask).
MEASUREMENTS: dict[str, tuple[str, str, str]] = {
    k: (v.red, v.nir, v.mask) for k, v in _FLAVOUR_INFO.items()
}


def _encode_reflectance(info: _FlavourInfo, rho: np.ndarray) -> np.ndarray:
    dn = np.round((rho - info.offset) / info.scale)
    return np.clip(dn, info.dn_min, info.dn_max).astype(info.dtype)


def decode(flavour: Flavour, dn: np.ndarray) -> np.ndarray:
    """Reflectance (float64) from stored DNs: ``DN * scale + offset``; NaN where nodata."""
    info = _FLAVOUR_INFO[flavour]
    dn = np.asarray(dn)
    out = dn.astype(np.float64) * info.scale + info.offset
    out[dn == info.nodata] = np.nan
    return out


def product_definition_path(flavour: Flavour) -> Path:
    """The product definition yaml of a flavour in this source tree (``cfg/products``)."""
    path = cfg_dir() / "products" / f"{_FLAVOUR_INFO[flavour].product}.odc-product.yaml"
    if not path.exists():
        raise FileNotFoundError(f"product definition not found: {path}")
    return path


# --- specification -----------------------------------------------------------------------------


def _date(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


@dataclass(frozen=True, kw_only=True)
class ArchiveSpec:
    """Everything that defines a synthetic archive (the archive is a pure function of it).

    The region is given on the tiling grid (``TILE_CRS``, ``resolution`` metres, origin 0,0):
    ``x0``/``y0`` are the left/top edges in metres, multiples of ``resolution``. ``tile_px`` is the
    odc-stats tile size the region was laid out for (grid ``"epsg:3577;30;<tile_px>"``).
    """

    flavour: Flavour = "usgs_c2"
    crs: str = TILE_CRS
    resolution: int = 30
    x0: float = DEFAULT_ANCHOR[0]
    y0: float = DEFAULT_ANCHOR[1]
    width_px: int = 128
    height_px: int = 64
    tile_px: int = 64
    start: dt.date = dt.date(2019, 12, 5)
    end: dt.date = dt.date(2020, 11, 30)
    revisit_days: int = 16
    n_paths: int = 2
    rows_per_path: int = 1
    first_path: int = 91
    first_row: int = 85
    seed: int = 42
    cloudiness: float = 0.3
    platform: str = "landsat-8"
    # opt-in hard cases (see the module docstring); at their defaults they are left out of
    # to_dict(), so the spec file and the digest (in every dataset id) stay what they were
    #: each scene of a day scales its red and NIR by its own factors 1 -/+ spread * t
    #: (t spread evenly over (-1, 1) in an order shuffled per day): overlaps disagree
    same_day_spread: float = 0.0
    #: fraction of each scene's pixels stored as nodata in red (first two thirds of it) and
    #: NIR (last two thirds; both in the middle third), the mask band left as it is
    band_nodata_fraction: float = 0.0
    #: solar dates observed besides the revisit series (within start..end)
    extra_dates: tuple[dt.date, ...] = ()
    #: every scene of a day has the same centre time (else 45 s per path, 24 s per row)
    simultaneous_scenes: bool = False
    #: multi-year worlds (climatologies): the product name, for a second sensor's archive
    #: (e.g. ``ls7_c2l2_sr`` beside ``ls_c2l2_sr``); "" = the flavour's
    product_name: str = ""
    #: the sensor sees surface NDVI as ``gain * NDVI + offset`` (a sensor difference that
    #: ``plugin_config.ndvi_adjust`` undoes with ``[1 / gain, -offset / gain]``)
    ndvi_gain: tuple[float, float] = (1.0, 0.0)
    #: ``(first_date, last_date, row0, col0, row1, col1, delta)``: surface NDVI lowered by
    #: ``delta`` on those solar dates in that window of the region (global pixel rows/cols)
    droughts: tuple[tuple[Any, ...], ...] = ()
    #: ``(first_date, last_date, row0, col0, row1, col1)``: high-confidence cloud there
    #: on those dates (pixels with few clear years)
    overcast: tuple[tuple[Any, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _date(self.start))
        object.__setattr__(self, "end", _date(self.end))
        extra = tuple(sorted({_date(d) for d in self.extra_dates}))
        object.__setattr__(self, "extra_dates", extra)
        for name in ("droughts", "overcast"):
            events = tuple(
                (_date(e[0]), _date(e[1]), *(int(v) for v in e[2:6]), *(float(v) for v in e[6:]))
                for e in getattr(self, name)
            )
            object.__setattr__(self, name, events)
        object.__setattr__(self, "ndvi_gain", tuple(float(v) for v in self.ndvi_gain))
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {self.flavour!r}")
        if self.resolution <= 0:
            raise ValueError("resolution must be positive")
        for name in ("x0", "y0"):
            v = getattr(self, name) / self.resolution
            if v != round(v):
                raise ValueError(f"{name} must be a multiple of the resolution ({self.resolution})")
        if min(self.width_px, self.height_px, self.tile_px) <= 0:
            raise ValueError("width_px, height_px and tile_px must be positive")
        if self.end < self.start:
            raise ValueError("end is before start")
        if self.revisit_days < 1 or self.n_paths < 1 or self.rows_per_path < 1:
            raise ValueError("revisit_days, n_paths and rows_per_path must be >= 1")
        if not 0.0 <= self.cloudiness <= 1.0:
            raise ValueError("cloudiness must be within [0, 1]")
        if not 0.0 <= self.same_day_spread <= 0.5:
            raise ValueError("same_day_spread must be within [0, 0.5]")
        if not 0.0 <= self.band_nodata_fraction < 1.0:
            raise ValueError("band_nodata_fraction must be within [0, 1)")
        if any(not self.start <= d <= self.end for d in extra):
            raise ValueError("extra_dates must lie within start..end")

    # presets ---------------------------------------------------------------------------------

    @classmethod
    def for_tiles(
        cls,
        *,
        tiles: tuple[int, int] = (2, 1),
        tile_px: int = 64,
        anchor: tuple[float, float] = DEFAULT_ANCHOR,
        **kwargs: Any,
    ) -> ArchiveSpec:
        """A region of ``tiles`` = (nx, ny) whole odc-stats tiles whose top-left tile contains
        ``anchor`` (EPSG:3577 metres)."""
        res = int(kwargs.get("resolution", 30))
        tile_m = tile_px * res
        nx, ny = tiles
        if nx < 1 or ny < 1:
            raise ValueError("tiles must be at least 1x1")
        x0 = math.floor(anchor[0] / tile_m) * tile_m
        y0 = math.ceil(anchor[1] / tile_m) * tile_m
        return cls(
            x0=float(x0),
            y0=float(y0),
            width_px=nx * tile_px,
            height_px=ny * tile_px,
            tile_px=tile_px,
            **kwargs,
        )

    @classmethod
    def tiny(
        cls,
        *,
        tiles: tuple[int, int] = (2, 1),
        tile_px: int = 64,
        **kwargs: Any,
    ) -> ArchiveSpec:
        """Test preset: 2x1 tiles of 64 px, 12 dates every 32 days from 2019-12-05 to
        2020-11-21 (every meteorological season, DJF across the year boundary, has three),
        2 paths x 2 rows (4 overlapping scenes a day)."""
        opts: dict[str, Any] = dict(
            start=dt.date(2019, 12, 5),
            end=dt.date(2020, 11, 30),
            revisit_days=32,
            rows_per_path=2,
            cloudiness=0.3,
        )
        opts.update(kwargs)
        return cls.for_tiles(tiles=tiles, tile_px=tile_px, **opts)

    @classmethod
    def demo(
        cls,
        *,
        tiles: tuple[int, int] = (2, 2),
        tile_px: int = 512,
        **kwargs: Any,
    ) -> ArchiveSpec:
        """Demo preset: 2x2 tiles of 512 px, one season-year (2019-12-03 .. 2020-11-19) at the
        16-day revisit (23 dates) x 2 paths = 46 scenes."""
        opts: dict[str, Any] = dict(
            start=dt.date(2019, 12, 3),
            end=dt.date(2020, 11, 30),
            revisit_days=16,
            rows_per_path=1,
            cloudiness=0.25,
        )
        opts.update(kwargs)
        return cls.for_tiles(tiles=tiles, tile_px=tile_px, **opts)

    # derived ---------------------------------------------------------------------------------

    @property
    def product(self) -> str:
        return self.product_name or _FLAVOUR_INFO[self.flavour].product

    @property
    def measurements(self) -> tuple[str, str, str]:
        """(red, nir, mask) measurement names of the flavour."""
        return MEASUREMENTS[self.flavour]

    @property
    def dates(self) -> tuple[dt.date, ...]:
        """Solar dates of the acquisitions."""
        n = (self.end - self.start).days // self.revisit_days + 1
        regular = tuple(self.start + dt.timedelta(days=i * self.revisit_days) for i in range(n))
        if not self.extra_dates:
            return regular
        return tuple(sorted(set(regular) | set(self.extra_dates)))

    @property
    def exact(self) -> bool:
        """True when scenes are on the tiling grid itself (truth is exact)."""
        return _same_crs(self.crs, TILE_CRS)

    @property
    def gridspec(self) -> str:
        """odc-stats custom grid string, e.g. ``"epsg:3577;30;64"``."""
        return f"{TILE_CRS.lower()};{self.resolution};{self.tile_px}"

    @property
    def region_geobox(self) -> GeoBox:
        """The region on the tiling grid (EPSG:3577)."""
        r = self.resolution
        return GeoBox(
            (self.height_px, self.width_px), Affine(r, 0, self.x0, 0, -r, self.y0), TILE_CRS
        )

    def tiles(self) -> dict[tuple[int, int], GeoBox]:
        """odc-stats tile index (x, y) -> tile GeoBox for the tiles intersecting the region."""
        from odc.geo import xy_
        from odc.geo.gridspec import GridSpec

        gs = GridSpec(TILE_CRS, (self.tile_px, self.tile_px), self.resolution, origin=xy_(0, 0))
        tm = self.tile_px * self.resolution
        x1 = self.x0 + self.width_px * self.resolution
        y1 = self.y0 - self.height_px * self.resolution
        out = {}
        for iy in range(math.floor(y1 / tm), math.ceil(self.y0 / tm)):
            for ix in range(math.floor(self.x0 / tm), math.ceil(x1 / tm)):
                out[(ix, iy)] = gs.tile_geobox((ix, iy))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        d["extra_dates"] = [x.isoformat() for x in self.extra_dates]
        for name in ("droughts", "overcast"):
            d[name] = [[e[0].isoformat(), e[1].isoformat(), *e[2:]] for e in getattr(self, name)]
        d["ndvi_gain"] = list(self.ndvi_gain)
        for f in dataclasses.fields(self):
            if f.name in _OPT_IN_FIELDS and getattr(self, f.name) == f.default:
                del d[f.name]
        return d

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ArchiveSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def digest(self) -> str:
        """Short stable fingerprint of the spec (part of every dataset UUID)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


#: ArchiveSpec fields added after archives were in use: omitted from to_dict() at their defaults
_OPT_IN_FIELDS = frozenset(
    {
        "same_day_spread",
        "band_nodata_fraction",
        "extra_dates",
        "simultaneous_scenes",
        "product_name",
        "ndvi_gain",
        "droughts",
        "overcast",
    }
)


def _same_crs(a: Any, b: Any) -> bool:
    from odc.geo.crs import CRS

    return CRS(a) == CRS(b)


# --- deterministic noise -----------------------------------------------------------------------

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# Standard deviation of the unit-weight value noise below (smoothstep bilinear interpolation of
# uniform[-1, 1] lattice values): sqrt(1/3) * E[(1-s)^2 + s^2] with s = smoothstep(t), t ~ U(0, 1)
# (= sqrt(1/3) * 26/35); used to normalise fractal fields.
_VALUE_NOISE_STD = math.sqrt(1.0 / 3.0) * 26.0 / 35.0


def _key(*parts: Any) -> np.uint64:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _hash_uniform(key: np.uint64, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per (row, col) integer pair; shape (len(rows), len(cols))."""
    with np.errstate(over="ignore"):
        r = _mix(rows.astype(np.int64).astype(np.uint64) * _C1 + key)
        c = cols.astype(np.int64).astype(np.uint64) * _C2
        x = _mix(r[:, None] ^ c[None, :])
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _axis(idx: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    f = (idx.astype(np.float64) + 0.5) / cell
    i = np.floor(f)
    t = f - i
    return i.astype(np.int64), t * t * (3.0 - 2.0 * t)


def _value_noise(key: np.uint64, rows: np.ndarray, cols: np.ndarray, cell: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] at global pixel indices (separable bilinear, smoothstep)."""
    iy, sy = _axis(rows, cell)
    ix, sx = _axis(cols, cell)
    ly = np.arange(iy.min(), iy.max() + 2)
    lx = np.arange(ix.min(), ix.max() + 2)
    lat = _hash_uniform(key, ly, lx) * 2.0 - 1.0
    jx = ix - lx[0]
    a = lat[:, jx] * (1.0 - sx) + lat[:, jx + 1] * sx
    jy = iy - ly[0]
    return a[jy] * (1.0 - sy)[:, None] + a[jy + 1] * sy[:, None]


def _fractal(
    key: tuple[Any, ...],
    rows: np.ndarray,
    cols: np.ndarray,
    octaves: Sequence[tuple[int, float]],
) -> np.ndarray:
    """Sum of value-noise octaves (cell px, weight), normalised to roughly unit variance."""
    out = np.zeros((rows.size, cols.size))
    for i, (cell, weight) in enumerate(octaves):
        out += weight * _value_noise(_key(*key, i), rows, cols, cell)
    norm = _VALUE_NOISE_STD * math.sqrt(sum(w * w for _, w in octaves))
    return out / norm


# --- surface & atmosphere model ----------------------------------------------------------------

# per class: (mean NDVI, seasonal amplitude, day of year of the NDVI peak, base red reflectance)
# southern hemisphere: winter crops and pastures green up in late winter / spring.
_CLASS_PARAMS: dict[LandCover, tuple[float, float, float, float]] = {
    LandCover.WATER: (-0.30, 0.05, 30.0, 0.035),
    LandCover.FOREST: (0.72, 0.05, 30.0, 0.030),
    LandCover.CROP: (0.42, 0.30, 265.0, 0.045),
    LandCover.GRASSLAND: (0.45, 0.18, 250.0, 0.055),
    LandCover.BARE_URBAN: (0.10, 0.03, 0.0, 0.140),
}
_CLOUD_RED, _CLOUD_NIR = 0.42, 0.45
_SNOW_RED, _SNOW_NIR = 0.78, 0.72
_SHADOW_FACTOR = 0.35
_SNOW_PEAK_DOY = 215.0


@dataclass(frozen=True)
class _Static:
    landcover: np.ndarray  # uint8 LandCover
    elevation: np.ndarray  # ~N(0, 1)
    ndvi_offset: np.ndarray  # fixed per-pixel NDVI perturbation
    red_factor: np.ndarray  # fixed per-pixel red multiplier


@dataclass(frozen=True)
class _DateFields:
    red: np.ndarray  # float64 top-of-stack reflectance (before quantisation)
    nir: np.ndarray
    condition: np.ndarray  # uint8 Condition (never NODATA here)
    water: np.ndarray  # bool


def _static_fields(seed: int, rows: np.ndarray, cols: np.ndarray) -> _Static:
    elev = _fractal((seed, "elevation"), rows, cols, ((96, 1.0), (32, 0.5), (12, 0.25)))
    moist = _fractal((seed, "moisture"), rows, cols, ((48, 1.0), (16, 0.45)))
    lc = np.full(elev.shape, LandCover.GRASSLAND, dtype=np.uint8)
    lc[moist > 0.35] = LandCover.CROP
    lc[moist < -0.9] = LandCover.BARE_URBAN
    lc[elev > 0.55] = LandCover.FOREST
    lc[elev < -1.4] = LandCover.WATER
    u1 = _hash_uniform(_key(seed, "ndvi_offset"), rows, cols)
    u2 = _hash_uniform(_key(seed, "red_factor"), rows, cols)
    return _Static(lc, elev, 0.08 * (u1 - 0.5), 1.0 + 0.3 * (u2 - 0.5))


def _date_params(seed: int, cloudiness: float, day: dt.date) -> dict[str, float]:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, day.toordinal(), 7])
    frac = min(0.9, cloudiness * float(rng.exponential(1.0)))
    cirrus = float(rng.random()) < 0.35
    return {
        "cloud_fraction": frac,
        "shadow_dx": -float(rng.integers(6, 15)),  # morning sun from the north-east:
        "shadow_dy": float(rng.integers(5, 13)),  # shadows fall to the south-west
        "cirrus_fraction": 0.15 if cirrus else 0.0,
    }


def _threshold(fraction: float) -> float:
    if fraction <= 0.0:
        return math.inf
    return NormalDist().inv_cdf(1.0 - fraction)


def _in_window(rows: np.ndarray, cols: np.ndarray, r0: int, c0: int, r1: int, c1: int):
    """Boolean (rows x cols) grid: inside rows [r0, r1) and cols [c0, c1)."""
    return ((rows >= r0) & (rows < r1))[:, None] & ((cols >= c0) & (cols < c1))[None, :]


def _date_fields(
    spec: ArchiveSpec, day: dt.date, rows: np.ndarray, cols: np.ndarray, static: _Static
) -> _DateFields:
    seed, doy = spec.seed, day.timetuple().tm_yday
    p = _date_params(seed, spec.cloudiness, day)
    lc = static.landcover
    water = lc == LandCover.WATER

    # surface NDVI and reflectance
    ndvi = np.zeros(lc.shape)
    base_red = np.zeros(lc.shape)
    peak = np.zeros(lc.shape)
    for cls_, (a, b, phase, red0) in _CLASS_PARAMS.items():
        sel = lc == cls_
        season = a + b * math.cos(2.0 * math.pi * (doy - phase) / 365.25)
        ndvi[sel] = season
        base_red[sel] = red0
        peak[sel] = a + b
    jitter = _hash_uniform(_key(seed, "sensor", day.toordinal()), rows, cols) - 0.5
    ndvi = ndvi + static.ndvi_offset + 0.02 * jitter
    for first, last, r0, c0, r1, c1, delta in spec.droughts:
        if first <= day <= last:
            ndvi = ndvi - delta * _in_window(rows, cols, r0, c0, r1, c1)
    ndvi = np.clip(ndvi, -0.6, 0.92)
    if spec.ndvi_gain != (1.0, 0.0):
        ndvi = np.clip(spec.ndvi_gain[0] * ndvi + spec.ndvi_gain[1], -0.6, 0.95)
    red = base_red * static.red_factor * (1.0 + 1.2 * np.maximum(peak - ndvi, 0.0))
    nir = red * (1.0 + ndvi) / (1.0 - ndvi)

    cond = np.full(lc.shape, Condition.CLEAR_LAND, dtype=np.uint8)
    cond[water] = Condition.WATER

    # snow on high ground in winter, patchy, never on water
    reach = 1.15 + 0.025 * abs(doy - _SNOW_PEAK_DOY)
    if reach < 3.5:
        patch = _fractal((seed, "snow", day.toordinal()), rows, cols, ((24, 1.0),))
        snow = (static.elevation + 0.25 * patch > reach) & ~water
        cond[snow] = Condition.SNOW
        red = np.where(snow, _SNOW_RED + 0.04 * jitter, red)
        nir = np.where(snow, _SNOW_NIR + 0.04 * jitter, nir)

    # clouds: one smooth field per date; level sets give core, dilation ring and medium fringe
    octaves = ((40, 1.0), (14, 0.4))
    t_high = _threshold(p["cloud_fraction"])
    ckey = (seed, "cloud", day.toordinal())
    if math.isfinite(t_high):
        cloud = _fractal(ckey, rows, cols, octaves)
        shifted = _fractal(ckey, rows - int(p["shadow_dy"]), cols - int(p["shadow_dx"]), octaves)
        shadow = shifted > t_high - 0.15
        cond[shadow] = Condition.SHADOW
    else:
        cloud = None

    if p["cirrus_fraction"] > 0:
        cirrus_f = _fractal((seed, "cirrus", day.toordinal()), rows, cols, ((120, 1.0), (30, 0.3)))
        cirrus = cirrus_f > _threshold(p["cirrus_fraction"])
        cirrus &= cond != Condition.SHADOW
        cond[cirrus] = Condition.CIRRUS

    if cloud is not None:
        cond[cloud > t_high - 0.5] = Condition.CLOUD_MEDIUM
        cond[cloud > t_high - 0.15] = Condition.CLOUD_DILATED_RING
        cond[cloud > t_high] = Condition.CLOUD_HIGH
    for first, last, r0, c0, r1, c1 in spec.overcast:
        if first <= day <= last:
            overcast = _in_window(rows, cols, r0, c0, r1, c1)
            cond[overcast] = Condition.CLOUD_HIGH
            if cloud is None:
                cloud = np.full(lc.shape, -np.inf)
                t_high = 0.0
            cloud = np.where(overcast, np.maximum(cloud, t_high + 0.3), cloud)

    # atmospheric effects follow the final condition
    sh = cond == Condition.SHADOW
    red = np.where(sh, red * _SHADOW_FACTOR, red)
    nir = np.where(sh, nir * _SHADOW_FACTOR, nir)
    ci = cond == Condition.CIRRUS
    red = np.where(ci, red + 0.03, red)
    nir = np.where(ci, nir + 0.025, nir)
    if cloud is not None:
        alpha = np.zeros(lc.shape)
        alpha = np.where(cond == Condition.CLOUD_MEDIUM, 0.25 + 0.1 * jitter, alpha)
        alpha = np.where(cond == Condition.CLOUD_DILATED_RING, 0.12, alpha)
        alpha = np.where(
            cond == Condition.CLOUD_HIGH,
            0.6 + 0.4 * np.clip((cloud - t_high) / 0.6, 0.0, 1.0),
            alpha,
        )
        red = (1.0 - alpha) * red + alpha * (_CLOUD_RED + 0.05 * jitter)
        nir = (1.0 - alpha) * nir + alpha * (_CLOUD_NIR + 0.05 * jitter)
    return _DateFields(red, nir, cond, water)


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


# --- truth -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SceneTruth:
    """What one scene stores on an output geobox.

    ``red``/``nir`` are the decoded stored reflectances (DN * scale + offset, float64) and NaN
    where the scene has no data; ``condition`` holds :class:`Condition` codes (NODATA outside the
    footprint); ``water`` is the static water surface (drives the qa_pixel water bit).
    """

    scene: Scene
    red: np.ndarray
    nir: np.ndarray
    condition: np.ndarray
    water: np.ndarray

    @property
    def solar_date(self) -> dt.date:
        return self.scene.solar_date

    @property
    def valid(self) -> np.ndarray:
        return self.condition != Condition.NODATA

    def clear(self, bad: Iterable[Condition]) -> np.ndarray:
        """Valid pixels whose condition is not in ``bad``."""
        return self.valid & ~np.isin(self.condition, [int(c) for c in bad])


@dataclass(frozen=True, eq=False)
class DayTruth:
    """All scenes of one solar day fused: where footprints overlap, the earliest scene by
    (centre time, dataset id). Overlaps store identical values unless the spec opts in to
    ``same_day_spread`` or ``band_nodata_fraction``; then judge per scene
    (:attr:`Truth.scenes`) with the rules of the code under test."""

    solar_date: dt.date
    scenes: tuple[SceneTruth, ...]
    red: np.ndarray
    nir: np.ndarray
    condition: np.ndarray
    water: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.condition != Condition.NODATA

    def clear(self, bad: Iterable[Condition]) -> np.ndarray:
        return self.valid & ~np.isin(self.condition, [int(c) for c in bad])


@dataclass(frozen=True, eq=False)
class Truth:
    """Ground truth of an archive on an output geobox."""

    geobox: GeoBox
    exact: bool
    scenes: tuple[SceneTruth, ...]
    landcover: np.ndarray  # uint8 LandCover, 255 outside the region

    def scenes_for(self, scene: Scene | str) -> tuple[SceneTruth, ...]:
        """The truth of one scene (by :class:`Scene` or name); empty if it misses the geobox."""
        name = scene if isinstance(scene, str) else scene.name
        return tuple(s for s in self.scenes if s.scene.name == name)

    def days(self) -> tuple[DayTruth, ...]:
        """Per solar day, scenes fused (first valid observation by centre time, id wins)."""
        out: list[DayTruth] = []
        for day in sorted({s.solar_date for s in self.scenes}):
            group = tuple(
                sorted(
                    (s for s in self.scenes if s.solar_date == day),
                    key=lambda s: (s.scene.datetime, str(s.scene.id)),
                )
            )
            red = np.full(self.geobox.shape, np.nan)
            nir = red.copy()
            cond = np.zeros(self.geobox.shape, dtype=np.uint8)
            water = np.zeros(self.geobox.shape, dtype=bool)
            for s in group:
                take = (cond == Condition.NODATA) & s.valid
                red[take], nir[take] = s.red[take], s.nir[take]
                cond[take], water[take] = s.condition[take], s.water[take]
            out.append(DayTruth(day, group, red, nir, cond, water))
        return tuple(out)


# --- archive -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """A planned or written synthetic archive."""

    spec: ArchiveSpec
    root: Path
    scenes: tuple[Scene, ...]
    product_definition: Path

    @property
    def product(self) -> str:
        return self.spec.product

    @property
    def dataset_paths(self) -> list[Path]:
        return [s.dataset_yaml for s in self.scenes]

    @property
    def solar_dates(self) -> tuple[dt.date, ...]:
        return tuple(sorted({s.solar_date for s in self.scenes}))

    def tiles(self) -> dict[tuple[int, int], GeoBox]:
        """odc-stats tile index -> GeoBox of the tiles covering the region."""
        return self.spec.tiles()

    @cached_property
    def _grid_layout(self) -> _Layout:
        return _layout(self.spec)

    def truth(self, geobox: GeoBox, *, dates: Iterable[dt.date] | None = None) -> Truth:
        """Regenerate (from the spec, not the files) what every scene stores on ``geobox``.

        Exact when ``geobox`` is on the scene grid (same CRS and resolution, integer pixel
        offset); otherwise scenes are reprojected with nearest-neighbour (approximate)."""
        want = None if dates is None else {_date(d) for d in dates}
        scenes = [s for s in self.scenes if want is None or s.solar_date in want]
        grid = self._grid_layout.grid
        offs = _aligned_offset(grid, geobox)
        if offs is not None:
            return self._truth_exact(geobox, offs, scenes)
        return self._truth_reprojected(geobox, scenes)

    def _window_arrays(
        self, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[_Static, Callable[[dt.date], _DateFields]]:
        static = _static_fields(self.spec.seed, rows, cols)
        return static, lambda d: _date_fields(self.spec, d, rows, cols, static)

    def _scene_truth(
        self,
        scene: Scene,
        fields: _DateFields,
        sl: tuple[slice, slice],
        fp: np.ndarray,
        shape: tuple[int, int],
        rows: np.ndarray,
        cols: np.ndarray,
    ) -> SceneTruth:
        info = _FLAVOUR_INFO[self.spec.flavour]
        red = np.full(shape, np.nan)
        nir = np.full(shape, np.nan)
        cond = np.zeros(shape, dtype=np.uint8)
        water = np.zeros(shape, dtype=bool)
        dn_red, dn_nir = _scene_dns(self.spec, scene, fields, sl, rows, cols)
        f_red = np.where(dn_red == info.nodata, np.nan, dn_red * info.scale + info.offset)
        f_nir = np.where(dn_nir == info.nodata, np.nan, dn_nir * info.scale + info.offset)
        red[sl] = np.where(fp, f_red, np.nan)
        nir[sl] = np.where(fp, f_nir, np.nan)
        cond[sl] = np.where(fp, fields.condition[sl], Condition.NODATA)
        water[sl] = fields.water[sl]
        return SceneTruth(scene, red, nir, cond, water)

    def _truth_exact(self, geobox: GeoBox, offs: tuple[int, int], scenes: list[Scene]) -> Truth:
        gr0, gc0 = offs
        h, w = geobox.shape
        rows = np.arange(gr0, gr0 + h)
        cols = np.arange(gc0, gc0 + w)
        static, fields_for = self._window_arrays(rows, cols)
        gh, gw = self._grid_layout.grid.shape
        inside = (rows[:, None] >= 0) & (rows[:, None] < gh) & (cols >= 0) & (cols < gw)
        lc = np.where(inside, static.landcover, 255).astype(np.uint8)
        out: list[SceneTruth] = []
        cache: dict[dt.date, _DateFields] = {}
        for s in scenes:
            r0, c0, sh, sw = s.window
            ir0, ir1 = max(r0, gr0), min(r0 + sh, gr0 + h)
            ic0, ic1 = max(c0, gc0), min(c0 + sw, gc0 + w)
            if ir0 >= ir1 or ic0 >= ic1:
                continue
            if s.solar_date not in cache:
                cache = {s.solar_date: fields_for(s.solar_date)}
            sl = (slice(ir0 - gr0, ir1 - gr0), slice(ic0 - gc0, ic1 - gc0))
            fp = s.footprint_mask[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0]
            out.append(
                self._scene_truth(
                    s, cache[s.solar_date], sl, fp, (h, w), np.arange(ir0, ir1), np.arange(ic0, ic1)
                )
            )
        return Truth(geobox, self.spec.exact, tuple(out), lc)

    def _truth_reprojected(self, geobox: GeoBox, scenes: list[Scene]) -> Truth:
        from rasterio.warp import Resampling, reproject

        grid = self._grid_layout.grid
        res = self.spec.resolution
        gh, gw = grid.shape
        bb = geobox.extent.to_crs(grid.crs, resolution=res).boundingbox
        inv = ~grid.affine
        xs, ys = zip(
            *(inv * (x, y) for x in (bb.left, bb.right) for y in (bb.bottom, bb.top)), strict=True
        )
        wr0, wr1 = max(0, math.floor(min(ys)) - 2), min(gh, math.ceil(max(ys)) + 2)
        wc0, wc1 = max(0, math.floor(min(xs)) - 2), min(gw, math.ceil(max(xs)) + 2)
        h, w = geobox.shape
        lc_out = np.full((h, w), 255, dtype=np.uint8)
        out: list[SceneTruth] = []
        if wr0 >= wr1 or wc0 >= wc1:
            return Truth(geobox, False, (), lc_out)
        rows, cols = np.arange(wr0, wr1), np.arange(wc0, wc1)
        static, fields_for = self._window_arrays(rows, cols)
        src_aff = grid.affine * Affine.translation(wc0, wr0)
        reproject(
            static.landcover,
            lc_out,
            src_transform=src_aff,
            src_crs=str(grid.crs),
            dst_transform=geobox.affine,
            dst_crs=str(geobox.crs),
            resampling=Resampling.nearest,
            src_nodata=255,
            dst_nodata=255,
        )
        cache: dict[dt.date, _DateFields] = {}
        shape = (wr1 - wr0, wc1 - wc0)
        for s in scenes:
            r0, c0, sh, sw = s.window
            ir0, ir1 = max(r0, wr0), min(r0 + sh, wr1)
            ic0, ic1 = max(c0, wc0), min(c0 + sw, wc1)
            if ir0 >= ir1 or ic0 >= ic1:
                continue
            if s.solar_date not in cache:
                cache = {s.solar_date: fields_for(s.solar_date)}
            sl = (slice(ir0 - wr0, ir1 - wr0), slice(ic0 - wc0, ic1 - wc0))
            fp = s.footprint_mask[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0]
            st = self._scene_truth(
                s, cache[s.solar_date], sl, fp, shape, np.arange(ir0, ir1), np.arange(ic0, ic1)
            )
            src = np.stack(
                [
                    st.red,
                    st.nir,
                    np.where(st.valid, st.condition, np.nan),
                    np.where(st.valid, st.water, np.nan),
                ]
            )
            dst = np.full((4, h, w), np.nan)
            reproject(
                src,
                dst,
                src_transform=src_aff,
                src_crs=str(grid.crs),
                dst_transform=geobox.affine,
                dst_crs=str(geobox.crs),
                resampling=Resampling.nearest,
                src_nodata=np.nan,
                dst_nodata=np.nan,
            )
            valid = ~np.isnan(dst[2])
            if not valid.any():
                continue
            cond = np.where(valid, np.nan_to_num(dst[2]), 0).astype(np.uint8)
            water = np.where(valid, np.nan_to_num(dst[3]), 0).astype(bool)
            out.append(SceneTruth(s, dst[0], dst[1], cond, water))
        return Truth(geobox, False, tuple(out), lc_out)


def _aligned_offset(grid: GeoBox, geobox: GeoBox) -> tuple[int, int] | None:
    """(row, col) offset of ``geobox`` on ``grid`` if pixel-aligned, else None."""
    if not _same_crs(grid.crs, geobox.crs):
        return None
    a, b = grid.affine, geobox.affine
    if (a.a, a.b, a.d, a.e) != (b.a, b.b, b.d, b.e):
        return None
    col = (b.c - a.c) / a.a
    row = (b.f - a.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


# --- writing -----------------------------------------------------------------------------------


def plan_archive(spec: ArchiveSpec, out_dir: str | os.PathLike[str]) -> Archive:
    """The archive ``spec`` describes under ``out_dir``, without writing anything."""
    root = Path(out_dir)
    return Archive(
        spec=spec,
        root=root,
        scenes=_plan(spec, root),
        product_definition=root / f"{spec.product}.odc-product.yaml",
    )


def load_archive(out_dir: str | os.PathLike[str]) -> Archive:
    """Re-open an archive written by :func:`generate_archive` (reads its spec file only)."""
    root = Path(out_dir)
    doc = yaml.safe_load((root / SPEC_FILENAME).read_text())
    return plan_archive(ArchiveSpec.from_dict(doc["spec"]), root)


def _write_cog(path: Path, data: np.ndarray, gbox: GeoBox, nodata: float, resampling: str) -> None:
    import rasterio

    tmp = path.with_name(path.name + ".tmp")
    h, w = data.shape
    with rasterio.open(
        tmp,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=str(gbox.crs),
        transform=gbox.affine,
        nodata=nodata,
        compress="DEFLATE",
        predictor="YES",
        blocksize=256,
        overview_resampling=resampling,
    ) as ds:
        ds.write(data, 1)
    os.replace(tmp, path)


def _percent(mask: np.ndarray, valid_count: int) -> float:
    return round(100.0 * float(mask.sum()) / valid_count, 2) if valid_count else 0.0


def _dataset_doc(spec: ArchiveSpec, s: Scene, cond: np.ndarray) -> dict[str, Any]:
    valid = cond != Condition.NODATA
    n = int(valid.sum())
    cloudy = np.isin(
        cond,
        [
            Condition.CLOUD_HIGH,
            Condition.CLOUD_MEDIUM,
            Condition.CLOUD_DILATED_RING,
            Condition.CIRRUS,
        ],
    )
    a = s.geobox.affine
    h, w = s.geobox.shape
    props: dict[str, Any] = {
        "datetime": s.datetime.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "eo:platform": spec.platform,
        "eo:instrument": "OLI_TIRS",
        "eo:gsd": float(spec.resolution),
        "eo:cloud_cover": _percent(cloudy, n),
        "odc:file_format": "GeoTIFF",
        "odc:processing_datetime": (
            dt.datetime.combine(s.datetime.date() + dt.timedelta(days=16), dt.time(10, 0))
        ).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "odc:product_family": _FLAVOUR_INFO[spec.flavour].product_family,
        "odc:producer": _FLAVOUR_INFO[spec.flavour].producer,
        "odc:region_code": s.region_code,
        "landsat:wrs_path": s.wrs_path,
        "landsat:wrs_row": s.wrs_row,
    }
    if spec.flavour == "usgs_c2":
        props["landsat:collection_number"] = 2
        props["landsat:collection_category"] = "T1"
        props["landsat:landsat_product_id"] = s.name
    else:
        props["odc:dataset_version"] = "3.2.1"
        props["fmask:clear"] = _percent(cond == Condition.CLEAR_LAND, n)
        props["fmask:cloud"] = _percent(cloudy, n)
        props["fmask:cloud_shadow"] = _percent(cond == Condition.SHADOW, n)
        props["fmask:snow"] = _percent(cond == Condition.SNOW, n)
        props["fmask:water"] = _percent(cond == Condition.WATER, n)
    coords = [list(p) for p in s.footprint.exterior.coords]
    return {
        "$schema": DATASET_SCHEMA,
        "id": str(s.id),
        "label": s.name,
        "product": {"name": s.product},
        "crs": str(s.geobox.crs).lower(),
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "grids": {
            "default": {
                "shape": [h, w],
                "transform": [a.a, a.b, a.c, a.d, a.e, a.f, 0.0, 0.0, 1.0],
            }
        },
        "properties": props,
        "measurements": {m: {"path": f} for m, f in s.measurement_files},
        "lineage": {},
    }


class _DocDumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists, and digit-only strings always quoted."""


def _repr_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if value.isdigit() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _repr_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


def _repr_dict(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=False)


_DocDumper.add_representer(str, _repr_str)
_DocDumper.add_representer(list, _repr_list)
_DocDumper.add_representer(dict, _repr_dict)


def _dump_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_DocDumper, sort_keys=False, width=100)


def _write_scene(spec: ArchiveSpec, s: Scene, fields: _DateFields, sl: tuple[slice, slice]) -> None:
    info = _FLAVOUR_INFO[spec.flavour]
    fp = s.footprint_mask
    cond = np.where(fp, fields.condition[sl], Condition.NODATA).astype(np.uint8)
    r0, c0, h, w = s.window
    dn_red, dn_nir = _scene_dns(spec, s, fields, sl, np.arange(r0, r0 + h), np.arange(c0, c0 + w))
    red = np.where(fp, dn_red, info.nodata)
    nir = np.where(fp, dn_nir, info.nodata)
    if spec.flavour == "usgs_c2":
        mask = encode_qa_pixel(cond, fields.water[sl])
    else:
        mask = encode_fmask(cond)
    s.directory.mkdir(parents=True, exist_ok=True)
    files = dict(s.measurement_files)
    _write_cog(
        s.directory / files[info.red], red.astype(info.dtype), s.geobox, info.nodata, "average"
    )
    _write_cog(
        s.directory / files[info.nir], nir.astype(info.dtype), s.geobox, info.nodata, "average"
    )
    _write_cog(
        s.directory / files[info.mask],
        mask.astype(info.mask_dtype),
        s.geobox,
        info.mask_nodata,
        "nearest",
    )
    doc = _dataset_doc(spec, s, cond)
    tmp = s.dataset_yaml.with_name(s.dataset_yaml.name + ".tmp")
    tmp.write_text(_dump_yaml(doc))
    os.replace(tmp, s.dataset_yaml)  # the document last: its presence marks a complete scene


def generate_archive(
    spec: ArchiveSpec,
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
) -> Archive:
    """Write the archive (COGs, EO3 documents, product definition, spec) under ``out_dir``.

    Idempotent: scenes whose dataset document already exists are skipped. Refuses to write
    into a directory holding an archive of a different spec."""
    archive = plan_archive(spec, out_dir)
    root = archive.root
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / SPEC_FILENAME
    spec_doc = {"spec": spec.to_dict(), "product": spec.product}
    if spec_file.exists():
        old = yaml.safe_load(spec_file.read_text())
        if old.get("spec") != spec_doc["spec"]:
            raise ValueError(f"{root} holds a synthetic archive of a different spec")
    else:
        spec_file.write_text(yaml.safe_dump(spec_doc, sort_keys=False))
    if not archive.product_definition.exists():
        if spec.product_name:  # the flavour's definition under another name
            doc = yaml.safe_load(product_definition_path(spec.flavour).read_text())
            doc["name"] = spec.product
            doc.setdefault("metadata", {}).setdefault("product", {})["name"] = spec.product
            archive.product_definition.write_text(yaml.safe_dump(doc, sort_keys=False))
        else:
            shutil.copyfile(product_definition_path(spec.flavour), archive.product_definition)

    total, done = len(archive.scenes), 0
    by_day: dict[dt.date, list[Scene]] = {}
    for s in archive.scenes:
        by_day.setdefault(s.solar_date, []).append(s)
    for day, group in by_day.items():
        todo = [s for s in group if not s.dataset_yaml.exists()]
        todo_names = {s.name for s in todo}
        for s in group:
            if s.name not in todo_names:
                done += 1
                if progress:
                    progress(done, total, f"exists {s.name}")
        if not todo:
            continue
        r0 = min(s.window[0] for s in todo)
        c0 = min(s.window[1] for s in todo)
        r1 = max(s.window[0] + s.window[2] for s in todo)
        c1 = max(s.window[1] + s.window[3] for s in todo)
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        static = _static_fields(spec.seed, rows, cols)
        fields = _date_fields(spec, day, rows, cols, static)
        for s in todo:
            sr0, sc0, sh, sw = s.window
            sl = (slice(sr0 - r0, sr0 - r0 + sh), slice(sc0 - c0, sc0 - c0 + sw))
            _write_scene(spec, s, fields, sl)
            done += 1
            if progress:
                progress(done, total, f"wrote {s.name}")
    return archive


# --- command line ------------------------------------------------------------------------------


def _parse_tiles(_ctx: Any, _param: Any, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        nx, ny = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter("expected WxH, e.g. 2x2") from None
    return nx, ny


def _parse_date(_ctx: Any, param: Any, value: str | None) -> dt.date | None:
    from .._validate import ConfigError, check_date

    if value is None:
        return None
    try:
        return check_date(value, "")
    except ConfigError as err:
        raise click.BadParameter(err.problem) from None


def _parse_crs(_ctx: Any, _param: Any, value: str) -> str:
    """A projected CRS in metres (scenes are laid out in metres), as pyproj knows it."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(value)
    except CRSError:
        raise click.BadParameter(
            f"{value!r} is not a CRS that PROJ knows (e.g. EPSG:3577, EPSG:32755)"
        ) from None
    units = {axis.unit_name for axis in crs.axis_info}
    if not crs.is_projected or units != {"metre"}:
        raise click.BadParameter(
            f"{value!r} is not a projected CRS in metres (scenes are laid out in metres; "
            f"e.g. EPSG:3577, EPSG:32755)"
        )
    return value


@click.command("synth")
@click.option("--flavour", type=click.Choice(FLAVOURS), default="usgs_c2", show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output directory (re-running skips scenes already written).",
)
@click.option("--preset", type=click.Choice(["tiny", "demo"]), default="demo", show_default=True)
@click.option("--tiles", callback=_parse_tiles, help="Region size in tiles, WxH (e.g. 2x2).")
@click.option("--tile-px", type=int, help="odc-stats tile size in pixels (grid epsg:3577;30;N).")
@click.option("--start", callback=_parse_date, help="First solar date (YYYY-MM-DD).")
@click.option("--end", callback=_parse_date, help="Last solar date (YYYY-MM-DD).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--crs",
    default=TILE_CRS,
    show_default=True,
    callback=_parse_crs,
    help="Scene CRS; e.g. EPSG:32755 for UTM scenes (tiles stay in EPSG:3577).",
)
@click.option("--cloudiness", type=float, help="Mean cloud fraction per date (0..1).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def synth_command(
    flavour: Flavour,
    out_dir: str,
    preset: str,
    tiles: tuple[int, int] | None,
    tile_px: int | None,
    start: dt.date | None,
    end: dt.date | None,
    seed: int,
    crs: str,
    cloudiness: float | None,
    quiet: bool,
) -> None:
    """Generate a deterministic synthetic Landsat archive (COGs + EO3 documents)."""
    kwargs: dict[str, Any] = {"flavour": flavour, "seed": seed, "crs": crs}
    if tiles is not None:
        kwargs["tiles"] = tiles
    if tile_px is not None:
        kwargs["tile_px"] = tile_px
    if start is not None:
        kwargs["start"] = _date(start)
    if end is not None:
        kwargs["end"] = _date(end)
    if cloudiness is not None:
        kwargs["cloudiness"] = cloudiness
    factory = ArchiveSpec.tiny if preset == "tiny" else ArchiveSpec.demo
    try:
        spec = factory(**kwargs)
    except ValueError as e:
        raise click.UsageError(str(e)) from e

    def _progress(done: int, total: int, message: str) -> None:
        if done == total or done % 10 == 0:
            click.echo(f"[{done}/{total}] {message}", err=True)

    archive = generate_archive(spec, out_dir, progress=None if quiet else _progress)
    click.echo(
        f"{len(archive.scenes)} {archive.product} scenes on {len(archive.solar_dates)} solar days"
        f" in {archive.root}; product definition {archive.product_definition};"
        f" grid {spec.gridspec}; tiles {sorted(spec.tiles())}"
    )
