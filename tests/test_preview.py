"""``plot_seasons``: which array lands in which panel, in which order, on which scale."""

from __future__ import annotations

import dask.array as da
import matplotlib
import numpy as np
import pytest
import xarray as xr

from odc_ndvi_plugin.preview import NDVI_CMAP, NDVI_RANGE, plot_seasons

matplotlib.use("Agg")

SEASONS = ("djf", "mam", "jja", "son")


def _result(shape=(30, 40), lazy=True) -> xr.Dataset:
    """A year-mode result: every season its own recognisable NDVI and count pattern."""
    rng = np.random.default_rng(7)
    bands = {}
    for i, season in enumerate(SEASONS):
        ndvi = rng.uniform(-0.2, 0.9, shape).astype(np.float32)
        ndvi[: i + 1] = np.nan  # a different no-data strip per season
        count = rng.integers(0, 8 + i, shape).astype(np.uint16)
        bands[f"ndvi_mean_{season}"] = ndvi
        bands[f"clear_count_{season}"] = count
    wrap = (lambda a: da.from_array(a, chunks=10)) if lazy else (lambda a: a)
    return xr.Dataset(
        {k: (("y", "x"), wrap(v)) for k, v in bands.items()},
        attrs={"products": "ls_c2l2_sr", "time_range": "2019-12-01/2020-11-30"},
    )


def _panels(fig):
    """(title, shown array, colour map, limits) of every image axes, row by row."""
    out = []
    for ax in fig.axes:
        if ax.images and ax.get_title():
            im = ax.images[0]
            out.append(
                (ax.get_title(), np.ma.getdata(im.get_array()), im.get_cmap().name, im.get_clim())
            )
    return out


def test_four_seasons_in_order_on_one_ndvi_scale_with_a_shared_colour_bar():
    ds = _result()
    fig = plot_seasons(ds)
    try:
        panels = _panels(fig)
        assert [p[0] for p in panels] == ["DJF", "MAM", "JJA", "SON"]
        for (_, shown, cmap, clim), season in zip(panels, SEASONS, strict=True):
            np.testing.assert_array_equal(shown, ds[f"ndvi_mean_{season}"].values)
            assert (cmap, clim) == (NDVI_CMAP, NDVI_RANGE)
        colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert [ax.get_ylabel() for ax in colour_bars] == ["NDVI mean"]
        assert fig._suptitle.get_text() == "ls_c2l2_sr, 2019-12-01/2020-11-30"
    finally:
        matplotlib.pyplot.close(fig)


def test_counts_add_a_row_with_its_own_colour_bar():
    ds = _result(lazy=False)
    fig = plot_seasons(ds, counts=True)
    try:
        panels = _panels(fig)
        assert [p[0] for p in panels[4:]] == [f"{s.upper()} clear count" for s in SEASONS]
        top = max(int(ds[f"clear_count_{s}"].max()) for s in SEASONS)
        for (_, shown, cmap, clim), season in zip(panels[4:], SEASONS, strict=True):
            np.testing.assert_array_equal(shown, ds[f"clear_count_{season}"].values)
            assert (cmap, clim) == ("viridis", (0, top))
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert labels == ["NDVI mean", "clear observations"]
    finally:
        matplotlib.pyplot.close(fig)


def test_large_arrays_are_shown_decimated_and_task_mode_is_one_panel():
    ds = _result(shape=(100, 250))
    fig = plot_seasons(ds, max_px=100)
    try:
        shown = _panels(fig)[0][1]
        np.testing.assert_array_equal(shown, ds["ndvi_mean_djf"].values[::3, ::3])
        assert "(shown 1:3)" in fig._suptitle.get_text()
    finally:
        matplotlib.pyplot.close(fig)
    task = ds[["ndvi_mean_jja"]].rename({"ndvi_mean_jja": "ndvi_mean"})
    task.attrs["time_range"] = "2020-06-01/2020-08-31"
    fig = plot_seasons(task)
    try:
        assert [p[0] for p in _panels(fig)] == ["2020-06-01/2020-08-31"]
    finally:
        matplotlib.pyplot.close(fig)


def test_a_tutorial_style_dataarray_is_drawn_in_season_order():
    """xarray's groupby("time.season") sorts seasons alphabetically: DJF JJA MAM SON."""
    ds = _result(lazy=False)
    stacked = xr.concat(
        [ds[f"ndvi_mean_{s}"] for s in ("djf", "jja", "mam", "son")], dim="season"
    ).assign_coords(season=["DJF", "JJA", "MAM", "SON"])
    fig = plot_seasons(stacked)
    try:
        panels = _panels(fig)
        assert [p[0] for p in panels] == ["DJF", "MAM", "JJA", "SON"]
        np.testing.assert_array_equal(panels[1][1], ds["ndvi_mean_mam"].values)
    finally:
        matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="counts=True needs"):
        plot_seasons(stacked, counts=True)


def test_the_rgba_preview_colours_are_matplotlibs_rdylgn_without_matplotlib():
    """The core's colour table (no plotting library needed) equals matplotlib's RdYlGn
    colour for colour: across the ramp's range and beyond, and on the float32 values a few
    ulps either side of each of the 256 colour boundaries, where a differently rounded index
    picks the neighbouring colour (round 3 had 77 such pixels in a 2048 px preview)."""
    from matplotlib import colormaps

    from odc_ndvi_plugin.preview import NDVI_RANGE, _colourise

    lo, hi = NDVI_RANGE
    edges = np.float32(lo) + np.arange(257, dtype=np.float32) * np.float32((hi - lo) / 256)
    near = (edges.view(np.int32)[:, None] + np.arange(-4, 5, dtype=np.int32)).view(np.float32)
    ramp = np.linspace(lo - 0.3, hi + 0.3, 300_001, dtype=np.float32)
    # float32 throughout, as the output band is (a float64 array hides the rounding)
    ndvi = np.concatenate([ramp, near.ravel(), np.array([np.nan], dtype=np.float32)])
    assert ndvi.dtype == np.float32
    scaled = np.nan_to_num(np.clip((ndvi - lo) / (hi - lo), 0, 1))
    expected = (colormaps["RdYlGn"](scaled) * 255).round().astype(np.uint8)
    expected[..., 3] = np.where(np.isnan(ndvi), 0, 255)
    np.testing.assert_array_equal(_colourise(ndvi), expected)
