"""Climatology and anomaly end to end (issue 19): a synthetic multi-year world (Landsat 8
and a Landsat 7 whose NDVI is biased), indexed in a real datacube, tasks from the real
``odc-stats save-tasks``, runs through plain ``odc-stats run`` and ``odc-ndvi run``, every
band compared with numpy truth (tests/truth_clim.py on tests/helpers/truth.py's per-day NDVI).

The world (one 64 px tile, 2014-12 .. 2021-02, a date every 30 days per sensor):

- the climatology window is six whole blocks, 2014-12--P6Y: DJF crosses the year boundary;
- ``min_clear`` 2 with ~3 dates per season and sensor: some blocks' seasons are missing;
- an overcast corner (rows 48-63, cols 0-15) in the first four blocks: too few baseline
  years there (``min_baseline_years`` 3 in these runs);
- a drought (NDVI - 0.35) over rows/cols 16-39 in DJF 2020-12 .. 2021-02, the anomaly task;
- Landsat 7 sees ``0.8 * NDVI + 0.05``; ``ndvi_adjust`` [1.25, -0.0625] undoes it.
"""

from __future__ import annotations

import datetime as dt
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
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from tests.conftest import CFG_DIR
from tests.fixtures.archives import add_and_index
from tests.helpers.lines import CLI
from tests.helpers.truth import CLEAR_RULES, truth_days
from tests.truth_clim import anomaly_truth, block_means, climatology_truth

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEASONS = {"djf": [12, 1, 2], "mam": [3, 4, 5], "jja": [6, 7, 8], "son": [9, 10, 11]}
CLIMATOLOGY_WINDOW = "2014-12--P72M"  # (odc-stats ends 2014-12--P6Y on 2020-11-29)
ANOMALY_WINDOW = "2020-12--P3M"
MIN_CLEAR = 2
MIN_YEARS = 3
L7_GAIN = (0.8, 0.05)
ADJUST = [1 / L7_GAIN[0], -L7_GAIN[1] / L7_GAIN[0]]  # [1.25, -0.0625]
DROUGHT = (16, 16, 40, 40)  # rows, cols [16, 40)
OVERCAST = (48, 0, 64, 16)
COMMON = dict(
    tiles=(1, 1),
    tile_px=64,
    n_paths=1,
    rows_per_path=1,
    revisit_days=30,
    cloudiness=0.3,
    end=dt.date(2021, 2, 28),
    droughts=((dt.date(2020, 12, 1), dt.date(2021, 2, 28), *DROUGHT, 0.35),),
    overcast=((dt.date(2014, 12, 1), dt.date(2018, 11, 30), *OVERCAST),),
)


def _env(dcenv) -> dict[str, str]:
    env = {**os.environ, **dcenv.environ()}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory, datacube_env_module):
    root = tmp_path_factory.mktemp("clim")
    l8 = generate_archive(ArchiveSpec.for_tiles(start=dt.date(2014, 12, 3), **COMMON), root / "l8")
    l7 = generate_archive(
        ArchiveSpec.for_tiles(
            start=dt.date(2014, 12, 14),
            platform="landsat-7",
            product_name="ls7_c2l2_sr",
            ndvi_gain=L7_GAIN,
            **COMMON,
        ),
        root / "l7",
    )
    env = datacube_env_module
    add_and_index(l8, env)
    add_and_index(l7, env)
    dbs = {}
    for name, frequency, window in (
        ("climatology", "all", CLIMATOLOGY_WINDOW),
        ("anomaly", "seasonal", ANOMALY_WINDOW),
    ):
        config = root / f"save-tasks-{name}.yaml"
        doc = yaml.safe_load((CFG_DIR / f"save-tasks-usgs-c2-{name}.yaml").read_text())
        doc["input_products"] = "ls_c2l2_sr-ls7_c2l2_sr"
        assert doc["frequency"] == frequency
        config.write_text(yaml.safe_dump(doc))
        dbs[name] = save_tasks(
            env.environ(),
            config=config,
            grid=l8.spec.gridspec,
            temporal_range=window,
            output=root / f"{name}.db",
        )
    ((tile, geobox),) = l8.spec.tiles().items()
    rule = CLEAR_RULES["usgs_c2"]
    days8 = [(d.astype(object), v) for d, v in truth_days(l8, geobox, rule)]
    days7 = [(d.astype(object), v) for d, v in truth_days(l7, geobox, rule)]
    assert not {d for d, _ in days8} & {d for d, _ in days7}  # never the same solar day
    return dict(root=root, env=env, dbs=dbs, tile=tile, geobox=geobox, days8=days8, days7=days7)


