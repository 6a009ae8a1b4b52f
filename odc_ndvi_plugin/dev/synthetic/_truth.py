"""What the archive holds, independently of the plugin: per scene, day and archive truth
(:class:`Truth`), and the :class:`Archive` that answers it."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from ._encodings import _FLAVOUR_INFO, Condition
from ._fields import _date_fields, _DateFields, _Static, _static_fields
from ._layout import Scene, _Layout, _layout, _scene_dns
from ._spec import ArchiveSpec, _date, _same_crs

# --- truth -------------------------------------------------------------------------------------


class _ConditionPlane:
    """Which pixels hold data and which are clear, from a ``condition`` plane of
    :class:`Condition` codes (shared by a scene's truth and a day's)."""

    condition: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.condition != Condition.NODATA

    def clear(self, bad: Iterable[Condition]) -> np.ndarray:
        """Valid pixels whose condition is not in ``bad``."""
        return self.valid & ~np.isin(self.condition, [int(c) for c in bad])


@dataclass(frozen=True, eq=False)
class SceneTruth(_ConditionPlane):
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


@dataclass(frozen=True, eq=False)
class DayTruth(_ConditionPlane):
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
