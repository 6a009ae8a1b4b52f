"""The direct loader's reads (rasterio): a scene's band files opened once, windows read
only where needed, transient remote failures retried, every error naming dataset, band
and file. What a worker needs to read a scene travels as a picklable :class:`_Source`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.env
import rasterio.warp
import rasterio.windows
from affine import Affine
from odc.geo.geobox import GeoBox

from .._redact import redact_url
from .._transient import TRANSIENT_READ
from ..errors import InputReadError
from ..masking import bad_pixel_filter, filter_reach
from ..ndvi import NDVIInputs, clear_pixels
from ..storage import path_or_url
from ._windows import _file_box, _native_window, _needed_blocks

__all__ = ["TRANSIENT_READ", "InputReadError", "SceneRead", "read_scene"]


@dataclass(frozen=True)
class _Source:
    """One scene's three band files (picklable: what a worker needs to read it)."""

    dataset_id: str
    product: str
    uris: tuple[str, str, str]  # red, nir, mask
    inputs: NDVIInputs


def _read_window(
    src: rasterio.DatasetReader,
    window: rasterio.windows.Window,
    fill: float | int | None,
    need: np.ndarray | None = None,
) -> np.ndarray:
    """Read ``window`` (may extend past the file); outside the file is ``fill``.

    With ``need`` (a boolean array of the window's shape) only the file's blocks holding a
    needed pixel are decoded (runs of them in one read); the rest stays ``fill``. Decoding
    is most of the load's cost, and cloud, nodata and pixels already filled by an earlier
    scene of the day need no red or NIR."""
    full = rasterio.windows.Window(0, 0, src.width, src.height)
    try:
        inner = window.intersection(full).round_offsets().round_lengths()
    except rasterio.errors.WindowError:
        inner = None
    shape = (int(window.height), int(window.width))
    fill_value = fill if fill is not None else 0
    if inner is None or inner.width <= 0 or inner.height <= 0:
        return np.full(shape, fill_value, dtype=src.dtypes[0])
    r0 = int(inner.row_off - window.row_off)
    c0 = int(inner.col_off - window.col_off)
    h, w = int(inner.height), int(inner.width)
    row_off, col_off = int(inner.row_off), int(inner.col_off)
    bh, bw = src.block_shapes[0]
    # None: every block is needed (one read)
    blocks = (
        None
        if need is None or need.all()
        else _needed_blocks(need[r0 : r0 + h, c0 : c0 + w], row_off, col_off, (bh, bw))
    )
    if blocks is not None and blocks.all():
        blocks = None
    if blocks is None and (h, w) == shape:
        return src.read(1, window=inner)  # inside the file: no fill, no copy
    out = np.full(shape, fill_value, dtype=src.dtypes[0])
    if blocks is None:
        out[r0 : r0 + h, c0 : c0 + w] = src.read(1, window=inner)
        return out
    first_row, first_col = row_off - row_off % bh, col_off - col_off % bw
    for by in np.flatnonzero(blocks.any(axis=1)):
        y0 = max(first_row + by * bh, row_off)
        y1 = min(first_row + (by + 1) * bh, row_off + h)
        cols = blocks[by]
        # runs of needed blocks in this block row: [start, stop) in block units
        edges = np.flatnonzero(np.diff(np.concatenate(([0], cols.view(np.int8), [0]))))
        for bx0, bx1 in zip(edges[::2], edges[1::2], strict=True):
            x0 = max(first_col + bx0 * bw, col_off)
            x1 = min(first_col + bx1 * bw, col_off + w)
            win = rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)
            out[r0 + y0 - row_off : r0 + y1 - row_off, c0 + x0 - col_off : c0 + x1 - col_off] = (
                src.read(1, window=win)
            )
    return out


@dataclass
class SceneRead:
    """One scene's bands read for a destination block: only the part of the native window
    the file covers (``box``, grown by ``pad``), so no array is larger than the scene."""

    good: np.ndarray | None  #: clear by the flag rule (after mask_filters), box-shaped
    red: np.ndarray | None  #: None when no pixel was needed (nothing read)
    nir: np.ndarray | None
    window: rasterio.windows.Window  #: covering the destination block, in the scene's grid
    box: tuple[slice, slice] | None  #: the arrays' place in ``window``; None: no overlap
    transform: Affine  #: of the scene's full grid
    crs: Any
    aligned: bool  #: ``window`` *is* the destination block (+ ``pad`` on every side)
    pad: int

    def box_window(self) -> rasterio.windows.Window:
        rows, cols = self.box  # type: ignore[misc]
        w = self.window
        return rasterio.windows.Window(
            w.col_off + cols.start,
            w.row_off + rows.start,
            cols.stop - cols.start,
            rows.stop - rows.start,
        )


def _retry_settings() -> tuple[int, float]:
    """The reads' retry bound and first delay: ``GDAL_HTTP_MAX_RETRY`` /
    ``GDAL_HTTP_RETRY_DELAY`` of the active environment (plugin_config.read_retries)."""
    env = rasterio.env.getenv() if rasterio.env.hasenv() else {}
    return int(env.get("GDAL_HTTP_MAX_RETRY", 0)), float(env.get("GDAL_HTTP_RETRY_DELAY", 0.5))


