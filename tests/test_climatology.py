"""Climatology and anomaly modes (issue 19): the rules against tests/truth_clim.py, in memory.

The end-to-end runs (synthetic multi-year world, plain ``odc-stats run`` and ``odc-ndvi
run``) are in tests/test_climatology_runs.py.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from odc_ndvi_plugin import NDVIConfig
from odc_ndvi_plugin.baseline import BaselineError, BaselineIndex, BaselineMissingError
from odc_ndvi_plugin.plugin import NDVISeasonal
from odc_ndvi_plugin.reduce import SeasonClimate, anomaly_block
from odc_ndvi_plugin.seasons import DEFAULT_SEASONS, Seasons
from tests.truth_clim import climatology_truth, season_instance

GEOBOX = GeoBox.from_bbox((0, -600, 600, 0), "EPSG:3577", resolution=30)  # 20 x 20 px


def _days(start: str, n_years: int, every: int, seed: int = 1, shape=(20, 20)):
    """Dates every ``every`` days and NaN-masked random NDVI (about half clear)."""
    rng = np.random.default_rng(seed)
    d0 = dt.date.fromisoformat(start)
    out = []
    for i in range(0, 365 * n_years, every):
        plane = rng.uniform(-0.2, 0.9, shape)
        plane[rng.random(shape) < 0.5] = np.nan
        out.append((d0 + dt.timedelta(days=i), plane.astype(np.float32)))
    return out


def _stack(days, chunks_t: int = 1) -> xr.Dataset:
    data = np.stack([p for _, p in days])
    times = np.array([np.datetime64(d, "ns") for d, _ in days])
    import dask.array as da

    arr = da.from_array(data, chunks=(chunks_t, -1, -1))
    coords = {"time": ("spec", times), **xr_coords(GEOBOX)}
    return xr.Dataset({"ndvi": xr.DataArray(arr, dims=("spec", "y", "x"), coords=coords)})


def test_season_instances_match_truth_across_the_year_boundary():
    seasons = Seasons.from_config(None, mode="climatology")
    days = [dt.date(1993, 11, 1) + dt.timedelta(days=i) for i in range(800)]
    got = seasons.instance_index(np.array(days, dtype="datetime64[D]"))
    for day, months_since_1970 in zip(days, got, strict=True):
        _, year, month = season_instance(day, DEFAULT_SEASONS)
        assert months_since_1970 == (year - 1970) * 12 + month - 1, day
    assert season_instance(dt.date(1994, 2, 10), DEFAULT_SEASONS) == ("djf", 1993, 12)


def test_climatology_and_anomaly_need_consecutive_seasons():
    with pytest.raises(ValueError, match=r"^plugin_config.seasons.odd: season_mode climatology"):
        NDVIConfig.from_plugin_config(
            {"season_mode": "climatology", "seasons": {"odd": [1, 3], "rest": [2]}}
        )
    # other modes keep accepting any month sets
    NDVIConfig.from_plugin_config({"season_mode": "year", "seasons": {"odd": [1, 3]}})


def test_bands_of_both_modes():
    clim = NDVIConfig.from_plugin_config(
        {"season_mode": "climatology", "statistics": ["mean", "median", "max"]}
    )
    names = [b.name for b in clim.output_bands][:6]
    assert names == [
        "ndvi_mean_djf",
        "ndvi_std_djf",
        "clear_years_djf",
        "clear_count_djf",
        "ndvi_median_djf",
        "ndvi_max_djf",
    ]
    anomaly = NDVIConfig.from_plugin_config({"season_mode": "anomaly", "baseline": "/b"})
    got = [(b.name, b.dtype) for b in anomaly.output_bands]
    assert got == [
        ("ndvi_mean", "float32"),
        ("clear_count", "uint16"),
        ("ndvi_anomaly", "float32"),
        ("ndvi_std_anomaly", "float32"),
        ("baseline_years", "uint16"),
    ]
    assert anomaly.baseline == "file:///b" and anomaly.min_baseline_years == 10
    with pytest.raises(ValueError, match="^plugin_config.baseline: season_mode anomaly needs"):
        NDVIConfig.from_plugin_config({"season_mode": "anomaly"})
    with pytest.raises(ValueError, match="^plugin_config.statistics: season_mode anomaly"):
        NDVIConfig.from_plugin_config(
            {"season_mode": "anomaly", "baseline": "/b", "statistics": ["median"]}
        )


@pytest.mark.parametrize("min_clear", [1, 3])
def test_climatology_reduce_matches_numpy_truth(min_clear):
    # 1993-12 .. 1999-11: six whole blocks starting on DJF's first month; every 9 days,
    # so seasons have ~10 observations, about half clear, and with min_clear=3 some
    # pixels miss a block (too few clear): years < 6 there
    days = _days("1993-12-01", 6, 9)
    plugin = NDVISeasonal(
        season_mode="climatology",
        statistics=["mean", "median", "min", "max"],
        min_clear=min_clear,
        chunks={"x": 8, "y": 8},
    )
    out = plugin.reduce(_stack(days)).compute()
    truth = climatology_truth(days, DEFAULT_SEASONS, min_clear=min_clear, shape=(20, 20))
    assert set(out.data_vars) == set(truth)
    for band, expected in truth.items():
        got = out[band].values
        if band.startswith("clear_"):
            assert got.dtype == np.uint16
            np.testing.assert_array_equal(got, expected, err_msg=band)
        else:
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6, err_msg=band)
    years = out["clear_years_djf"].values
    assert years.max() == 6
    if min_clear == 3:
        assert (years < 6).any() and (years >= 2).any()


def test_streamed_state_does_not_grow_with_years_except_for_the_median():
    shape = (16, 16)
    plane = np.ones(shape, dtype=np.float32)

    def nbytes(n_blocks: int, statistics) -> int:
        acc = SeasonClimate.empty(shape, statistics, 1)
        for k in range(n_blocks):
            acc.add(plane, k)
        acc.add(plane, n_blocks)  # closes the last full block
        return acc.nbytes

    streamed = ("mean", "std", "years", "count", "min", "max")
    assert nbytes(5, streamed) == nbytes(30, streamed)
    with_median = (*streamed, "median")
    # the median keeps one float32 plane per block
    assert nbytes(30, with_median) - nbytes(5, with_median) == 25 * plane.nbytes


def test_anomaly_rule_and_default_min_baseline_years():
    mean = np.array([0.5, 0.5, 0.5, 0.5, np.nan, 0.5], dtype=np.float32)
    b_mean = np.full(6, 0.4, dtype=np.float32)
    b_std = np.array([0.05, 0.05, np.nan, 0.0, 0.05, 0.05], dtype=np.float32)
    b_years = np.array([10, 9, 12, 12, 12, 30], dtype=np.uint16)
    default = NDVIConfig.from_plugin_config({"season_mode": "anomaly", "baseline": "/b"})
    got = anomaly_block(mean, b_mean, b_std, b_years, min_baseline_years=default.min_baseline_years)
    ok = np.array([True, False, False, False, False, True])
    np.testing.assert_allclose(got[0], np.where(ok, 0.1, np.nan), atol=1e-6)
    np.testing.assert_allclose(got[1], np.where(ok, 2.0, np.nan), atol=1e-5)
    np.testing.assert_array_equal(got[2], b_years)


def _write_item(root, name: str, geobox: GeoBox, bands=("ndvi_mean_djf",)) -> str:
    path = root / f"{name}.stac-item.json"
    a = geobox.affine
    doc = {
        "id": name,
        "properties": {
            "proj:epsg": geobox.crs.epsg,
            "proj:transform": [a.a, a.b, a.c, a.d, a.e, a.f],
            "proj:shape": list(geobox.shape),
        },
        "assets": {b: {"href": f"{name}_{b}.tif", "roles": ["data"]} for b in bands},
    }
    path.write_text(json.dumps(doc))
    return path.as_uri()


def test_baseline_lookup_one_several_other_grid_none(tmp_path):
    task = GEOBOX
    (tmp_path / "a").mkdir()
    url = _write_item(tmp_path / "a", "one", task)
    found = BaselineIndex((tmp_path / "a").as_uri()).find(task)
    assert (found.item_id, found.href) == ("one", url)
    assert found.assets["ndvi_mean_djf"].endswith("/a/one_ndvi_mean_djf.tif")

    (tmp_path / "b").mkdir()
    _write_item(tmp_path / "b", "one", task)
    _write_item(tmp_path / "b", "two", task)
    with pytest.raises(BaselineError, match="2 items under .* are on the grid of tile 20x20"):
        BaselineIndex((tmp_path / "b").as_uri()).find(task)

    (tmp_path / "c").mkdir()
    shifted = GeoBox.from_bbox((15, -615, 615, -15), "EPSG:3577", resolution=30)
    _write_item(tmp_path / "c", "shifted", shifted)
    with pytest.raises(BaselineError, match="is not on the grid of the baseline items") as err:
        BaselineIndex((tmp_path / "c").as_uri()).find(task)
    assert not isinstance(err.value, BaselineMissingError)

    (tmp_path / "d").mkdir()
    far = GeoBox.from_bbox((6000, -600, 6600, 0), "EPSG:3577", resolution=30)
    _write_item(tmp_path / "d", "far", far)
    with pytest.raises(BaselineMissingError) as err:
        BaselineIndex((tmp_path / "d").as_uri()).find(task)
    text = str(err.value)
    assert "\n" not in text and "tile 20x20 px at (0, -600, 600, 0) EPSG:3577" in text
    assert (tmp_path / "d").as_uri() in text and text.endswith("run the climatology first")


def test_anomaly_task_must_be_one_season():
    plugin = NDVISeasonal(season_mode="anomaly", baseline="/nowhere")
    days = [(dt.date(2023, 11, 20), np.zeros((20, 20), np.float32))]
    days.append((dt.date(2023, 12, 5), np.zeros((20, 20), np.float32)))
    out = plugin.reduce(_stack(days))
    with pytest.raises(ValueError, match="fall in son .* and djf"):
        out["ndvi_anomaly"].compute()


def test_ndvi_adjust_is_validated_and_applied():
    from odc_ndvi_plugin.ndvi import BandEncoding, NDVIInputs, ndvi_where

    with pytest.raises(
        ValueError,
        match=r"^plugin_config.ndvi_adjust.ls7 slope: expected a positive number, got 0$",
    ):
        NDVIConfig.from_plugin_config({"ndvi_adjust": {"ls7": [0, 1]}})
    cfg = NDVIConfig.from_plugin_config({"ndvi_adjust": {"ls7": [1.1, -0.02]}})
    assert dict(cfg.ndvi_adjust) == {"ls7": (1.1, -0.02)}
    assert NDVIConfig.from_plugin_config({}).ndvi_adjust == {}
    enc = BandEncoding(nodata=0)
    red, nir = np.array([[100, 0]], np.uint16), np.array([[300, 5]], np.uint16)
    good = np.ones((1, 2), bool)
    plain = ndvi_where(red, nir, good, NDVIInputs(red=enc, nir=enc, clear=None))
    adjusted = ndvi_where(
        red, nir, good, NDVIInputs(red=enc, nir=enc, clear=None, adjust=(1.1, -0.02))
    )
    np.testing.assert_allclose(adjusted[0, 0], 1.1 * 0.5 - 0.02, rtol=1e-6)
    assert np.isnan(plain[0, 1]) and np.isnan(adjusted[0, 1])


@pytest.mark.parametrize(
    "mode, period, ok",
    [
        ("climatology", "1993-12--P30Y", True),
        ("climatology", "2014-12--P6Y", True),  # odc-stats ends it on 2020-11-29: n years meant
        ("climatology", "1993-12--P360M", True),
        ("climatology", "1994-03--P12M", True),  # MAM's first month
        ("climatology", "1994-01--P12M", False),  # mid-DJF: blocks would split a season
        ("climatology", "1993-12--P18M", False),  # not whole blocks
        ("anomaly", "2023-12--P3M", True),
        ("anomaly", "2024-01--P3M", False),
        ("anomaly", "2023-12--P12M", False),
        ("year", "2024-01--P3M", True),  # other modes: no rule
    ],
)
def test_task_period_rule(mode, period, ok):
    options = {"baseline": "/b"} if mode == "anomaly" else {}
    problem = NDVISeasonal(season_mode=mode, **options).period_problem(period)
    assert (problem is None) == ok, problem
    if not ok:
        assert "\n" not in problem and f"season_mode {mode} needs" in problem


def test_an_unreadable_baseline_file_fails_in_one_portable_line(tmp_path):
    import pickle

    from odc_ndvi_plugin.baseline import BaselineTile, baseline_bands

    tile = BaselineTile(
        "one",
        "file:///x.json",
        {
            f"{stem}_djf": (tmp_path / f"missing_{stem}.tif").as_uri()
            for stem in ("ndvi_mean", "ndvi_std", "clear_years")
        },
    )
    bands = baseline_bands(tile, "djf", shape=(20, 20), chunks=((20,), (20,)))
    with pytest.raises(BaselineError, match=r"^baseline: cannot read file://.*missing_") as err:
        bands["mean"].compute()
    assert err.value.__cause__ is None and "\n" not in str(err.value)
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)
    with pytest.raises(BaselineError, match="has no band 'ndvi_mean_jja'"):
        baseline_bands(tile, "jja", shape=(20, 20), chunks=((20,), (20,)))
