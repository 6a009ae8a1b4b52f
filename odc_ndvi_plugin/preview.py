"""Pictures of results: the RGBA preview band, PNG quicklooks of the seasons, and
``plot_seasons`` for a notebook (matplotlib is imported only when a picture is drawn).

Which colours a band gets is decided in one place, :func:`band_style`, by its name: NDVI
statistics on the NDVI ramp, anomalies on a diverging ramp centred on 0 with symmetric
limits, the spread over years on a sequential ramp, counts (observations, years) on viridis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from ._extras import require

__all__ = [
    "ANOMALY_CMAP",
    "NDVI_CMAP",
    "NDVI_RANGE",
    "BandStyle",
    "band_style",
    "ndvi_rgba",
    "plot_seasons",
    "quicklook_png",
    "season_bands",
]

#: NDVI values mapped onto the colour ramp (clipped outside)
NDVI_RANGE = (-0.2, 0.9)
#: matplotlib colour map of NDVI (red: bare, yellow, green: dense vegetation)
NDVI_CMAP = "RdYlGn"
#: diverging colour map of anomalies (brown: less green than the baseline, teal: greener),
#: its neutral midpoint on 0
ANOMALY_CMAP = "BrBG"
#: symmetric limits of the anomaly ramps: NDVI units, and standard deviations (|z| > 3 is
#: an extreme season); fixed, so pictures of different seasons and tiles compare
NDVI_ANOMALY_LIMIT = 0.3
STD_ANOMALY_LIMIT = 3.0
#: upper limit of the spread of seasonal means over years (ndvi_std_<season>)
NDVI_SPREAD_MAX = 0.2
#: bands whose names extend a statistic's stem without being one of its seasons
#: (``ndvi_std_anomaly`` is not the ``anomaly`` season of ``ndvi_std``)
ANOMALY_BANDS = ("ndvi_anomaly", "ndvi_std_anomaly")
_COUNT_LABELS = {
    "clear_count": "clear observations",
    "clear_years": "years with a seasonal mean",
    "baseline_years": "baseline years",
}


@dataclass(frozen=True)
class BandStyle:
    """How a band is drawn."""

    #: "ndvi", "anomaly" (diverging, centred on 0), "spread" or "count"
    kind: str
    #: matplotlib colour map name
    cmap: str
    #: (vmin, vmax); counts: None (0 to the largest count drawn)
    limits: tuple[float, float] | None
    #: colour bar label
    label: str


def _stem(name: str) -> str:
    """The band name without a season suffix (``ndvi_mean_djf`` -> ``ndvi_mean``)."""
    for stem in (*ANOMALY_BANDS, *_COUNT_LABELS):
        if name == stem or name.startswith(stem + "_"):
            return stem
    parts = name.split("_")
    return "_".join(parts[:2]) if parts[0] == "ndvi" else name


def band_style(name: str, dtype: np.dtype | str | None = None) -> BandStyle:
    """The colours of band ``name`` (``dtype``: integer bands not named here are counts)."""
    stem = _stem(name)
    if stem == "ndvi_std_anomaly":
        limit = STD_ANOMALY_LIMIT
        return BandStyle("anomaly", ANOMALY_CMAP, (-limit, limit), "standardised NDVI anomaly")
    if stem == "ndvi_anomaly":
        limit = NDVI_ANOMALY_LIMIT
        return BandStyle("anomaly", ANOMALY_CMAP, (-limit, limit), "NDVI anomaly")
    if stem in _COUNT_LABELS or (dtype is not None and np.issubdtype(np.dtype(dtype), np.integer)):
        return BandStyle("count", "viridis", None, _COUNT_LABELS.get(stem, stem))
    if stem == "ndvi_std":
        return BandStyle("spread", "magma", (0.0, NDVI_SPREAD_MAX), "NDVI std")
    return BandStyle("ndvi", NDVI_CMAP, NDVI_RANGE, "NDVI")


def season_bands(names: Sequence[str], stem: str) -> list[str]:
    """The names among ``names`` that are ``stem`` (task and anomaly modes) or one of its
    seasons ``<stem>_<season>`` (year and climatology modes), in order."""
    return [n for n in names if n == stem or (n.startswith(stem + "_") and n not in ANOMALY_BANDS)]


#: ColorBrewer's 11-class RdYlGn and BrBG (Cynthia Brewer, Apache 2.0), the anchors of
#: matplotlib's "RdYlGn" and "BrBG": the preview needs no plotting library (the core
#: install has none)
_ANCHORS = {
    "RdYlGn": (
        "a50026", "d73027", "f46d43", "fdae61", "fee08b", "ffffbf",
        "d9ef8b", "a6d96a", "66bd63", "1a9850", "006837",
    ),
    "BrBG": (
        "543005", "8c510a", "bf812d", "dfc27d", "f6e8c3", "f5f5f5",
        "c7eae5", "80cdc1", "35978f", "01665e", "003c30",
    ),
}  # fmt: skip


def _lookup_table(cmap: str, n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 colours interpolated linearly between the anchors, as matplotlib
    builds a colour map's lookup table."""
    hexes = _ANCHORS[cmap]
    anchors = np.array([[int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)] for c in hexes])
    at = np.linspace(0, 1, len(anchors))
    x = np.linspace(0, 1, n)
    table = np.stack([np.interp(x, at, anchors[:, k]) for k in range(3)], axis=1)
    return (table * 255).round().astype(np.uint8)


