"""NDVISeasonal: config errors, registration, reduce() against plain numpy, band encoding."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from odc.stats.plugins import resolve

from odc_ndvi_plugin import NDVISeasonal
from tests.helpers.truth import nan_stat

GEOBOX = GeoBox.from_bbox(
    (1_500_000, -3_900_960, 1_500_960, -3_900_000), "epsg:3577", resolution=30
)


def _ndvi_stack(dates: list[str], *, seed: int = 0, cloud: float = 0.3, chunks=None) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    t = len(dates)
    values = rng.uniform(-0.2, 0.9, size=(t, *GEOBOX.shape.yx)).astype(np.float32)
    values[rng.random(values.shape) < cloud] = np.nan
    data = da.from_array(values, chunks=chunks or (1, 16, 16))
    times = np.array(dates, dtype="datetime64[ns]")
    ndvi = xr.DataArray(
        data, dims=("spec", "y", "x"), coords={"time": ("spec", times), **xr_coords(GEOBOX)}
    )
    return xr.Dataset({"ndvi": ndvi})


def test_registered_under_short_name_and_dotted_path():
    for name in ("ndvi-seasonal", "odc_ndvi_plugin.NDVISeasonal"):
        plugin = resolve(name)(statistics=["mean"])
        assert isinstance(plugin, NDVISeasonal)
        assert plugin.measurements == ("ndvi_mean",)


def test_accepts_odc_stats_resampling_override():
    assert NDVISeasonal(resampling="bilinear").config.resampling == "bilinear"


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"statistics": ["mean", "mode"]},
            "plugin_config.statistics: 'mode' is not allowed; allowed: mean, median, std, min, max, count",
        ),
        (
            {"good_pixel_flags": {"cloudz": False}},
            "plugin_config.good_pixel_flags: unknown flag 'cloudz' for band 'qa_pixel'",
        ),
        (
            {"good_pixel_flags": {"cloud": "no"}},
            "plugin_config.good_pixel_flags.cloud: value 'no' is not allowed",
        ),
        (
            {"preset": "dea_ard", "good_pixel_flags": {"fmask": "clear"}},
            "allowed: 'nodata', 'valid', 'cloud', 'shadow', 'snow', 'water'",
        ),
        (
            {"seasons": {"a": [1, 2], "b": [2]}},
            "plugin_config.seasons.b: month 2 is already in season 'a'",
        ),
        (
            {"seasons": {"a": [0, 1]}},
            "plugin_config.seasons.a: expected an integer in 1..12, got 0",
        ),
        (
            {"season_mode": "monthly"},
            "plugin_config.season_mode: 'monthly' is not allowed; allowed: task, year",
        ),
        (
            {"preset": "sentinel2"},
            "plugin_config.preset: 'sentinel2' is not allowed; allowed: usgs_c2, deafrica_c2, dea_ard, none",
        ),
        ({"min_clear": 0}, "plugin_config.min_clear: expected an integer >= 1"),
        ({"red_band": ""}, "plugin_config.red_band: expected a band name"),
        ({"nir_band": "red"}, "must be three different bands"),
        (
            {"mask_filters": [["blur", 2]]},
            "plugin_config.mask_filters[0]: 'blur' is not allowed; allowed: opening, closing, dilation, erosion",
        ),
        (
            {"mask_filters": [["opening", 0]]},
            "plugin_config.mask_filters[0] radius: expected an integer >= 1, got 0",
        ),
        (
            {"chunks": {"x": 0}},
            "plugin_config.chunks.x: expected an integer >= 1 or -1 (-1 = whole tile), got 0",
        ),
        ({"chunks": {"X": 1}}, "plugin_config.chunks: unknown key 'X' (did you mean 'x'?)"),
        ({"scale_factor": {"red": "big"}}, "plugin_config.scale_factor.red: expected a number"),
        (
            {"loader": "fast"},
            "plugin_config.loader: 'fast' is not allowed; allowed: direct, odc-stats",
        ),
        (
            {"preview_band": "rgb"},
            "plugin_config.preview_band: 'rgb' is not an output band; allowed: ndvi_mean, clear_count",
        ),
        ({"colour": 1}, "plugin_config: unknown key 'colour'; allowed keys: preset"),
        ({"resampling": "sinc"}, "plugin_config.resampling: 'sinc' is not allowed"),
    ],
)
def test_invalid_config_fails_at_construction(config, message):
    with pytest.raises(ValueError) as err:
        NDVISeasonal(**config)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "config, bands",
    [
        ({}, ("ndvi_mean", "clear_count")),
        (
            {"statistics": ["median", "std", "min", "max"]},
            ("ndvi_median", "ndvi_std", "ndvi_min", "ndvi_max"),
        ),
        (
            {"season_mode": "year", "statistics": ["mean", "count"]},
            (
                "ndvi_mean_djf",
                "clear_count_djf",
                "ndvi_mean_mam",
                "clear_count_mam",
                "ndvi_mean_jja",
                "clear_count_jja",
                "ndvi_mean_son",
                "clear_count_son",
            ),
        ),
        (
            {
                "season_mode": "year",
                "seasons": {"wet": [11, 12, 1, 2, 3], "dry": [5, 6, 7, 8, 9]},
                "statistics": ["count"],
            },
            ("clear_count_wet", "clear_count_dry"),
        ),
    ],
)
def test_measurements_are_exactly_what_reduce_produces(config, bands):
    plugin = NDVISeasonal(**config)
    assert plugin.measurements == bands
    out = plugin.reduce(
        _ndvi_stack(["2022-12-05", "2023-01-20", "2023-04-01", "2023-07-11", "2023-10-30"])
    )
    assert tuple(out.data_vars) == bands
    for band in out.data_vars.values():
        if band.name.startswith("clear_count"):
            assert band.dtype == np.uint16 and band.attrs["nodata"] == 65535
        else:
            assert band.dtype == np.float32 and np.isnan(band.attrs["nodata"])
        assert band.dims == ("y", "x")
        assert band.odc.geobox == GEOBOX


@pytest.mark.parametrize("stat", ["mean", "median", "std", "min", "max", "count"])
@pytest.mark.parametrize("min_clear", [1, 2])
def test_task_mode_reduce_equals_numpy(stat, min_clear):
    stack = _ndvi_stack([f"2023-0{m}-1{m}" for m in range(1, 8)], seed=3)
    out = NDVISeasonal(statistics=[stat], min_clear=min_clear).reduce(stack).compute()
    band = "clear_count" if stat == "count" else f"ndvi_{stat}"
    expected = nan_stat(stack.ndvi.values, stat, min_clear)
    np.testing.assert_allclose(out[band].values, expected, atol=2e-6, equal_nan=True)


def test_year_mode_djf_spans_year_boundary_and_empty_season():
    dates = [
        "2022-12-03",
        "2022-12-19",
        "2023-01-04",
        "2023-02-21",
        "2023-03-09",
        "2023-05-28",
        "2023-09-02",
        "2023-11-20",
    ]
    stack = _ndvi_stack(dates, seed=5)
    out = (
        NDVISeasonal(season_mode="year", statistics=["mean", "count", "max"])
        .reduce(stack)
        .compute()
    )
    values = stack.ndvi.values
    djf, mam, son = values[:4], values[4:6], values[6:]
    np.testing.assert_allclose(
        out.ndvi_mean_djf.values, nan_stat(djf, "mean"), atol=2e-6, equal_nan=True
    )
    np.testing.assert_allclose(
        out.ndvi_max_mam.values, nan_stat(mam, "max"), atol=0, equal_nan=True
    )
    np.testing.assert_array_equal(out.clear_count_son.values, nan_stat(son, "count"))
    # no winter (JJA) observation at all: counts 0, statistics nodata
    assert (out.clear_count_jja.values == 0).all()
    assert np.isnan(out.ndvi_mean_jja.values).all()


def test_all_cloud_and_no_observation_tiles_write_nodata_and_zero_counts():
    cloudy = _ndvi_stack(["2023-01-01", "2023-01-17"], cloud=1.0)
    empty = _ndvi_stack([])
    for stack in (cloudy, empty):
        out = NDVISeasonal(statistics=["mean", "median", "count"]).reduce(stack).compute()
        assert np.isnan(out.ndvi_mean.values).all() and np.isnan(out.ndvi_median.values).all()
        assert (out.clear_count.values == 0).all()
        # the streaming reduction (no median) too
        out = NDVISeasonal(statistics=["mean", "count"]).reduce(stack).compute()
        assert np.isnan(out.ndvi_mean.values).all() and (out.clear_count.values == 0).all()


def test_reduce_keeps_spatial_chunks_and_is_lazy():
    stack = _ndvi_stack(["2023-01-01", "2023-02-01", "2023-03-01"], chunks=(1, 16, 16))
    out = NDVISeasonal().reduce(stack)
    assert isinstance(out.ndvi_mean.data, da.Array)
    assert out.ndvi_mean.data.chunks == ((16, 16), (16, 16))


def test_rgba_preview_is_uint8_and_transparent_where_nodata():
    stack = _ndvi_stack(["2023-01-01"], cloud=0.5)
    plugin = NDVISeasonal()
    result = plugin.reduce(stack)
    rgba = plugin.rgba(result).compute()
    assert rgba.dims == ("y", "x", "band") and rgba.dtype == np.uint8
    nan = np.isnan(result.ndvi_mean.values)
    assert (rgba.sel(band="a").values[nan] == 0).all()
    assert (rgba.sel(band="a").values[~nan] == 255).all()


def test_odc_stats_loader_refuses_products_with_different_encodings():
    from types import SimpleNamespace

    from odc_ndvi_plugin.presets import C2_QA_PIXEL_FLAGS

    def product(name: str, scale: float) -> SimpleNamespace:
        band = {"nodata": 0, "scale_factor": scale, "add_offset": -0.2}
        return SimpleNamespace(
            name=name,
            measurements={
                "red": band,
                "nir08": band,
                "qa_pixel": {"nodata": 1, "flags_definition": C2_QA_PIXEL_FLAGS},
            },
        )

    datasets = [
        SimpleNamespace(product=product("a", 2.75e-5)),
        SimpleNamespace(product=product("b", 1e-4)),
    ]
    with pytest.raises(
        ValueError, match="plugin_config.loader: 'odc-stats' applies one product's band encoding"
    ):
        NDVISeasonal(loader="odc-stats").input_data(datasets, GEOBOX)
