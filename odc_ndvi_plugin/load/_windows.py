"""Window maths of the direct loader, no file IO: where a destination block falls in a
scene's grid (and whether it is pixel-aligned: paste, no resampling), which part of that
window a file covers, which file blocks hold a pixel still needed. Pure functions of
transforms, shapes and masks, tested with short asserts."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import rasterio
import rasterio.env
import rasterio.warp
import rasterio.windows
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

__all__ = ["MAX_LOAD_BLOCK_PX"]


@lru_cache(maxsize=4096)
def _bounds_in(
    dst_crs: str, bbox: tuple[float, float, float, float], src_crs: str
) -> tuple[float, ...]:
    """A chunk's bounds in a scene's CRS; every scene of a path shares it, so cache it
    (it was a fifth of the warp path's time, recomputed per scene and day)."""
    return tuple(rasterio.warp.transform_bounds(dst_crs, src_crs, *bbox, densify_pts=21))


#: largest side (pixels) of a load block: one dask task reads one solar day's scenes over
#: the whole tile up to this size (a 3200 px production tile is one block, ~40 MB of NDVI)
MAX_LOAD_BLOCK_PX = 4096


def _needed_blocks(
    need: np.ndarray, row_off: int, col_off: int, block: tuple[int, int]
) -> np.ndarray:
    """Which of the file's blocks (rows x cols, from the block holding ``(row_off,
    col_off)``) contain a True pixel of ``need`` (a window starting at that pixel)."""
    bh, bw = block
    oy, ox = row_off % bh, col_off % bw
    h, w = need.shape
    nby, nbx = -(-(oy + h) // bh), -(-(ox + w) // bw)
    grid = np.zeros((nby * bh, nbx * bw), dtype=bool)
    grid[oy : oy + h, ox : ox + w] = need
    return grid.reshape(nby, bh, nbx, bw).any(axis=(1, 3))


def _native_window(
    ref: rasterio.DatasetReader, dst: GeoBox, pad: int
) -> tuple[rasterio.windows.Window, bool]:
    """The scene-grid window covering ``dst`` (+ ``pad``), and whether it is pixel-aligned
    with ``dst`` (same CRS and resolution, integer offset: paste, no resampling)."""
    if ref.crs is None:
        raise ValueError("no CRS")
    same_crs = CRS(ref.crs.to_wkt()) == dst.crs
    t = ref.transform
    sx, sy = t.a, t.e
    col = (dst.affine.c - t.c) / sx
    row = (dst.affine.f - t.f) / sy
    aligned = (
        same_crs
        and np.isclose(sx, dst.affine.a)
        and np.isclose(sy, dst.affine.e)
        and t.b == 0
        and t.d == 0
        and abs(col - round(col)) < 1e-6
        and abs(row - round(row)) < 1e-6
    )
    ny, nx = dst.shape.yx
    if aligned:
        return rasterio.windows.Window(
            round(col) - pad, round(row) - pad, nx + 2 * pad, ny + 2 * pad
        ), True
    left, bottom, right, top = _bounds_in(
        dst.crs.to_wkt(), tuple(dst.boundingbox), ref.crs.to_wkt()
    )
    margin = 2 + pad
    w = rasterio.windows.from_bounds(left, bottom, right, top, t)
    return (
        rasterio.windows.Window(
            int(np.floor(w.col_off)) - margin,
            int(np.floor(w.row_off)) - margin,
            int(np.ceil(w.width)) + 2 * margin + 1,
            int(np.ceil(w.height)) + 2 * margin + 1,
        ),
        False,
    )


def _file_box(
    window: rasterio.windows.Window, src: rasterio.DatasetReader, pad: int
) -> tuple[slice, slice] | None:
    """Rows and columns of ``window`` that the file covers, grown by ``pad`` (clipped to the
    window); None if the window misses the file."""
    h, w = int(window.height), int(window.width)
    r0, c0 = max(0, -int(window.row_off)), max(0, -int(window.col_off))
    r1 = min(h, src.height - int(window.row_off))
    c1 = min(w, src.width - int(window.col_off))
    if r1 <= r0 or c1 <= c0:
        return None
    return slice(max(0, r0 - pad), min(h, r1 + pad)), slice(max(0, c0 - pad), min(w, c1 + pad))
