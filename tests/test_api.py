"""``seasonal_ndvi``: the notebook call against the batch run and against the numpy truth.

One module archive: 3 x 3 odc-stats tiles of 64 px (tiny USGS C2, 12 solar days, 4
overlapping scenes a day), indexed in the embedded PostgreSQL, its 12-month tasks made by
the real ``odc-stats save-tasks`` and run by ``odc-ndvi run`` in a child process. The
request is 145 x 151 px starting 7 rows and 10 columns into the region: cut into tiles of
64 px it is 2 x 2 whole tiles plus a ragged edge, and none of its tiles is an odc-stats
tile, so stitching is checked, not assumed.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import dask
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from dask.optimization import cull
from odc.geo.geobox import GeoBox

from odc_ndvi_plugin import NDVISeasonal
from odc_ndvi_plugin.api import (
    DEFAULT_TILE_PX,
    NOT_HONOURED,
    TimeWindow,
    find_input_datasets,
    max_tasks_per_tile,
    output_geobox,
    plan_tiles,
    seasonal_ndvi,
)
from odc_ndvi_plugin.dev.index import add_products, index_datasets
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from tests.conftest import CFG_DIR, REPO
from tests.fixtures.archives import add_and_index, index_with_year_tasks
from tests.helpers.lines import CLI, child_env
from tests.helpers.truth import CLEAR_RULES, nan_stat, truth_days

pytestmark = pytest.mark.integration

RUN_CONFIG = CFG_DIR / "run-usgs-c2-year.yaml"
PLUGIN_CONFIG = yaml.safe_load(RUN_CONFIG.read_text())["plugin_config"]
SEASON_MONTHS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
TILE_PX = 64
#: ``odc-ndvi`` in a child process, importing this checkout (the console script may be
#: missing in a plain checkout)


def _child_env() -> dict[str, str]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def region(tmp_path_factory, datacube_env_module):
    root = tmp_path_factory.mktemp("api")
    archive = generate_archive(ArchiveSpec.tiny(tiles=(3, 3), tile_px=TILE_PX), root / "archive")
    db, window = index_with_year_tasks(
        archive,
        datacube_env_module,
        root / "tasks" / "year.db",
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
    )
    grid = archive.spec.region_geobox
    request = GeoBox(
        (2 * TILE_PX + 17, 2 * TILE_PX + 23), grid.affine * Affine.translation(10, 7), grid.crs
    )
    return SimpleNamespace(
        root=root, archive=archive, env=datacube_env_module, db=db, window=window, request=request
    )


@pytest.fixture(scope="module")
def batch(region) -> Path:
    """``odc-ndvi run`` of the shipped year config over every task of the region."""
    out = region.root / "out"
    cmd = [sys.executable, "-c", CLI, "run", "--config", str(RUN_CONFIG)]
    cmd += ["--location", f"file://{out}", "--threads", "2", str(region.db)]
    proc = subprocess.run(
        cmd, env=_child_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "done 9" in proc.stdout, proc.stdout
    return out


@pytest.fixture(scope="module")
def lazy(region):
    """The call with the run config's own plugin_config, lazy."""
    with region.env.datacube() as dc:
        return seasonal_ndvi(
            dc,
            product="ls_c2l2_sr",
            geobox=region.request,
            time=region.window,
            tile_px=TILE_PX,
            **PLUGIN_CONFIG,
        )


@pytest.fixture(scope="module")
def computed(lazy):
    with dask.config.set(scheduler="threads", num_workers=2):
        return lazy.compute()


def _batch_band(out: Path, band: str, geobox: GeoBox) -> tuple[np.ndarray, float | int]:
    """``band`` of every task's COG pasted on ``geobox`` (plain rasterio), and its nodata."""
    canvas, nodata = None, None
    for cog in out.rglob(f"*_{band}.tif"):
        with rasterio.open(cog) as src:
            data, nodata = src.read(1), src.nodata
            t = src.transform
        if canvas is None:
            canvas = np.full(geobox.shape.yx, nodata, dtype=data.dtype)
        col = round((t.c - geobox.affine.c) / t.a)
        row = round((t.f - geobox.affine.f) / t.e)
        r0, c0 = max(row, 0), max(col, 0)
        r1 = min(row + data.shape[0], canvas.shape[0])
        c1 = min(col + data.shape[1], canvas.shape[1])
        if r0 < r1 and c0 < c1:
            canvas[r0:r1, c0:c1] = data[r0 - row : r1 - row, c0 - col : c1 - col]
    assert canvas is not None, f"no {band} output"
    return canvas, nodata


