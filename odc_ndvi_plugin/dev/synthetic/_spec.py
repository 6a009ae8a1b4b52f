"""The archive's specification (:class:`ArchiveSpec`): region, dates, grid, flavour, seeds;
its presets (tiny, demo)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from affine import Affine
from odc.geo.geobox import GeoBox

from ._encodings import _FLAVOUR_INFO, DEFAULT_ANCHOR, FLAVOURS, MEASUREMENTS, TILE_CRS, Flavour

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