_LUTS = {name: _lookup_table(name) for name in _ANCHORS}


def _colourise(
    ndvi: np.ndarray, cmap: str = NDVI_CMAP, limits: tuple[float, float] = NDVI_RANGE
) -> np.ndarray:
    """uint8 RGBA of NDVI (or an anomaly, with its ramp and limits): one gather in a
    256-colour table (no float RGBA temporaries)."""
    lut = _LUTS[cmap]
    lo, hi = limits
    n = len(lut)
    # the index as matplotlib's colour map computes it (scale to 0..1 in the data's dtype,
    # times n, truncate), so previews stay byte-identical to the matplotlib rendering
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num(np.clip((ndvi - lo) / (hi - lo), 0, 1))
        scaled *= n
    idx = np.minimum(scaled.astype(np.intp), n - 1)
    rgba = np.empty((*ndvi.shape, 4), dtype=np.uint8)
    rgba[..., :3] = lut[idx]
    rgba[..., 3] = np.where(np.isnan(ndvi), 0, 255)
    return rgba


def ndvi_rgba(ndvi: xr.DataArray) -> xr.DataArray:
    """uint8 RGBA ``(y, x, band)`` rendering of an NDVI band, or of an anomaly band (by its
    name) on the diverging ramp centred on 0; transparent where NaN."""
    style = band_style(str(ndvi.name))
    cmap, limits = (
        (ANOMALY_CMAP, style.limits) if style.kind == "anomaly" else (NDVI_CMAP, NDVI_RANGE)
    )
    assert limits is not None
    data = ndvi.data
    if isinstance(data, da.Array):
        rgba = da.map_blocks(
            _colourise,
            data,
            cmap=cmap,
            limits=limits,
            new_axis=2,
            chunks=(*data.chunks, (4,)),
            dtype=np.uint8,
        )
    else:
        rgba = _colourise(np.asarray(data), cmap, limits)
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
    """(label, 2-D array) per season: bands ``<stem>_<season>`` (year and climatology
    modes) or ``<stem>`` (task and anomaly modes) of a plugin result, or the ``season``
    coordinate of a DataArray such as the tutorial's ``groupby("time.season").mean()``."""
    if isinstance(ds, xr.DataArray):
        if "season" not in ds.dims:
            raise ValueError("a DataArray needs a 'season' dimension; give the plugin's Dataset")
        labels = [str(s) for s in ds["season"].values]
        labels.sort(key=lambda s: (_rank(s), s))
        return [(s.upper(), ds.sel(season=s)) for s in labels]
    names = season_bands([str(n) for n in ds.data_vars], stem)
    if not names:
        raise ValueError(f"no band {stem!r} or {stem}_<season> in {list(ds.data_vars)}")
    if names == [stem]:
        return [(ds.attrs.get("time_range", stem), ds[stem])]
    return [(n[len(stem) + 1 :].upper(), ds[n]) for n in names]