def test_lazy_result_is_lazy_and_has_the_plugins_bands(lazy, region):
    plugin = NDVISeasonal(**PLUGIN_CONFIG)
    assert list(lazy.data_vars) == list(plugin.measurements)
    assert lazy.odc.geobox == region.request
    assert lazy.attrs["tiles"] == 9
    for band in plugin.config.output_bands:
        arr = lazy[band.name]
        assert isinstance(arr.data, dask.array.Array)
        assert arr.dtype == np.dtype(band.dtype)
        np.testing.assert_equal(arr.attrs["nodata"], band.nodata)


def test_the_notebook_call_leaves_odc_stats_unpatched(computed):
    """Only a run starting patches odc-stats' sink (see odc_ndvi_plugin._compat); the
    notebook call, its plugin and its computation in this process leave it as it is."""
    from odc_ndvi_plugin._compat import cogs_encoded_on_workers

    assert computed is not None and not cogs_encoded_on_workers()


def test_equals_the_batch_outputs_pixel_for_pixel(computed, batch, region):
    for band in computed.data_vars:
        want, nodata = _batch_band(batch, band, region.request)
        got = computed[band]
        assert got.dtype == want.dtype, band
        np.testing.assert_equal(got.attrs["nodata"], nodata)
        if band.startswith("clear_count"):
            np.testing.assert_array_equal(got.values, want, err_msg=band)
        else:
            np.testing.assert_allclose(
                got.values, want, rtol=0, atol=1e-6, equal_nan=True, err_msg=band
            )


def test_equals_the_numpy_truth(computed, region):
    days = truth_days(region.archive, region.request, CLEAR_RULES["usgs_c2"])
    for season, months in SEASON_MONTHS.items():
        stack = np.stack([v for d, v in days if d.astype(object).month in months])
        count = computed[f"clear_count_{season}"].values
        np.testing.assert_array_equal(count, nan_stat(stack, "count"), err_msg=season)
        np.testing.assert_allclose(
            computed[f"ndvi_mean_{season}"].values,
            nan_stat(stack, "mean"),
            rtol=0,
            atol=1e-5,
            equal_nan=True,
            err_msg=season,
        )
        assert (count > 0).mean() > 0.5  # not trivially empty


# ----------------------------------------------------------------------------- graph size


def _tasks_for(ds, ys: slice, xs: slice) -> int:
    """Tasks needed to compute every band of ``ds`` on ``[ys, xs]`` (a union of whole
    chunks): the graph culled to the keys of those chunks."""
    keys = []
    for band in ds.data_vars:
        arr = ds[band].data
        y_edges, x_edges = (np.cumsum((0, *c)) for c in arr.chunks)
        rows = [i for i in range(len(y_edges) - 1) if ys.start <= y_edges[i] < ys.stop]
        cols = [j for j in range(len(x_edges) - 1) if xs.start <= x_edges[j] < xs.stop]
        assert y_edges[rows[-1] + 1] == ys.stop and x_edges[cols[-1] + 1] == xs.stop
        keys += [(arr.name, i, j) for i in rows for j in cols]
    return len(cull(dict(ds.__dask_graph__()), keys)[0])


def _plans(region, geobox, tile_px, plugin):
    window = TimeWindow.parse(region.window)
    with region.env.datacube() as dc:
        datasets = find_input_datasets(dc, "ls_c2l2_sr", geobox, window, plugin)
    return plan_tiles(datasets, geobox, window, tile_px)


def _check_tiles_bounded(ds, plans, tile_px, plugin) -> dict[tuple[int, int], int]:
    sizes = {}
    for plan in plans:
        (row, col), (h, w) = plan.index, plan.geobox.shape.yx
        ys, xs = slice(row * tile_px, row * tile_px + h), slice(col * tile_px, col * tile_px + w)
        sizes[plan.index] = _tasks_for(ds, ys, xs)
        bound = max_tasks_per_tile(
            plan.solar_days,
            tile_shape=(h, w),
            chunks=plugin.config.chunks,
            n_bands=len(plugin.measurements),
        )
        assert sizes[plan.index] <= bound, (plan.index, plan.solar_days, sizes[plan.index], bound)
    return sizes


