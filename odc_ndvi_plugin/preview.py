"""Pictures of results: the RGBA preview band, PNG quicklooks of the seasons, and
``plot_seasons`` for a notebook (matplotlib is imported only when a picture is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from ._extras import require

__all__ = ["NDVI_CMAP", "NDVI_RANGE", "ndvi_rgba", "plot_seasons", "quicklook_png"]

#: NDVI values mapped onto the colour ramp (clipped outside)
NDVI_RANGE = (-0.2, 0.9)
#: matplotlib colour map of NDVI (red: bare, yellow, green: dense vegetation)
NDVI_CMAP = "RdYlGn"


#: ColorBrewer's 11-class RdYlGn (Cynthia Brewer, Apache 2.0), the anchors of matplotlib's
#: "RdYlGn": the preview needs no plotting library (the core install has none)
_RDYLGN = (
    "a50026", "d73027", "f46d43", "fdae61", "fee08b", "ffffbf",
    "d9ef8b", "a6d96a", "66bd63", "1a9850", "006837",
)  # fmt: skip


def _lookup_table(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 colours interpolated linearly between the anchors, as matplotlib
    builds a colour map's lookup table."""
    anchors = np.array([[int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)] for c in _RDYLGN])
    at = np.linspace(0, 1, len(anchors))
    x = np.linspace(0, 1, n)
    table = np.stack([np.interp(x, at, anchors[:, k]) for k in range(3)], axis=1)
    return (table * 255).round().astype(np.uint8)


_LUT = _lookup_table()


def _colourise(ndvi: np.ndarray) -> np.ndarray:
    """uint8 RGBA of NDVI: one gather in a 256-colour table (no float RGBA temporaries)."""
    lo, hi = NDVI_RANGE
    n = len(_LUT)
    # the index as matplotlib's colour map computes it (scale to 0..1 in the data's dtype,
    # times n, truncate), so previews stay byte-identical to the matplotlib rendering
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num(np.clip((ndvi - lo) / (hi - lo), 0, 1))
        scaled *= n
    idx = np.minimum(scaled.astype(np.intp), n - 1)
    rgba = np.empty((*ndvi.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _LUT[idx]
    rgba[..., 3] = np.where(np.isnan(ndvi), 0, 255)
    return rgba


def ndvi_rgba(ndvi: xr.DataArray) -> xr.DataArray:
    """uint8 RGBA ``(y, x, band)`` rendering of an NDVI band; transparent where NaN."""
    data = ndvi.data
    if isinstance(data, da.Array):
        rgba = da.map_blocks(
            _colourise, data, new_axis=2, chunks=(*data.chunks, (4,)), dtype=np.uint8
        )
    else:
        rgba = _colourise(np.asarray(data))
    coords = {k: v for k, v in ndvi.coords.items() if set(v.dims) <= {"y", "x"}}
    coords["band"] = ["r", "g", "b", "a"]
    return xr.DataArray(rgba, dims=("y", "x", "band"), coords=coords, attrs={"nodata": None})


def quicklook_png(panels: Sequence[tuple[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """One PNG with a panel per (label, NDVI array), shared colour ramp and a colour bar."""
    require("plot", "quicklook_png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.8, 3.6), squeeze=False)
    image = None
    for ax, (label, arr) in zip(axes[0], panels, strict=True):
        image = ax.imshow(arr, cmap=NDVI_CMAP, vmin=NDVI_RANGE[0], vmax=NDVI_RANGE[1])
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="NDVI")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


#: order of the usual meteorological seasons (xarray's ``time.season`` sorts them A-Z)
_SEASON_ORDER = ("djf", "mam", "jja", "son")


def _season_panels(ds: xr.Dataset | xr.DataArray, stem: str) -> list[tuple[str, xr.DataArray]]:
    """(label, 2-D array) per season: bands ``<stem>_<season>`` (year mode) or ``<stem>``
    (task mode) of a plugin result, or the ``season`` coordinate of a DataArray such as
    the tutorial's ``groupby("time.season").mean()``."""
    if isinstance(ds, xr.DataArray):
        if "season" not in ds.dims:
            raise ValueError("a DataArray needs a 'season' dimension; give the plugin's Dataset")
        labels = [str(s) for s in ds["season"].values]
        labels.sort(key=lambda s: (_rank(s), s))
        return [(s.upper(), ds.sel(season=s)) for s in labels]
    if stem in ds.data_vars:
        return [(ds.attrs.get("time_range", stem), ds[stem])]
    found = [
        (str(n)[len(stem) + 1 :], ds[n]) for n in ds.data_vars if str(n).startswith(stem + "_")
    ]
    if not found:
        raise ValueError(f"no band {stem!r} or {stem}_<season> in {list(ds.data_vars)}")
    return [(season.upper(), band) for season, band in found]


def _rank(season: str) -> int:
    s = season.lower()
    return _SEASON_ORDER.index(s) if s in _SEASON_ORDER else len(_SEASON_ORDER)


def plot_seasons(
    ds: xr.Dataset | xr.DataArray,
    *,
    statistic: str = "mean",
    counts: bool = False,
    max_px: int = 1024,
    title: str | None = None,
    panel_size: float = 3.2,
):
    """The seasons side by side on one NDVI colour scale with a shared colour bar; with
    ``counts=True`` a second row of clear-observation counts (own colour bar).

    ``ds``: a :func:`~odc_ndvi_plugin.api.seasonal_ndvi` result (lazy or computed; every
    band drawn is computed in one ``dask.compute``, so the loads are shared), a dataset
    read back from the outputs, or a DataArray with a ``season`` dimension. Arrays larger
    than ``max_px`` are shown decimated. Returns the matplotlib ``Figure``.
    """
    require("plot", "plot_seasons")
    import dask
    import matplotlib.pyplot as plt

    panels = _season_panels(ds, f"ndvi_{statistic}")
    count_panels = []
    if counts:
        if isinstance(ds, xr.DataArray):
            raise ValueError("counts=True needs the plugin's Dataset (clear_count bands)")
        count_panels = _season_panels(ds, "clear_count")
    step = max(1, -(-max(panels[0][1].shape) // max_px))
    arrays = [a[::step, ::step] for _, a in panels + count_panels]
    values = dask.compute(*[a.data for a in arrays])
    ndvi, count = values[: len(panels)], values[len(panels) :]

    n, rows = len(panels), 2 if counts else 1
    h, w = ndvi[0].shape
    fig, axes = plt.subplots(
        rows,
        n,
        figsize=(panel_size * n + 1.2, panel_size * rows * h / max(w, 1) + 0.6 * rows + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for ax, (label, _), arr in zip(axes[0], panels, ndvi, strict=True):
        image = ax.imshow(arr, cmap=NDVI_CMAP, vmin=NDVI_RANGE[0], vmax=NDVI_RANGE[1])
        ax.set_title(label)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label=f"NDVI {statistic}")
    if counts:
        top = max(int(np.max(c)) for c in count) or 1
        for ax, (label, _), arr in zip(axes[1], count_panels, count, strict=True):
            image = ax.imshow(arr, cmap="viridis", vmin=0, vmax=top)
            ax.set_title(f"{label} clear count")
        fig.colorbar(image, ax=axes[1].tolist(), shrink=0.85, label="clear observations")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("#d0d0d0")  # no clear observation: grey, not white
    if title is None and isinstance(ds, xr.Dataset) and "products" in ds.attrs:
        title = f"{ds.attrs['products']}, {ds.attrs.get('time_range', '')}"
    if step > 1:
        title = f"{title or ''} (shown 1:{step})".strip()
    if title:
        fig.suptitle(title)
    return fig
