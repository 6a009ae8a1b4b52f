"""``seasonal_ndvi`` in climatology and anomaly modes, against the numpy truth.

One module archive: a tiny USGS C2 region of 2 x 1 tiles of 64 px over three season-years
(2017-12 .. 2020-11, a solar day every 32 days, one scene a day), indexed in the embedded
PostgreSQL. The climatology of the first two years is the baseline of JJA 2020, given as
the in-memory Dataset and as the location a real ``odc-stats save-tasks --frequency all``
+ runner climatology run wrote to. The request is 100 x 50 px, 9 rows and 13 columns into
the region, cut into tiles of 48 px: no request tile is a baseline tile. Truth: the
archive's per-day clear NDVI (tests/helpers/truth.py) through the rules of tests/truth_clim.py.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from affine import Affine
from odc.geo.geobox import GeoBox

from odc_ndvi_plugin.api import seasonal_ndvi
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from odc_ndvi_plugin.seasons import DEFAULT_SEASONS
from tests.conftest import CFG_DIR
from tests.fixtures.archives import add_and_index
from tests.helpers.truth import CLEAR_RULES, truth_days
from tests.truth_clim import anomaly_truth, climatology_truth

pytestmark = pytest.mark.integration

PRODUCT = "ls_c2l2_sr"
BASELINE_YEARS = "2017-12--P2Y"
SEASON = "2020-06--P3M"  # JJA 2020, after the baseline
MIN_YEARS = 2
FLOAT_TOL = {"rtol": 0, "atol": 2e-5, "equal_nan": True}


@pytest.fixture(scope="module")
def world(tmp_path_factory, datacube_env_module):
    root = tmp_path_factory.mktemp("api_clim")
    spec = ArchiveSpec.tiny(
        tiles=(2, 1),
        tile_px=64,
        start=dt.date(2017, 12, 5),
        end=dt.date(2020, 11, 30),
        n_paths=1,  # one scene a day: a lean world (fusion is tests/test_api.py's)
        rows_per_path=1,
    )
    archive = generate_archive(spec, root / "archive")
    add_and_index(archive, datacube_env_module)
    grid = spec.region_geobox
    request = GeoBox((50, 100), grid.affine * Affine.translation(13, 9), grid.crs)
    days = [(d.astype(object), v) for d, v in truth_days(archive, request, CLEAR_RULES["usgs_c2"])]
    return SimpleNamespace(
        root=root, archive=archive, env=datacube_env_module, request=request, days=days
    )


def _between(days, window: str):
    start, years = window.split("--P")
    first = dt.date.fromisoformat(start + "-01")
    n = int(years[:-1]) * (12 if years.endswith("Y") else 1)
    last_month = first.year * 12 + first.month - 1 + n
    end = dt.date(last_month // 12, last_month % 12 + 1, 1)
    return [(d, v) for d, v in days if first <= d < end]


@pytest.fixture(scope="module")
def climatology(world):
    with world.env.datacube() as dc:
        lazy = seasonal_ndvi(
            dc,
            product=PRODUCT,
            time=BASELINE_YEARS,
            like=world.request,
            tile_px=48,
            season_mode="climatology",
            statistics=["mean", "count", "median", "min", "max"],
        )
        return lazy, lazy.compute()


def test_a_climatology_equals_the_numpy_truth(world, climatology):
    lazy, computed = climatology
    assert lazy.attrs["season_mode"] == "climatology"
    truth = climatology_truth(
        _between(world.days, BASELINE_YEARS), DEFAULT_SEASONS, shape=world.request.shape.yx
    )
    assert set(computed.data_vars) == set(truth)
    for name, expected in truth.items():
        got = computed[name].values
        if name.startswith(("clear_", "baseline_")):
            assert got.dtype == np.uint16, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:
            assert got.dtype == np.float32, name
            np.testing.assert_allclose(got, expected, **FLOAT_TOL, err_msg=name)
    # both years counted almost everywhere: the std is a real std, not NaN everywhere
    assert (computed["clear_years_jja"].values == 2).mean() > 0.8


def _check_anomaly(world, got, baseline_truth):
    # against the baseline as it is stored (float32): a std of a few thousandths divides
    # the float64 truth's rounding into visible differences
    stored = {
        k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in baseline_truth.items()
    }
    truth = anomaly_truth(_between(world.days, SEASON), stored, "jja", min_baseline_years=MIN_YEARS)
    assert list(got.data_vars) == [
        "ndvi_mean",
        "clear_count",
        "ndvi_anomaly",
        "ndvi_std_anomaly",
        "baseline_years",
    ]
    for name, expected in truth.items():
        values = got[name].values
        if name in ("clear_count", "baseline_years"):
            assert values.dtype == np.uint16, name
            np.testing.assert_array_equal(values, expected, err_msg=name)
        elif name == "ndvi_std_anomaly":
            # the anomaly and the baseline's std each agree to FLOAT_TOL's atol; z = a / s
            # then agrees to (da + |z| ds) / s, large where two years were alike (s ~ 1e-3)
            np.testing.assert_array_equal(np.isnan(values), np.isnan(expected), err_msg=name)
            std, atol = stored["ndvi_std_jja"], FLOAT_TOL["atol"]
            tol = atol * (1 + np.abs(expected)) / std + 1e-5
            ok = np.isnan(expected) | (np.abs(values - expected) <= tol)
            assert ok.all(), (name, np.argwhere(~ok)[:5])
        else:
            np.testing.assert_allclose(values, expected, **FLOAT_TOL, err_msg=name)
    assert np.isfinite(got["ndvi_std_anomaly"].values).mean() > 0.5
    assert got.attrs["season"] == "jja" and got.attrs["season_mode"] == "anomaly"


def test_an_anomaly_against_an_in_memory_climatology_equals_the_truth(world, climatology):
    lazy_clim, computed_clim = climatology
    truth = climatology_truth(
        _between(world.days, BASELINE_YEARS), DEFAULT_SEASONS, shape=world.request.shape.yx
    )
    # a part of the climatology's region: the baseline is cut to the request
    inner = GeoBox((30, 61), world.request.affine * Affine.translation(7, 11), world.request.crs)
    with world.env.datacube() as dc:
        for baseline in (lazy_clim, computed_clim):
            got = seasonal_ndvi(
                dc,
                product=PRODUCT,
                time=SEASON,
                like=world.request,
                tile_px=48,
                season_mode="anomaly",
                baseline=baseline,
                min_baseline_years=MIN_YEARS,
            ).compute()
            _check_anomaly(world, got, truth)
        part = seasonal_ndvi(
            dc,
            product=PRODUCT,
            time=SEASON,
            like=inner,
            tile_px=48,
            season_mode="anomaly",
            baseline=computed_clim,
            min_baseline_years=MIN_YEARS,
        ).compute()
    np.testing.assert_array_equal(
        part["ndvi_std_anomaly"].values, got["ndvi_std_anomaly"].values[11:41, 7:68]
    )


def test_windows_baselines_and_grids_that_cannot_be_used_are_refused(world, climatology):
    _, clim = climatology
    cases = [
        (dict(time="2017-12--P18M", season_mode="climatology"), "not a climatology window"),
        (dict(time="2018-01--P2Y", season_mode="climatology"), "first month of a season"),
        (dict(time="2020-07--P3M", season_mode="anomaly", baseline=clim), "is not one season"),
        (dict(time=SEASON, season_mode="anomaly"), "needs baseline="),
        (
            dict(time=SEASON, season_mode="anomaly", baseline=clim[["ndvi_mean_jja"]]),
            "no ndvi_std_jja, clear_years_jja",
        ),
        (
            dict(time=SEASON, season_mode="anomaly", baseline=clim, statistics=["median"]),
            "plugin_config.statistics",
        ),
    ]
    shifted = GeoBox((20, 20), world.request.affine * Affine.translation(0.5, 0), world.request.crs)
    outside = GeoBox((20, 20), world.request.affine * Affine.translation(90, 0), world.request.crs)
    with world.env.datacube() as dc:
        picked = seasonal_ndvi(
            dc,
            product=PRODUCT,
            time=SEASON,
            like=world.request,
            season_mode="anomaly",
            baseline=clim,
            measurements=["ndvi_std_anomaly", "baseline_years"],
        )
        assert list(picked.data_vars) == ["ndvi_std_anomaly", "baseline_years"]
        for kwargs, message in cases:
            with pytest.raises(ValueError, match=message):
                seasonal_ndvi(dc, product=PRODUCT, like=world.request, **kwargs)
        for like, message in ((shifted, "not on the request's pixel grid"), (outside, "cover")):
            with pytest.raises(ValueError, match=message):
                seasonal_ndvi(
                    dc,
                    product=PRODUCT,
                    time=SEASON,
                    like=like,
                    season_mode="anomaly",
                    baseline=clim,
                )


# ----------------------------------------------------------------------------- a location


@pytest.fixture(scope="module")
def baseline_location(world):
    """The climatology as a batch run writes it: save-tasks --frequency all + the runner."""
    from odc_ndvi_plugin.dev.demo import save_tasks
    from odc_ndvi_plugin.ops.runner import load_run_config
    from odc_ndvi_plugin.ops.session import execute

    db = save_tasks(  # frequency: all -> one task per tile over the whole range
        world.env.environ(),
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
        grid=world.archive.spec.gridspec,
        temporal_range=BASELINE_YEARS,
        output=world.root / "climatology.db",
    )
    run_cfg = yaml.safe_load((CFG_DIR / "run-usgs-c2-year.yaml").read_text())
    run_cfg["plugin_config"]["season_mode"] = "climatology"
    out = world.root / "climatology"
    cfg, _ = load_run_config(run_cfg, filedb=str(db), output_location=f"file://{out}", threads=2)
    summary = execute(cfg, max_in_flight=2)
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    return out


def test_an_anomaly_against_a_climatology_location_equals_the_truth(world, baseline_location):
    truth = climatology_truth(
        _between(world.days, BASELINE_YEARS), DEFAULT_SEASONS, shape=world.request.shape.yx
    )
    # the shipped anomaly config's plugin_config as keywords (preview_band and all)
    shipped = yaml.safe_load((CFG_DIR / "run-usgs-c2-anomaly.yaml").read_text())["plugin_config"]
    shipped.update(baseline=f"file://{baseline_location}", min_baseline_years=MIN_YEARS)
    with world.env.datacube() as dc:
        lazy = seasonal_ndvi(
            dc, product=PRODUCT, time=SEASON, like=world.request, tile_px=48, **shipped
        )
        assert lazy.attrs["baseline"] == f"file://{baseline_location}"
        _check_anomaly(world, lazy.compute(), truth)
        # beyond the region the climatology covered: one line, before any pixel is read
        beyond = GeoBox(
            (20, 20), world.request.affine * Affine.translation(120, 0), world.request.crs
        )
        with pytest.raises(ValueError, match="covers 400 px .* run the climatology there first"):
            seasonal_ndvi(
                dc,
                product=PRODUCT,
                time=SEASON,
                like=beyond,
                season_mode="anomaly",
                baseline=str(baseline_location),
            )