def test_graph_per_output_tile_is_bounded(lazy, region):
    plugin = NDVISeasonal(**PLUGIN_CONFIG)
    plans = _plans(region, region.request, TILE_PX, plugin)
    assert len(plans) == 9 and {p.solar_days for p in plans} == {12}
    _check_tiles_bounded(lazy, plans, TILE_PX, plugin)
    # one read task per tile and solar day: no task loads more than one day of one tile
    reads = [
        k
        for k in dict(lazy.__dask_graph__())
        if str(k[0] if isinstance(k, tuple) else k).startswith("_day_block")
    ]
    assert len(reads) == sum(p.solar_days for p in plans)


def test_a_10000_px_request_builds_a_bounded_graph_per_tile(region):
    """10,000 x 10,000 px at 30 m from the region's corner (mostly beyond the archive): 16
    tiles of 3200 px; every tile within its bound, and the tile holding the archive costs
    exactly what it costs in a request of 2 x 2 tiles. Nothing is computed."""
    plugin = NDVISeasonal(**PLUGIN_CONFIG)
    corner = region.archive.spec.region_geobox.affine
    sizes = {}
    for side in (10_000, 2 * DEFAULT_TILE_PX):
        big = GeoBox((side, side), corner, region.request.crs)
        with region.env.datacube() as dc:
            ds = seasonal_ndvi(
                dc, product="ls_c2l2_sr", geobox=big, time=region.window, **PLUGIN_CONFIG
            )
        assert ds.sizes == {"y": side, "x": side}
        plans = _plans(region, big, DEFAULT_TILE_PX, plugin)
        assert len(plans) == ds.attrs["tiles"] == math.ceil(side / DEFAULT_TILE_PX) ** 2
        sizes[side] = _check_tiles_bounded(ds, plans, DEFAULT_TILE_PX, plugin)
        assert [p.solar_days for p in plans if p.datasets] == [12]  # the archive's corner
        # tiles share nothing (beyond identical empty tiles), so the whole graph is the sum
        assert len(dict(ds.__dask_graph__())) <= sum(sizes[side].values())
    assert sizes[10_000][(0, 0)] == sizes[2 * DEFAULT_TILE_PX][(0, 0)]
    # a tile without data is the plugin's empty result: no clear observation, NaN
    empty = ds.isel(y=slice(5000, 5004), x=slice(5000, 5004)).compute(scheduler="threads")
    for band in empty.data_vars:
        values = empty[band].values
        assert (values == 0).all() if band.startswith("clear_count") else np.isnan(values).all()


# ----------------------------------------------------------------------------- presets, modes


@pytest.fixture(scope="module")
def dea(region, tiny_archive):
    """The tiny DEA ARD archive (another product) in the module's datacube."""
    return add_and_index(tiny_archive("dea_ard"), region.env).archive


def _truth_check(ds, archive, geobox, window, preset, groups, stats):
    lo, hi = TimeWindow.parse(window).start.date(), TimeWindow.parse(window).end.date()
    days = [
        (d, v)
        for d, v in truth_days(archive, geobox, CLEAR_RULES[preset])
        if lo <= d.astype(object) <= hi
    ]
    assert ds.odc.geobox == geobox
    observed = 0
    for suffix, months in groups.items():
        sel = [v for d, v in days if d.astype(object).month in months]
        stack = np.stack(sel) if sel else np.full((0, *geobox.shape.yx), np.nan)
        for stat in stats:
            band = ("clear_count" if stat == "count" else f"ndvi_{stat}") + suffix
            got, want = ds[band].values, nan_stat(stack, stat)
            if stat == "count":
                np.testing.assert_array_equal(got, want, err_msg=band)
                observed += int(got.sum())
            else:
                np.testing.assert_allclose(
                    got, want, rtol=0, atol=1e-5, equal_nan=True, err_msg=band
                )
    assert observed > 0


@pytest.mark.parametrize(
    "preset, mode, time, where, aliases",
    [
        ("usgs_c2", "task", "2020-03--P3M", "like", {"red_band": "SR_B4", "mask_band": "pq"}),
        ("dea_ard", "year", ("2019-12-01", "2020-11-30"), "geobox", {}),
        ("dea_ard", "task", "2019-12--P3M", "geobox", {}),
    ],
)
def test_presets_and_season_modes_match_truth(region, dea, preset, mode, time, where, aliases):
    archive = region.archive if preset == "usgs_c2" else dea
    stats = (
        ["mean", "count"] if mode == "year" else ["mean", "median", "std", "min", "max", "count"]
    )
    grid = archive.spec.region_geobox
    geobox = GeoBox((50, 70), grid.affine * Affine.translation(30, 5), grid.crs)
    kw = {"like": geobox} if where == "like" else {"geobox": geobox}
    with region.env.datacube() as dc:
        ds = seasonal_ndvi(
            dc,
            product=archive.product,
            time=time,
            tile_px=32,
            preset=preset,
            season_mode=mode,
            statistics=stats,
            **aliases,  # band aliases, as dc.load accepts them
            **kw,
        ).compute(scheduler="threads")
    groups = (
        {f"_{s}": m for s, m in SEASON_MONTHS.items()} if mode == "year" else {"": range(1, 13)}
    )
    _truth_check(ds, archive, geobox, time, preset, groups, stats)