def _rank(season: str) -> int:
    s = season.lower()
    return _SEASON_ORDER.index(s) if s in _SEASON_ORDER else len(_SEASON_ORDER)


def _limits(style: BandStyle, arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    if style.limits is not None:
        return style.limits
    top = max((int(np.max(a, initial=0)) for a in arrays), default=0)
    return 0, top or 1


def plot_seasons(
    ds: xr.Dataset | xr.DataArray,
    *,
    statistic: str = "mean",
    counts: bool | str = False,
    max_px: int = 1024,
    title: str | None = None,
    panel_size: float = 3.2,
):
    """The seasons side by side on one colour scale with a shared colour bar; with
    ``counts=True`` a second row of clear-observation counts (own colour bar), or of the
    count band ``counts`` names (``"clear_years"``, ``"baseline_years"``).

    ``statistic``: the band drawn, ``ndvi_<statistic>[_<season>]``: ``"mean"``,
    ``"median"``, ... on the NDVI ramp; ``"std"`` (climatology) on a sequential ramp;
    ``"anomaly"`` and ``"std_anomaly"`` (anomaly mode) on a diverging ramp centred on 0
    with symmetric limits (:func:`band_style`).

    ``ds``: a :func:`~odc_ndvi_plugin.api.seasonal_ndvi` result (lazy or computed; every
    band drawn is computed in one ``dask.compute``, so the loads are shared), a dataset
    read back from the outputs, or a DataArray with a ``season`` dimension. Arrays larger
    than ``max_px`` are shown decimated; NaN (no value) shows grey. Returns the matplotlib
    ``Figure``.
    """
    require("plot", "plot_seasons")
    import dask
    import matplotlib.pyplot as plt

    stem = f"ndvi_{statistic}"
    panels = _season_panels(ds, stem)
    count_panels = []
    count_stem = "clear_count" if counts is True else counts or None
    if count_stem:
        if isinstance(ds, xr.DataArray):
            raise ValueError(f"counts={counts!r} needs the plugin's Dataset ({count_stem} bands)")
        count_panels = _season_panels(ds, count_stem)
    step = max(1, -(-max(panels[0][1].shape) // max_px))
    arrays = [a[::step, ::step] for _, a in panels + count_panels]
    values = dask.compute(*[a.data for a in arrays])
    shown, count = values[: len(panels)], values[len(panels) :]

    n, rows = len(panels), 2 if count_stem else 1
    h, w = shown[0].shape
    fig, axes = plt.subplots(
        rows,
        n,
        figsize=(panel_size * n + 1.2, panel_size * rows * h / max(w, 1) + 0.6 * rows + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    style = band_style(str(ds.name) if isinstance(ds, xr.DataArray) else stem)
    vmin, vmax = _limits(style, shown)
    image = None
    for ax, (label, _), arr in zip(axes[0], panels, shown, strict=True):
        image = ax.imshow(arr, cmap=style.cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(label)
    label = f"NDVI {statistic}" if style.kind == "ndvi" else style.label
    extend = "both" if style.kind == "anomaly" else "neither"  # values beyond are clipped
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label=label, extend=extend)
    if count_stem:
        count_style = band_style(count_stem, "uint16")
        top = _limits(count_style, count)[1]
        for ax, (label, _), arr in zip(axes[1], count_panels, count, strict=True):
            image = ax.imshow(arr, cmap=count_style.cmap, vmin=0, vmax=top)
            ax.set_title(f"{label} {count_stem.replace('_', ' ')}")
        fig.colorbar(image, ax=axes[1].tolist(), shrink=0.85, label=count_style.label)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("#d0d0d0")  # no value (NaN is transparent): grey, not white
    if title is None and isinstance(ds, xr.Dataset) and "products" in ds.attrs:
        title = f"{ds.attrs['products']}, {ds.attrs.get('time_range', '')}"
    if step > 1:
        title = f"{title or ''} (shown 1:{step})".strip()
    if title:
        fig.suptitle(title)
    return fig
