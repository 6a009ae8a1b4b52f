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


# -- anomalies: a diverging ramp centred on 0 ------------------------------------------

#: ColorBrewer BrBG's neutral midpoint (#f5f5f5): what an anomaly of 0 looks like
BRBG_MIDPOINT = np.array([245, 245, 245])


def _anomaly_result(shape=(20, 30)) -> xr.Dataset:
    """An anomaly-mode result (one season): known values in known places."""
    anomaly = np.zeros(shape, dtype=np.float32)  # left third: exactly as the baseline
    anomaly[:, 10:20] = np.nan  # middle third: no value
    anomaly[:, 20:] = np.linspace(-0.5, 0.5, shape[0], dtype=np.float32)[:, None]
    years = np.full(shape, 12, dtype=np.uint16)
    years[:5] = 3
    return xr.Dataset(
        {
            "ndvi_mean": (("y", "x"), np.full(shape, 0.4, dtype=np.float32)),
            "clear_count": (("y", "x"), np.full(shape, 5, dtype=np.uint16)),
            "ndvi_anomaly": (("y", "x"), anomaly),
            "ndvi_std_anomaly": (("y", "x"), anomaly * 10),
            "baseline_years": (("y", "x"), years),
        },
        attrs={"products": "ls_c2l2_sr", "time_range": "2023-12-01/2024-02-29"},
    )


def _pixel(fig, ax, row: int, col: int) -> np.ndarray:
    """RGB the rendered figure shows at image pixel (row, col) of ``ax``."""
    fig.canvas.draw()
    canvas = np.asarray(fig.canvas.buffer_rgba())
    x, y = ax.transData.transform((col, row))
    return canvas[canvas.shape[0] - int(round(y)), int(round(x)), :3].astype(int)


@pytest.mark.parametrize(("statistic", "limit"), [("anomaly", 0.3), ("std_anomaly", 3.0)])
def test_anomalies_are_drawn_diverging_centred_on_zero_nan_transparent(statistic, limit):
    ds = _anomaly_result()
    fig = plot_seasons(ds, statistic=statistic, counts="baseline_years")
    try:
        (title, shown, cmap, clim), (ytitle, years, ycmap, yclim) = _panels(fig)
        np.testing.assert_array_equal(shown, ds[f"ndvi_{statistic}"].values)
        assert (cmap, clim) == ("BrBG", (-limit, limit))  # symmetric around 0
        assert (ytitle, ycmap, yclim) == (
            "2023-12-01/2024-02-29 baseline years",
            "viridis",
            (0, 12),
        )
        np.testing.assert_array_equal(years, ds["baseline_years"].values)
        ax = fig.axes[0]
        # 0 lands on the ramp's neutral midpoint, NaN lets the grey background through
        zero, nan = _pixel(fig, ax, 10, 4), _pixel(fig, ax, 10, 15)
        assert np.abs(zero - BRBG_MIDPOINT).max() <= 2, zero
        np.testing.assert_array_equal(nan, [0xD0, 0xD0, 0xD0])
        # the ends: the first row is below -limit (dark brown), the last above (dark teal)
        assert _pixel(fig, ax, 0, 25)[0] > _pixel(fig, ax, 0, 25)[2]  # brown: red > blue
        assert _pixel(fig, ax, 19, 25)[0] < _pixel(fig, ax, 19, 25)[2]
        colour_bar = next(a for a in fig.axes if a.get_label() == "<colorbar>")
        assert "anomaly" in colour_bar.get_ylabel()
    finally:
        matplotlib.pyplot.close(fig)


def test_climatology_spread_and_years_and_no_anomaly_taken_for_a_season():
    shape = (6, 8)
    clim = xr.Dataset(
        {
            f"{stem}_{s}": (("y", "x"), np.full(shape, i, dtype=dtype))
            for i, s in enumerate(SEASONS)
            for stem, dtype in (
                ("ndvi_mean", np.float32),
                ("ndvi_std", np.float32),
                ("clear_years", np.uint16),
                ("clear_count", np.uint16),
            )
        }
    )
    fig = plot_seasons(clim, statistic="std", counts="clear_years")
    try:
        panels = _panels(fig)
        assert [p[0] for p in panels] == [*(s.upper() for s in SEASONS)] + [
            f"{s.upper()} clear years" for s in SEASONS
        ]
        assert {(p[2], p[3]) for p in panels[:4]} == {("magma", (0.0, 0.2))}
        assert {(p[2], p[3]) for p in panels[4:]} == {("viridis", (0, 3))}
    finally:
        matplotlib.pyplot.close(fig)
    # ndvi_std_anomaly is not the "anomaly" season of ndvi_std
    with pytest.raises(ValueError, match="no band 'ndvi_std'"):
        plot_seasons(_anomaly_result(), statistic="std")


def test_the_rgba_preview_of_an_anomaly_is_matplotlibs_brbg_centred_on_zero():
    from matplotlib import colormaps

    from odc_ndvi_plugin.preview import ndvi_rgba

    lim = np.float32(0.3)
    values = np.concatenate(
        [np.linspace(-0.6, 0.6, 100_001, dtype=np.float32), np.array([0, np.nan], np.float32)]
    )
    rgba = ndvi_rgba(xr.DataArray(values[None, :], dims=("y", "x"), name="ndvi_anomaly"))
    rgba = rgba.values[0]
    scaled = np.nan_to_num(np.clip((values + lim) / (2 * lim), 0, 1))
    expected = (colormaps["BrBG"](scaled) * 255).round().astype(np.uint8)
    expected[..., 3] = np.where(np.isnan(values), 0, 255)
    np.testing.assert_array_equal(rgba, expected)
    assert np.abs(rgba[-2, :3].astype(int) - BRBG_MIDPOINT).max() <= 2  # 0: the midpoint
    assert rgba[-1, 3] == 0  # NaN: transparent
    # symmetric: -v and +v sit equally far from the middle of the 256-colour table
    lo = (colormaps["BrBG"](0.0, bytes=True), colormaps["BrBG"](1.0, bytes=True))
    np.testing.assert_array_equal(rgba[0], lo[0])
    np.testing.assert_array_equal(rgba[-3], lo[1])
    # a standardised anomaly lazily (the plugin's preview), on its own symmetric limits
    z = values * 10
    lazy = xr.DataArray(da.from_array(z[None, :], chunks=(1, 4096)), dims=("y", "x"))
    lazy = ndvi_rgba(lazy.rename("ndvi_std_anomaly"))
    assert isinstance(lazy.data, da.Array)
    scaled = np.nan_to_num(np.clip((z + np.float32(3)) / np.float32(6), 0, 1))
    expected = (colormaps["BrBG"](scaled) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(lazy.values[0, :, :3], expected[:, :3])
    # NDVI keeps its own ramp
    ndvi = ndvi_rgba(xr.DataArray(np.float32([[-1.0]]), dims=("y", "x"), name="ndvi_mean"))
    np.testing.assert_array_equal(ndvi.values[0, 0], colormaps["RdYlGn"](0.0, bytes=True))