def test_the_tutorials_dc_load_call_is_ours_by_its_name(region):
    """The tutorial's ``dc.load`` keywords, verbatim but for this datacube's names (a box of
    longitude/latitude inside the region): ``seasonal_ndvi`` takes them with their meaning
    (the same grid as ``dc.load``'s), plus the season keywords, and matches the truth."""
    call = dict(
        product="ls_c2l2_sr",
        x=(148.447, 148.492),
        y=(-36.27, -36.24),
        time=("2019-12-01", "2020-11-30"),
        measurements=["qa_pixel", "red", "nir08"],
        resampling={"qa_pixel": "nearest", "*": "average"},
        output_crs="EPSG:3577",
        resolution=(-30, 30),
        dask_chunks={"time": 1, "x": 2048, "y": 2048},
        group_by="solar_day",
    )
    with region.env.datacube() as dc:
        loaded = dc.load(**call)  # lazy: for its grid only
        ds = seasonal_ndvi(dc, **call, season_mode="year")  # one tile (stitching: above)
    assert ds.odc.geobox == loaded.odc.geobox
    groups = {f"_{s}": m for s, m in SEASON_MONTHS.items()}
    ds = ds.compute(scheduler="threads")
    _truth_check(
        ds, region.archive, loaded.odc.geobox, call["time"], "usgs_c2", groups, ["mean", "count"]
    )


def test_dc_load_keywords_select_bands_blocks_and_datasets(region):
    """measurements= picks output bands, dask_chunks= sets the blocks, a search field and
    dataset_predicate= narrow the datasets alike, like= gives grid and time. Lazy only."""
    kw = dict(product="ls_c2l2_sr", geobox=region.request, season_mode="year")
    with region.env.datacube() as dc:
        every = seasonal_ndvi(dc, time=region.window, **kw)
        some = seasonal_ndvi(
            dc,
            time=region.window,
            measurements=["clear_count_jja"],
            dask_chunks={"x": 16, "y": 16},
            tile_px=TILE_PX,
            **kw,
        )
        path = region.archive.scenes[0].region_code
        searched = seasonal_ndvi(dc, time=region.window, region_code=path, **kw)
        kept = seasonal_ndvi(
            dc,
            time=region.window,
            dataset_predicate=lambda d: d.metadata.region_code == path,
            **kw,
        )
        given = seasonal_ndvi(
            dc,
            datasets=dc.find_datasets(product="ls_c2l2_sr"),
            time=region.window,
            geobox=region.request,
            season_mode="year",
        )
        kw.pop("geobox")
        days = [np.datetime64("2019-12-01T10"), np.datetime64("2020-11-29T10")]
        again = seasonal_ndvi(dc, like=every.expand_dims(time=days), **kw)  # a dc.load result
    assert list(some.data_vars) == ["clear_count_jja"]
    assert max(some["clear_count_jja"].chunks[0]) == 16
    assert 0 < searched.attrs["datasets"] == kept.attrs["datasets"] < every.attrs["datasets"]
    assert (
        given.attrs["datasets"] == every.attrs["datasets"]
        and given.attrs["products"] == "ls_c2l2_sr"
    )
    assert again.odc.geobox == every.odc.geobox
    assert again.attrs["time_range"] == "2019-12-01T10:00:00/2020-11-29T10:00:00"