def _detail(err: Exception) -> str:
    """What went wrong, in the decoder's own words: rasterio's read errors say only "Read
    failed. See previous exception for details." and keep GDAL's message in the cause."""
    text = (
        str(err)
        if isinstance(err, rasterio.errors.RasterioIOError)
        else f"{type(err).__name__}: {err}"
    )
    cause = err.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = text.replace(" See previous exception for details.", "").rstrip(".")
        text = f"{text}: {cause}"
    return text


def _vsi(path: str) -> str:
    """GDAL's name of a remote file, for ``CPL_VSIL_CURL_NON_CACHED``."""
    for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/")):
        if path.startswith(scheme):
            return prefix + path[len(scheme) :]
    return "/vsicurl/" + path if "://" in path else path


class _Files:
    """A scene's band files, opened on first use and closed together; an error while
    opening or decoding names the dataset and the file."""

    def __init__(self, source: _Source):
        self.source = source
        self._open: dict[int, rasterio.DatasetReader] = {}

    def __getitem__(self, i: int) -> rasterio.DatasetReader:
        if i not in self._open:
            self._open[i] = self._attempts(i, "cannot read", lambda fresh: self._rio_open(i, fresh))
        return self._open[i]

    def _rio_open(self, i: int, fresh: bool) -> rasterio.DatasetReader:
        """Open band ``i``; ``fresh``: bypassing what GDAL cached of the file (after a
        failed attempt its cache can hold a truncated header)."""
        path = path_or_url(self.source.uris[i])
        if not fresh or "://" not in path:
            return rasterio.open(path)
        stale = self._open.pop(i, None)
        if stale is not None:
            stale.close()
        with rasterio.Env(CPL_VSIL_CURL_NON_CACHED=_vsi(path)):
            return rasterio.open(path)

    def _attempts(self, i: int, what: str, attempt: Callable[[bool], Any]) -> Any:
        """``attempt(fresh)``, tried again after a transient remote-read failure (a 5xx or
        429 answer, a dropped connection: GDAL retries HTTP errors itself but not a
        dropped connection) up to the reads' retry bound with a growing delay; any other
        failure, or the last one, raises :class:`InputReadError` naming dataset, band and
        file."""
        retries, delay = _retry_settings()
        interrupted = False  # a transient failure was seen: whatever follows is retried
        for n in range(retries + 1):
            try:
                return attempt(n > 0)
            except InputReadError:
                raise
            except Exception as err:  # decoding errors surface at read time, not open time
                # (a connection dropped while GDAL reads a header looks like an unknown
                # format on the next attempt: once interrupted, the bound decides)
                interrupted |= isinstance(err, rasterio.errors.RasterioIOError) and bool(
                    TRANSIENT_READ.search(str(err))
                )
                if n == retries or not interrupted:
                    raise self.error(i, what, err, transient=interrupted) from err
                time.sleep(delay * 2**n)
        raise AssertionError("unreachable")

    def error(
        self, i: int, what: str, err: Exception, *, transient: bool = False
    ) -> InputReadError:
        s = self.source
        detail = _detail(err)
        url = redact_url(s.uris[i])
        return InputReadError(
            f"dataset {s.dataset_id} ({s.product}) band {s.inputs.bands[i]}: {what} "
            f"{url}: {detail}",
            dataset_id=s.dataset_id,
            band=s.inputs.bands[i],
            url=url,
            transient=transient or bool(TRANSIENT_READ.search(detail)),
        )

    def read(
        self, i: int, window: rasterio.windows.Window, fill: Any, need: Any = None
    ) -> np.ndarray:
        def attempt(fresh: bool) -> np.ndarray:
            if fresh:
                self._open[i] = self._rio_open(i, fresh=True)
            return _read_window(self[i], window, fill, need)

        return self._attempts(i, "failed reading", attempt)

    def close(self) -> None:
        for src in self._open.values():
            src.close()
        self._open.clear()


RED, NIR, MASK = 0, 1, 2


def read_scene(
    source: _Source,
    dst: GeoBox,
    *,
    mask_filters: tuple[tuple[str, int], ...] = (),
    wanted: np.ndarray | None = None,
) -> SceneRead:
    """Read one scene for the destination block ``dst``: the mask band first, then red and
    NIR only in the file blocks holding a clear pixel that is still ``wanted`` (a boolean
    ``dst``-shaped array; used when the scene is pixel-aligned with ``dst``)."""
    pad = filter_reach(mask_filters)
    bad_filter = bad_pixel_filter(mask_filters)
    inputs = source.inputs
    files = _Files(source)
    try:
        ref = files[MASK]
        try:
            window, aligned = _native_window(ref, dst, pad)
        except ValueError as err:
            raise files.error(MASK, "no CRS in", err) from err
        box = _file_box(window, ref, pad)
        scene = SceneRead(None, None, None, window, box, ref.transform, ref.crs, aligned, pad)
        if box is None:
            return scene
        # everything below on the file's part of the window only (+ the filters' reach, so
        # their result is exact): a scene covers part of a tile
        read_at = scene.box_window()
        mask = files.read(MASK, read_at, inputs.mask_nodata)
        good = scene.good = clear_pixels(mask, inputs, bad_filter=bad_filter)
        del mask  # not held while red and NIR are read
        need = good
        if aligned and wanted is not None:
            # the window is dst grown by pad; pad pixels never need red/NIR
            need = good & (np.pad(wanted, pad) if pad else wanted)[box]
        if need.any():
            scene.red = files.read(RED, read_at, inputs.red.nodata, need)
            scene.nir = files.read(NIR, read_at, inputs.nir.nodata, need)
        return scene
    finally:
        files.close()