def _days(world, *, adjust: bool, first: dt.date, last: dt.date):
    """Truth per solar day of both sensors in ``first..last``, L7 adjusted or not."""
    l7 = [(d, ADJUST[0] * v + ADJUST[1] if adjust else v) for d, v in world["days7"]]
    return sorted(
        ((d, v) for d, v in [*world["days8"], *l7] if first <= d <= last), key=lambda p: p[0]
    )


def _clim_days(world, adjust: bool):
    return _days(world, adjust=adjust, first=dt.date(2014, 12, 1), last=dt.date(2020, 11, 30))


def _anomaly_days(world):
    return _days(world, adjust=True, first=dt.date(2020, 12, 1), last=dt.date(2021, 2, 28))


def _run_config(world, mode: str, name: str, *, top=None, **plugin_config) -> Path:
    doc = yaml.safe_load((CFG_DIR / f"run-usgs-c2-{mode}.yaml").read_text())
    doc.update(top or {})
    doc["plugin_config"].update(min_clear=MIN_CLEAR, chunks={"x": 32, "y": 64}, **plugin_config)
    if "baseline" in plugin_config:
        doc["plugin_config"]["min_baseline_years"] = MIN_YEARS
    path = world["root"] / f"run-{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(
    world, tool: str, config: Path, db: Path, out: Path, **env: str
) -> subprocess.CompletedProcess:
    if tool == "odc-stats":
        cmd = [sys.executable, "-m", "odc.stats", "run", "--threads", "2"]
    else:
        cmd = [sys.executable, "-c", CLI, "run", "--threads", "2"]
    cmd += ["--config", str(config), "--location", out.as_uri(), str(db)]
    return subprocess.run(
        cmd,
        env={**_env(world["env"]), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _outputs(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    (item_path,) = out.rglob("*.stac-item.json")
    item = json.loads(item_path.read_text())
    bands = {}
    for band, asset in item["assets"].items():
        if band == "rgba":
            continue
        with rasterio.open(item_path.parent / Path(asset["href"]).name) as src:
            bands[band] = src.read(1)
    return item, bands


def _assert_bands(got: dict[str, np.ndarray], truth: dict[str, np.ndarray], what: str):
    for band, values in got.items():
        expected = truth[band]
        if band.startswith(("clear_", "baseline_years")):
            assert values.dtype == np.uint16, band
            np.testing.assert_array_equal(values, expected, err_msg=f"{what} {band}")
        else:
            assert values.dtype == np.float32, band
            np.testing.assert_allclose(
                values, expected, rtol=2e-5, atol=2e-5, equal_nan=True, err_msg=f"{what} {band}"
            )


@pytest.fixture(scope="module")
def climatology(world):
    """The harmonised climatology through plain ``odc-stats run``: the baseline."""
    out = world["root"] / "clim-on"
    config = _run_config(world, "climatology", "clim-on", ndvi_adjust={"ls7_c2l2_sr": ADJUST})
    proc = _run(world, "odc-stats", config, world["dbs"]["climatology"], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_climatology_through_odc_stats_run_matches_truth(world, climatology):
    item, got = _outputs(climatology)
    truth = climatology_truth(
        _clim_days(world, adjust=True), SEASONS, min_clear=MIN_CLEAR, shape=(64, 64)
    )
    expected_bands = [
        f"{stem}_{s}"
        for s in SEASONS
        for stem in ("ndvi_mean", "ndvi_std", "clear_years", "clear_count")
    ]
    assert sorted(got) == sorted(expected_bands)
    _assert_bands(got, truth, "climatology (harmonised)")
    assert item["properties"]["dtr:start_datetime"].startswith("2014-12-01")
    years = got["clear_years_djf"]
    assert years.max() == 6
    # min_clear bites: outside the overcast corner, blocks with clear days but < 2 of them
    means = block_means(_clim_days(world, adjust=True), SEASONS, 1)
    thin = sum(
        int(((count > 0) & (count < MIN_CLEAR)).sum())
        for season in means.values()
        for _, count in season.values()
    )
    assert thin > 100
    r0, c0, r1, c1 = OVERCAST
    assert (got["clear_years_jja"][r0:r1, c0:c1] <= 2).all()


def test_climatology_through_odc_ndvi_run_without_harmonisation(world, climatology):
    out = world["root"] / "clim-off"
    # ... and the optional statistics of the block means
    stats = ["mean", "std", "count", "median", "min", "max"]
    config = _run_config(world, "climatology", "clim-off", statistics=stats)
    proc = _run(world, "odc-ndvi", config, world["dbs"]["climatology"], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, got = _outputs(out)
    truth_off = climatology_truth(
        _clim_days(world, adjust=False), SEASONS, min_clear=MIN_CLEAR, shape=(64, 64)
    )
    assert len(got) == 4 * 7 and "ndvi_median_djf" in got and "ndvi_max_son" in got
    _assert_bands(got, truth_off, "climatology (not harmonised)")
    # the L7 bias is in this one and adjusted away in the other
    _, harmonised = _outputs(climatology)
    diff = np.abs(got["ndvi_mean_jja"] - harmonised["ndvi_mean_jja"])
    assert np.nanmedian(diff) > 0.01


@pytest.mark.parametrize(
    "tool, store",
    [("odc-stats", "file"), pytest.param("odc-ndvi", "s3", marks=pytest.mark.servers)],
)
def test_anomaly_matches_truth_and_names_its_baseline(world, climatology, tool, store, request):
    """Plain odc-stats with the baseline on disk; odc-ndvi run with it on S3 (moto)."""
    (base_item_path,) = climatology.rglob("*.stac-item.json")
    extra_env = {}
    if store == "s3":
        moto = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        s3 = moto.client("s3")
        for path in climatology.rglob("*"):
            if path.is_file() and ".staging" not in path.parts:
                s3.upload_file(str(path), bucket, f"clim/{path.relative_to(climatology)}")
        baseline = f"s3://{bucket}/clim"
        base_href = f"{baseline}/{base_item_path.relative_to(climatology)}"
        extra_env = moto.environ()
    else:
        baseline = climatology.as_uri()
        base_href = base_item_path.as_uri()
    out = world["root"] / f"anomaly-{tool}"
    config = _run_config(
        world,
        "anomaly",
        f"anomaly-{tool}",
        # a private bucket: signed reads with the credentials found, as for inputs
        top={"aws_unsigned": store != "s3"},
        baseline=baseline,
        ndvi_adjust={"ls7_c2l2_sr": ADJUST},
    )
    proc = _run(world, tool, config, world["dbs"]["anomaly"], out, **extra_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    item, got = _outputs(out)
    assert sorted(got) == sorted(
        ["ndvi_mean", "clear_count", "ndvi_anomaly", "ndvi_std_anomaly", "baseline_years"]
    )
    base_truth = climatology_truth(
        _clim_days(world, adjust=True), SEASONS, min_clear=MIN_CLEAR, shape=(64, 64)
    )
    truth = anomaly_truth(
        _anomaly_days(world),
        base_truth,
        "djf",
        min_clear=MIN_CLEAR,
        min_baseline_years=MIN_YEARS,
    )
    _assert_bands(got, truth, f"anomaly ({tool})")
    # lineage: the baseline item by id and href
    base_item = json.loads(base_item_path.read_text())
    named = item["properties"]["odc_ndvi:baseline"]
    assert named == {"id": base_item["id"], "href": base_href}
    links = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert [link["href"] for link in links] == [base_href]
    # the drought: strongly negative standardised anomalies exactly in its window
    z = got["ndvi_std_anomaly"]
    r0, c0, r1, c1 = DROUGHT
    inside = np.zeros(z.shape, bool)
    inside[r0:r1, c0:c1] = True
    assert np.isfinite(z[inside]).mean() > 0.5
    assert np.nanmax(z[inside]) < -3 and np.nanmedian(z[inside]) < -6
    outside = z[~inside & np.isfinite(z)]
    assert abs(np.median(outside)) < 1 and (outside < -3).mean() < 0.05
    assert (outside < np.nanmedian(z[inside])).mean() < 0.01
    # too few baseline years: NaN anomalies although this season's mean is there
    r0, c0, r1, c1 = OVERCAST
    corner = np.s_[r0:r1, c0:c1]
    assert (got["baseline_years"][corner] < MIN_YEARS).all()
    assert np.isfinite(got["ndvi_mean"][corner]).any()
    assert np.isnan(got["ndvi_anomaly"][corner]).all()
    assert np.isnan(got["ndvi_std_anomaly"][corner]).all()


def test_missing_baseline_fails_the_task_in_one_line_without_retry(world, tmp_path):
    empty = tmp_path / "no-climatology"
    empty.mkdir()
    config = _run_config(world, "anomaly", "anomaly-missing", baseline=empty.as_uri())
    report = tmp_path / "report.json"
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", CLI, "run", "--threads", "2", "--config", str(config)]
    cmd += ["--location", out.as_uri(), "--report", str(report), str(world["dbs"]["anomaly"])]
    proc = subprocess.run(
        cmd, env=_env(world["env"]), capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode != 0
    doc = json.loads(report.read_text())
    (task,) = doc["tasks"]
    assert task["status"] == "failed" and doc["totals"]["retried_attempts"] == 0
    error = task["error"]
    assert "\n" not in error
    assert "BaselineMissingError" in error and "tile 64x64 px at (1474560, " in error
    assert ") EPSG:3577 under " in error
    assert empty.as_uri() in error and error.endswith("run the climatology first")
    assert task["attempts"] == 1
    assert not list(out.rglob("*.stac-item.json"))


def test_baseline_on_another_grid_is_refused(world, climatology, tmp_path):
    # the climatology's item, moved by half a pixel: same tile, another grid
    (item_path,) = climatology.rglob("*.stac-item.json")
    item = json.loads(item_path.read_text())
    t = item["properties"]["proj:transform"]
    item["properties"]["proj:transform"] = [t[0], t[1], t[2] + 15, t[3], t[4], t[5]]
    other = tmp_path / "other-grid"
    other.mkdir()
    (other / item_path.name).write_text(json.dumps(item))
    config = _run_config(world, "anomaly", "anomaly-other-grid", baseline=other.as_uri())
    out = tmp_path / "out"
    # (plain odc-stats reports it too, then waits 60 s on exit: TaskRunner.__del__ closing
    # its client after a failed task, odc-stats 1.9.7)
    proc = _run(world, "odc-ndvi", config, world["dbs"]["anomaly"], out)
    assert proc.returncode != 0
    assert "is not on the grid of the baseline items that overlap it" in proc.stderr
    assert not list(out.rglob("*.stac-item.json"))


def test_odc_ndvi_run_refuses_a_period_that_is_not_whole_blocks(world, tmp_path):
    config = _run_config(world, "climatology", "clim-bad-period")
    out = tmp_path / "out"
    proc = _run(world, "odc-ndvi", config, world["dbs"]["anomaly"], out)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "season_mode climatology needs" in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert f"(period {ANOMALY_WINDOW})" in lines[0] and "whole 12-month blocks" in lines[0]
    assert not out.exists() or not list(out.rglob("*.tif"))