def test_a_list_of_products_is_one_stack(region, tmp_path):
    """Two products of one collection (as Landsat 8 and 9): a second archive of the same
    surface on other dates, indexed as product ``ls_c2l2_sr_b``; the result holds both.
    Its first scenes are taken on the morning of 1 December, 23:49 UTC on 30 November:
    inside the window by solar date, as odc-stats bins them."""
    spec = ArchiveSpec.tiny(start=dt.date(2019, 12, 1))  # 4 days before the module's dates
    other = generate_archive(spec, tmp_path / "b")
    assert min(s.datetime for s in other.scenes).date() == dt.date(2019, 11, 30)
    product_doc = yaml.safe_load(other.product_definition.read_text())
    product_doc["name"] = product_doc["metadata"]["product"]["name"] = "ls_c2l2_sr_b"
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(product_doc))
    add_products(region.env, [tmp_path / "b.yaml"])
    docs = []
    for path in other.dataset_paths:
        doc = yaml.safe_load(path.read_text())
        doc["product"] = {"name": "ls_c2l2_sr_b"}
        docs.append(path.with_name(path.name.replace(".odc-metadata", ".b.odc-metadata")))
        docs[-1].write_text(yaml.safe_dump(doc))
    index_datasets(region.env, docs)
    geobox = spec.region_geobox
    with region.env.datacube() as dc:
        ds = seasonal_ndvi(
            dc,
            product=["ls_c2l2_sr", "ls_c2l2_sr_b"],
            geobox=geobox,
            time="2019-12--P12M",
            tile_px=TILE_PX,
            **PLUGIN_CONFIG,
        ).compute(scheduler="threads")
    days = truth_days(region.archive, geobox, CLEAR_RULES["usgs_c2"])
    days += truth_days(other, geobox, CLEAR_RULES["usgs_c2"])
    assert len({d for d, _ in days}) == len(days)  # the products observe on other days
    for season, months in SEASON_MONTHS.items():
        stack = np.stack([v for d, v in days if d.astype(object).month in months])
        np.testing.assert_array_equal(ds[f"clear_count_{season}"].values, nan_stat(stack, "count"))
        np.testing.assert_allclose(
            ds[f"ndvi_mean_{season}"].values, nan_stat(stack, "mean"), atol=1e-5, equal_nan=True
        )


# ----------------------------------------------------------------------------- errors


def _error(fn) -> str:
    with pytest.raises(ValueError) as err:
        fn()
    return str(err.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"colour": "green"},
        {"statistics": ["mode"]},
        {"season_mode": "month"},
        {"chunks": {"t": 3}},
        {"chunk": 3},  # nearest the plugin's 'chunks', not our 'dask_chunks'
    ],
)
def test_a_bad_key_is_the_plugins_error(region, bad):
    plugin_error = _error(lambda: NDVISeasonal(**bad))
    with region.env.datacube() as dc:
        ours = _error(
            lambda: seasonal_ndvi(
                dc, product="ls_c2l2_sr", geobox=region.request, time="2020", **bad
            )
        )
    assert ours == plugin_error and plugin_error.startswith("plugin_config")


def test_product_errors_name_the_product_and_band(region):
    with region.env.datacube() as dc:
        kw = dict(geobox=region.request, time="2019-12--P12M")
        assert "has no band or alias 'nbart_red'" in _error(
            lambda: seasonal_ndvi(dc, product="ls_c2l2_sr", preset="dea_ard", **kw)
        )
        assert "'ls_c2l2_sr_x' is not in this datacube" in _error(
            lambda: seasonal_ndvi(dc, product="ls_c2l2_sr_x", **kw)
        )


