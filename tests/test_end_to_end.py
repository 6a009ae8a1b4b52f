"""End to end on a real datacube: synthetic archive -> embedded PostgreSQL index ->
``odc-stats save-tasks`` -> ``odc-stats run`` (subprocesses) -> COGs + STAC, checked against
the generator's truth in plain numpy, re-indexed with the output product definition.

The archives carry the generator's hard cases (tests/fixtures/archives.py ``HARD_CASES``):
overlapping scenes of a day disagree, red/NIR is nodata under clear mask values, and three
solar dates are the first of a season whose UTC date is in the season before. So the
documented rules (first clear value of a day wins, band nodata is never clear, seasons by
solar date; tests/helpers/truth.py) decide the expected values, and ``min_clear`` is 2 in the runs
of the USGS archive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from odc_ndvi_plugin.dev.demo import save_tasks
from odc_ndvi_plugin.dev.index import add_products
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from tests.conftest import CFG_DIR
from tests.fixtures.archives import HARD_CASES, index_with_year_tasks
from tests.helpers.truth import (
    CLEAR_RULES,
    disagreeing_overlap_pixels,
    flag_clear_band_nodata_pixels,
    nan_stat,
    truth_days,
)

pytestmark = pytest.mark.integration

ALL_STATS = ["mean", "median", "std", "min", "max", "count"]
IFD_ORDER_MESSAGES = (
    "The offset of the main IFD should be 8",
    "The offset of the first block of the image should be after its IFD",
)
SEASON_MONTHS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
#: fewer clear observations of a season than this: its statistics are nodata
MIN_CLEAR = 2
#: ``--plugin-config`` of the odc-stats year runs (merged into the shipped config's)
YEAR_PLUGIN_CONFIG = yaml.safe_dump(
    {"statistics": ALL_STATS, "min_clear": MIN_CLEAR}, default_flow_style=True
)


def _season(date) -> str:
    return next(name for name, months in SEASON_MONTHS.items() if date.month in months)


def _env(dcenv) -> dict[str, str]:
    env = {**os.environ, **dcenv.environ()}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _odc_stats_run(
    env, config: Path, db: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "odc.stats",
        "run",
        "--config",
        str(config),
        # odc-stats 1.9.7 reads an unlimited cgroup CPU quota (-1) as 0 threads and hangs
        "--threads",
        "2",
        "--location",
        f"file://{out}",
        *extra,
        str(db),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150, check=False)


@pytest.fixture(scope="module")
def usgs(tmp_path_factory, datacube_env_module):
    """Tiny USGS C2 archive with the hard cases, indexed, with a 12-month (Dec..Nov) task db."""
    root = tmp_path_factory.mktemp("e2e")
    spec = ArchiveSpec.tiny(flavour="usgs_c2", **HARD_CASES)
    archive = generate_archive(spec, root / "archive")
    db, window = index_with_year_tasks(
        archive,
        datacube_env_module,
        root / "tasks" / "year.db",
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
    )
    return {
        "root": root,
        "spec": spec,
        "archive": archive,
        "db": db,
        "env": datacube_env_module,
        "window": window,
    }


@pytest.fixture(scope="module")
def year_run(usgs):
    """``odc-stats run`` (the real CLI) of the shipped year config, every statistic,
    ``min_clear`` 2."""
    out = usgs["root"] / "out-year"
    # dask warns of a graph above this size: below the COG bytes of a task here (odc-stats'
    # own sink sends ~288 KiB), above the graph of the load and reduction (~55-70 KiB: the
    # task's scenes), so a graph carrying encoded bands is reported (test below)
    env = {**_env(usgs["env"]), "DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD": "128kB"}
    proc = _odc_stats_run(
        env,
        CFG_DIR / "run-usgs-c2-year.yaml",
        usgs["db"],
        out,
        "--plugin-config",
        YEAR_PLUGIN_CONFIG,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _task_dir(out: Path, tile: tuple[int, int], period: str) -> Path:
    x, y = tile
    return out / f"x{x:+04d}" / f"y{y:+05d}" / period


def test_year_run_matches_truth_for_every_season_and_statistic(usgs, year_run):
    out, _ = year_run
    spec, archive = usgs["spec"], usgs["archive"]
    tiles = spec.tiles()
    assert len(tiles) == 2
    # the hard cases are in the data, so the rules decide the values compared below:
    # scenes acquired in one season (UTC) whose solar date is in the next ...
    assert {
        (_season(s.datetime.date()), _season(s.solar_date))
        for s in archive.scenes
        if _season(s.datetime.date()) != _season(s.solar_date)
    } == {("djf", "mam"), ("mam", "jja"), ("jja", "son")}
    rule = CLEAR_RULES["usgs_c2"]
    below_min_clear = 0
    for tile, geobox in tiles.items():
        # ... overlaps that disagree where both are clear, band nodata under clear flags
        assert disagreeing_overlap_pixels(archive, geobox, rule) > 1000
        assert flag_clear_band_nodata_pixels(archive, geobox, rule) > 500
        days = truth_days(archive, geobox, rule)
        task = _task_dir(out, tile, usgs["window"])
        for season, months in SEASON_MONTHS.items():
            sel = [v for d, v in days if d.astype(object).month in months]
            assert sel, f"no truth observations in {season}"
            stack = np.stack(sel)
            count = nan_stat(stack, "count")
            below_min_clear += int(((count > 0) & (count < MIN_CLEAR)).sum())
            for stat in ALL_STATS:
                band = f"clear_count_{season}" if stat == "count" else f"ndvi_{stat}_{season}"
                (cog,) = task.glob(f"*_{band}.tif")
                with rasterio.open(cog) as src:
                    got = src.read(1)
                    if stat == "count":
                        assert src.nodata == 65535
                    else:
                        assert np.isnan(src.nodata)
                expected = nan_stat(stack, stat, MIN_CLEAR)
                if stat == "count":
                    assert got.dtype == np.uint16
                    np.testing.assert_array_equal(got, expected, err_msg=f"{tile} {band}")
                else:
                    assert got.dtype == np.float32
                    np.testing.assert_allclose(
                        got, expected, rtol=0, atol=1e-5, equal_nan=True, err_msg=f"{tile} {band}"
                    )
        # the data is not trivially empty: most pixels have clear observations in every season
        with rasterio.open(next(task.glob("*_clear_count_jja.tif"))) as src:
            assert (src.read(1) > 0).mean() > 0.5
    # ... and pixels with clear observations, but fewer than min_clear, in some season
    assert below_min_clear > 100


def test_plain_odc_stats_run_ships_no_computed_result_inside_a_graph(year_run):
    """odc-stats 1.9.7 encodes COGs in the main process and sends the bytes inside the
    graph of its writes; with the plugin the bands are encoded by worker tasks."""
    _, proc = year_run
    assert "large graph" not in proc.stderr, proc.stderr[-3000:]


def test_cogs_are_valid_and_stac_items_are_consistent(usgs, year_run):
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    out, _ = year_run
    items = sorted(out.rglob("*.stac-item.json"))
    assert len(items) == 2
    for item_path in items:
        item = json.loads(item_path.read_text())
        assert item["properties"]["odc:product"] == "ndvi_seasonal_year_usgs_c2"
        assert item["properties"]["dtr:start_datetime"].startswith("2019-12-01")
        bands = {k for k in item["assets"]}
        assert len(bands) == 4 * len(ALL_STATS)
        for band, asset in item["assets"].items():
            path = item_path.parent / Path(asset["href"]).name
            assert path.exists(), band
            warnings_, errors, _ = validate(str(path), full_check=True)
            # odc-geo's COG writer (used by odc-stats' sink) puts the overview IFDs before
            # the main IFD; GDAL 3.6's validator flags that ordering and nothing else
            errors = [e for e in errors if not e.startswith(IFD_ORDER_MESSAGES)]
            assert not errors, (band, errors)
            with rasterio.open(path) as src:
                # odc-geo writes images smaller than one block (64 px tiles here) untiled
                assert src.profile["tiled"] or max(src.shape) <= 512
        # rgba preview written beside, and nothing staged left behind
        assert list(item_path.parent.glob("*_rgba.tif"))
        assert not list(item_path.parent.glob(".*"))


def test_rerun_skips_and_overwrite_recomputes(usgs, year_run):
    out, _ = year_run
    item = next(out.rglob("*.stac-item.json"))
    before = item.stat().st_mtime_ns
    env = _env(usgs["env"])
    proc = _odc_stats_run(
        env,
        CFG_DIR / "run-usgs-c2-year.yaml",
        usgs["db"],
        out,
        "--plugin-config",
        YEAR_PLUGIN_CONFIG,
    )
    assert proc.returncode == 0
    assert "Skipped" in proc.stderr + proc.stdout
    assert item.stat().st_mtime_ns == before
    proc = _odc_stats_run(
        env,
        CFG_DIR / "run-usgs-c2-year.yaml",
        usgs["db"],
        out,
        "--plugin-config",
        YEAR_PLUGIN_CONFIG,
        "--overwrite",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    changed = [p for p in out.rglob("*.stac-item.json") if p.stat().st_mtime_ns != before]
    assert item in changed


def test_outputs_index_back_and_load_the_same_values(usgs, year_run, make_datacube_env):
    """The ecosystem's own indexer (odc-apps-dc-tools ``fs-to-dc --stac``) takes odc-stats'
    STAC items with our product definition (its ``load`` section from the grid), and
    ``dc.load`` gives back the COGs' pixels, on the product's own grid."""
    from odc_ndvi_plugin import NDVISeasonal
    from odc_ndvi_plugin.product import output_product_definition

    out, _ = year_run
    run_cfg = yaml.safe_load((CFG_DIR / "run-usgs-c2-year.yaml").read_text())
    plugin = NDVISeasonal(**{**run_cfg["plugin_config"], "statistics": ALL_STATS})
    doc = output_product_definition(plugin, run_cfg["product"], grid=usgs["spec"].gridspec)
    product_yaml = usgs["root"] / "ndvi-product.yaml"
    product_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = make_datacube_env()
    add_products(env, [product_yaml])
    items = sorted(out.rglob("*.stac-item.json"))
    fs_to_dc = Path(sys.executable).with_name("fs-to-dc")
    proc = subprocess.run(
        [str(fs_to_dc), str(out), "--stac", "--glob", "**/*.stac-item.json"],
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    dc = env.datacube()
    assert len(dc.find_datasets(product=doc["name"])) == len(items) == 2
    tile, geobox = next(iter(usgs["spec"].tiles().items()))
    task = _task_dir(out, tile, usgs["window"])
    bands = ["ndvi_mean_djf", "clear_count_djf"]
    # on the tile's grid, and with no grid given: the product's load section decides
    like = dc.load(product=doc["name"], like=geobox, measurements=bands)
    own = dc.load(product=doc["name"], measurements=bands, geopolygon=geobox.extent)
    assert own.odc.geobox == geobox
    for loaded in (like, own):
        with rasterio.open(next(task.glob("*_ndvi_mean_djf.tif"))) as src:
            np.testing.assert_array_equal(loaded.ndvi_mean_djf.values[0], src.read(1))
        with rasterio.open(next(task.glob("*_clear_count_djf.tif"))) as src:
            np.testing.assert_array_equal(loaded.clear_count_djf.values[0], src.read(1))


def test_outputs_carry_the_configs_identity_and_never_deas(usgs, year_run):
    """odc-stats' defaults would say ga.gov.au / collections.dea.ga.gov.au; the shipped
    config names its own publisher, and no output file mentions DEA."""
    out, _ = year_run
    run_cfg = yaml.safe_load((CFG_DIR / "run-usgs-c2-year.yaml").read_text())
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert b"ga.gov.au" not in path.read_bytes(), path
    for item_path in out.rglob("*.stac-item.json"):
        item = json.loads(item_path.read_text())
        assert item["properties"]["odc:producer"] == run_cfg["product"]["producer"]
        assert item["properties"]["license"] == "CC-BY-4.0"
        (overview,) = [ln["href"] for ln in item["links"] if ln["rel"] == "product_overview"]
        assert overview.startswith(f"https://{run_cfg['product']['collections_site']}/product/")


def _run_ours(config: Path, db: Path, out: Path, plugin_config=None, **overrides):
    """Our runner (odc-stats' TaskRunner subclass) in-process, as `odc-ndvi run` does;
    ``plugin_config`` is merged into the config's, as odc-stats' ``--plugin-config`` is."""
    from odc_ndvi_plugin.ops.runconfig import load_run_config
    from odc_ndvi_plugin.ops.session import execute

    mapping = yaml.safe_load(config.read_text())
    mapping["plugin_config"] = {**mapping.get("plugin_config", {}), **(plugin_config or {})}
    cfg, _ = load_run_config(
        mapping,
        filedb=str(db),
        output_location=f"file://{out}",
        threads=2,
        **overrides,
    )
    return execute(cfg, max_in_flight=2)


def _check_seasons(
    out: Path,
    archive,
    clear_fn,
    tasks: dict[str, tuple[int, ...]],
    band_suffix,
    min_clear: int = 1,
) -> None:
    for tile, geobox in archive.tiles().items():
        days = truth_days(archive, geobox, clear_fn)
        for period, months in tasks.items():
            task = _task_dir(out, tile, period)
            sel = [v for d, v in days if d.astype(object).month in months]
            stack = np.stack(sel) if sel else np.zeros((0, *geobox.shape.yx))
            for stat in ("mean", "count"):
                band = ("clear_count" if stat == "count" else f"ndvi_{stat}") + band_suffix(period)
                (cog,) = task.glob(f"*_{band}.tif")
                with rasterio.open(cog) as src:
                    got = src.read(1)
                np.testing.assert_allclose(
                    got,
                    nan_stat(stack, stat, min_clear),
                    atol=1e-5,
                    equal_nan=True,
                    err_msg=f"{tile} {band}",
                )


def test_seasonal_tasks_in_task_mode_match_truth(usgs):
    """cfg/save-tasks-usgs-c2-seasonal.yaml (`--frequency seasonal`) + cfg/run-usgs-c2-seasonal.yaml,
    min_clear 2. odc-stats bins scenes into season tasks by solar date: the scenes of the 1st
    of March, June and September belong to the season that starts that day."""
    root, archive = usgs["root"], usgs["archive"]
    db = save_tasks(
        usgs["env"].environ(),
        config=CFG_DIR / "save-tasks-usgs-c2-seasonal.yaml",
        grid=usgs["spec"].gridspec,
        temporal_range=usgs["window"],
        output=root / "tasks" / "seasonal.db",
    )
    out = root / "out-seasonal"
    summary = _run_ours(
        CFG_DIR / "run-usgs-c2-seasonal.yaml", db, out, plugin_config={"min_clear": MIN_CLEAR}
    )
    assert (summary.done, summary.failed) == (8, 0)  # 2 tiles x 4 seasons
    tasks = {
        "2019-12--P3M": (12, 1, 2),
        "2020-03--P3M": (3, 4, 5),
        "2020-06--P3M": (6, 7, 8),
        "2020-09--P3M": (9, 10, 11),
    }
    _check_seasons(
        out, archive, CLEAR_RULES["usgs_c2"], tasks, lambda period: "", min_clear=MIN_CLEAR
    )


def test_dea_ard_year_config_matches_truth(usgs, tiny_archive):
    """cfg/save-tasks-dea-ard-year.yaml + cfg/run-dea-ard-year.yaml on the DEA flavour
    (hard cases too; the config's min_clear, 1)."""
    archive = tiny_archive("dea_ard", **HARD_CASES)
    root = usgs["root"]
    db, window = index_with_year_tasks(
        archive,
        usgs["env"],
        root / "tasks" / "dea-year.db",
        config=CFG_DIR / "save-tasks-dea-ard-year.yaml",
    )
    assert window == usgs["window"]
    out = root / "out-dea"
    summary = _run_ours(CFG_DIR / "run-dea-ard-year.yaml", db, out)
    assert (summary.done, summary.failed) == (2, 0)
    seasons = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
    for season, months in seasons.items():
        _check_seasons(
            out,
            archive,
            CLEAR_RULES["dea_ard"],
            {usgs["window"]: months},
            lambda _p, s=season: f"_{s}",
        )


def test_odc_ndvi_run_is_a_drop_in_for_odc_stats_run(usgs, tmp_path):
    """The same arguments - config, task db, a task selection and odc-stats' overrides
    (--plugin-config, --resampling, --cog-config, --dataset-filters, --heartbeat-filepath,
    --no-public) - through the real ``odc-stats run`` and the real ``odc-ndvi run``: the
    same files, pixel for pixel; ours wrote the heartbeat. (``--resolution`` is passed to
    odc-stats' TaskRunner as odc-stats passes it; odc-stats 1.9.7's own grid check
    crashes on odc-geo's GridSpec - 'XY' object is not iterable - in both CLIs.)"""
    path = sorted({s.wrs_path for s in usgs["archive"].scenes})[0]
    beat = tmp_path / "beat" / "heartbeat"

    def args(out: Path) -> list[str]:
        return [
            "--config", str(CFG_DIR / "run-usgs-c2-year.yaml"),
            "--threads", "2",
            "--location", f"file://{out}",
            "--plugin-config", YEAR_PLUGIN_CONFIG,
            "--resampling", "nearest",
            "--cog-config", "{compress: deflate, zlevel: 1, blocksize: 64}",
            "--dataset-filters", json.dumps({"landsat:wrs_path": path}),
            "--heartbeat-filepath", str(beat),
            "--no-public",
            str(usgs["db"]),
            "1",
        ]  # fmt: skip

    env = _env(usgs["env"])
    theirs, ours = tmp_path / "odc-stats", tmp_path / "odc-ndvi"
    runs = {}
    for name, exe, out in (("odc-stats", "odc-stats", theirs), ("odc-ndvi", "odc-ndvi", ours)):
        cmd = [str(Path(sys.executable).with_name(exe)), "run", *args(out)]
        runs[name] = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=150, check=False
        )
        assert runs[name].returncode == 0, (name, runs[name].stderr[-3000:])
        if name == "odc-stats":
            beat.unlink(missing_ok=True)  # the heartbeat asserted below is ours
    assert beat.read_text().startswith("20")  # the UTC time, odc-stats' format
    files = sorted(p.relative_to(ours) for p in ours.rglob("*.tif"))
    assert files == sorted(p.relative_to(theirs) for p in theirs.rglob("*.tif"))
    # one task (the selection); --cog-config replaced cog_opts, its rgba override too
    assert len(files) == 4 * len(ALL_STATS)
    for rel in files:
        with rasterio.open(ours / rel) as a, rasterio.open(theirs / rel) as b:
            assert a.profile["compress"] == b.profile["compress"] == "deflate"
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=str(rel))