def test_year_mode_takes_at_most_twelve_months_and_warns_of_a_split_season(region):
    with region.env.datacube() as dc:
        kw = dict(product="ls_c2l2_sr", geobox=region.request, season_mode="year")
        assert "13 months" in _error(lambda: seasonal_ndvi(dc, time="2019-12--P13M", **kw))
        with pytest.warns(
            UserWarning, match="season 'djf' takes the months 2020-01, 2020-02, 2020-12"
        ):
            seasonal_ndvi(dc, time="2020", **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seasonal_ndvi(dc, time="2019-12--P12M", **kw)
        assert not [w for w in caught if "contiguous" in str(w.message)]


# ----------------------------------------------------------------------------- no database


@pytest.mark.parametrize(
    "time, start, end",
    [
        ("2019-12--P12M", "2019-12-01T00:00:00", "2020-11-30T23:59:59.999999"),
        ("2020", "2020-01-01T00:00:00", "2020-12-31T23:59:59.999999"),
        (("2019-12-01", "2020-11-30"), "2019-12-01T00:00:00", "2020-11-30T23:59:59.999999"),
        (("2020-03", "2020-05"), "2020-03-01T00:00:00", "2020-05-31T23:59:59.999999"),
        (
            (dt.datetime(2020, 1, 2, 3), dt.datetime(2020, 1, 5)),
            "2020-01-02T03:00:00",
            "2020-01-05T00:00:00",
        ),
    ],
)
def test_time_windows(time, start, end):
    window = TimeWindow.parse(time)
    assert (window.start.isoformat(), window.end.isoformat()) == (start, end)
    if end.endswith("23:59:59.999999"):  # whole days read as dates
        assert window.label == f"{start[:10]}/{end[:10]}"


def test_output_geobox_from_lonlat_is_on_the_pixel_grid_and_covers_the_box():
    from odc.geo.geom import box

    lonlat = dict(x=(148.40, 148.55), y=(-36.30, -36.20))
    gbox = output_geobox(**lonlat, output_crs="EPSG:3577", resolution=30)
    assert gbox.resolution.xy == (30, -30)
    assert gbox.affine.c % 30 == 0 and gbox.affine.f % 30 == 0
    wanted = box(148.40, -36.30, 148.55, -36.20, "EPSG:4326").to_crs("EPSG:3577")
    assert gbox.extent.contains(wanted)
    # the box's bounding box in the output CRS, grown to whole pixels, no more
    for got, want in zip(gbox.boundingbox, wanted.boundingbox, strict=True):
        assert abs(got - want) < 30
    # dc.load's other spellings of the same request
    assert (
        output_geobox(
            lon=lonlat["x"], lat=lonlat["y"], output_crs="EPSG:3577", resolution=(-30, 30)
        )
        == gbox
    )
    assert (
        output_geobox(
            geopolygon=box(148.40, -36.30, 148.55, -36.20, "EPSG:4326"),
            output_crs="EPSG:3577",
            resolution=30,
        )
        == gbox
    )
    assert output_geobox(**lonlat, load_hints={"output_crs": "EPSG:3577", "resolution": 30}) == gbox
    shifted = output_geobox(**lonlat, output_crs="EPSG:3577", resolution=30, align=(10, 10))
    assert shifted.affine.c % 30 == 10 and shifted.affine.f % 30 == 10
    with pytest.raises(ValueError, match="not longitude/latitude"):
        output_geobox(
            x=(1.47e6, 1.48e6), y=(-4.06e6, -4.05e6), output_crs="EPSG:3577", resolution=30
        )
    metres = dict(x=(1.47e6, 1.48e6), y=(-4.06e6, -4.05e6), output_crs="EPSG:3577", resolution=30)
    assert output_geobox(**metres, crs="EPSG:3577").shape.yx == (334, 334)  # crs: of x/y
    with pytest.raises(ValueError, match="one of geobox=, like="):
        output_geobox(geobox=gbox, like=gbox)
    with pytest.raises(ValueError, match="output_crs: give output_crs= and resolution="):
        output_geobox(**lonlat)


def test_the_old_crs_and_xy_crs_keep_working_with_a_warning():
    lonlat = dict(x=(148.40, 148.55), y=(-36.30, -36.20), resolution=30)
    want = output_geobox(**lonlat, output_crs="EPSG:3577")
    with pytest.warns(FutureWarning, match="give output_crs='EPSG:3577'") as caught:
        assert output_geobox(**lonlat, crs="EPSG:3577") == want  # the output CRS, as before
    assert caught[0].filename == __file__  # pointed at the caller
    metres = dict(x=(1.47e6, 1.48e6), y=(-4.06e6, -4.05e6), resolution=30)
    with pytest.warns(FutureWarning, match="give crs='EPSG:3577'"):
        got = output_geobox(**metres, output_crs="EPSG:3577", xy_crs="EPSG:3577")
    assert got.shape.yx == (334, 334)
    with pytest.raises(ValueError, match="or xy_crs=, not both"):
        output_geobox(**metres, output_crs="EPSG:3577", crs="EPSG:3577", xy_crs="EPSG:3577")


@pytest.mark.parametrize(
    "kw, words",
    [
        *(({key: True}, reason) for key, reason in NOT_HONOURED.items()),
        ({"group_by": None}, "only 'solar_day'"),
        ({"measurements": ["nbart_red"]}, "'nbart_red' are not output bands"),
        ({"resampling": {"red": "nearest", "nir08": "cubic"}}, "need one method"),
        ({"dask_chunks": {"band": 3}}, "dask_chunks: expected"),
        ({"outputcrs": "EPSG:3577"}, "(did you mean 'output_crs'?)"),
    ],
)
def test_dc_load_keywords_we_cannot_honour_say_why(region, kw, words):
    with region.env.datacube() as dc:
        text = _error(
            lambda: seasonal_ndvi(
                dc, product="ls_c2l2_sr", geobox=region.request, time="2020", **kw
            )
        )
    assert words in text and "\n" not in text
