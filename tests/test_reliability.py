"""Fault behaviour of ``odc-ndvi run`` on a real index, real files and our runner.

Every scenario works on a private copy of the session's tiny USGS C2 archive (2 tiles x
12 dates x 4 overlapping scenes), indexed into this module's datacube, with the *seasonal*
task db (2 tiles x 4 seasons = 8 tasks of ~12 scenes each). Faults are put into that copy
and undone afterwards. The scenario functions (``scenario_*``) are plain functions of a
:class:`Bench` so that ``benchmarks/fault_table.py`` runs exactly the same scenarios.

Rules these tests pin down (README-worthy):

* a task that cannot read an input fails alone, naming the dataset and the file/band;
  the run goes on, leaves nothing of the failed task behind and exits 1;
* a season without clear observations (all cloud, or no acquisitions at all) is written,
  with NaN statistics and ``clear_count`` 0;
* SIGTERM stops a run within seconds (exit 130), finished tasks stay, unfinished ones leave
  no files; a rerun computes exactly the missing tasks;
* a bad config fails ``run`` before any task, naming the key (or the output location);
* the product ``version`` is part of the output path only if ``output_location`` contains
  ``{version}``; otherwise an existing STAC item (whatever version wrote it) means "done" and
  only ``--overwrite`` recomputes;
* a task computed twice at once (an SQS message delivered twice) leaves whole, valid,
  identical files (staged, then committed by renames, the STAC item last);
* an attempt that fails, is interrupted or finishes after another attempt has finished the
  same task leaves that task's files alone (cleanup only removes its own staged files).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml

from odc_ndvi_plugin.dev.demo import save_tasks
from odc_ndvi_plugin.dev.index import DatacubeEnv, add_products, index_datasets
from odc_ndvi_plugin.dev.synthetic import (
    QA_PIXEL_BY_CONDITION,
    Archive,
    Condition,
    generate_archive,
)
from tests.fixtures.archives import index_with_year_tasks
from tests.helpers.lines import LineReader

REPO = Path(__file__).resolve().parent.parent
CFG_DIR = REPO / "cfg"
SEASONAL_RUN = CFG_DIR / "run-usgs-c2-seasonal.yaml"
YEAR_RUN = CFG_DIR / "run-usgs-c2-year.yaml"
SEASONAL_TASKS = CFG_DIR / "save-tasks-usgs-c2-seasonal.yaml"
PERIODS = ("2019-12--P3M", "2020-03--P3M", "2020-06--P3M", "2020-09--P3M")
BAND_FILE = {"red": "_SR_B4.TIF", "nir08": "_SR_B5.TIF", "qa_pixel": "_QA_PIXEL.TIF"}

#: ``odc-ndvi`` with every season of every reduced block delayed by ODC_NDVI_TEST_DELAY seconds and every
#: output file's final rename (temp name -> name, by the stores of odc_ndvi_plugin.storage)
#: by ODC_NDVI_TEST_WRITE_DELAY seconds
SLOW_CLI = """
import os, time
import odc_ndvi_plugin.storage as storage
import odc_ndvi_plugin.reduce._kernels as stats
_finish = stats._finish_group  # once per season and block, in both reductions
def _slow(*args, **kwargs):
    time.sleep(float(os.environ.get("ODC_NDVI_TEST_DELAY", "0")))
    gate, t0 = os.environ.get("ODC_NDVI_TEST_GATE"), time.monotonic()
    while gate and not os.path.exists(gate) and time.monotonic() - t0 < 120:
        time.sleep(0.05)  # held until the test opens the gate
    return _finish(*args, **kwargs)
stats._finish_group = _slow
class _SlowRename:
    def __getattr__(self, name):
        return getattr(os, name)
    @staticmethod
    def replace(src, dst):
        time.sleep(float(os.environ.get("ODC_NDVI_TEST_WRITE_DELAY", "0")))
        return os.replace(src, dst)
storage.os = _SlowRename()
from odc_ndvi_plugin.cli import main
main(prog_name="odc-ndvi")
"""


# -- the bench: archive copy, index, task db ---------------------------------------------------
@dataclass
class Bench:
    root: Path
    archive: Archive
    env: DatacubeEnv
    db: Path
    window: str

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return sorted(self.archive.tiles())

    def task_id(self, tile: tuple[int, int], period: str) -> str:
        return f"x{tile[0]}/y{tile[1]}/{period}"

    def all_tasks(self) -> list[str]:
        return [self.task_id(t, p) for t in self.tiles for p in PERIODS]

    def scenes(self, months: tuple[int, ...]) -> list:
        return [s for s in self.archive.scenes if s.solar_date.month in months]

    def environ(self) -> dict[str, str]:
        env = {**os.environ, **self.env.environ()}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def out(self, name: str) -> Path:
        path = self.root / "out" / name
        shutil.rmtree(path, ignore_errors=True)
        return path


def make_bench(root: Path, source: Archive, env: DatacubeEnv) -> Bench:
    """Copy ``source`` under ``root`` (faults are put into the copy), index it, save tasks."""
    copy = root / "archive"
    if not copy.exists():
        shutil.copytree(source.root, copy)
    archive = generate_archive(source.spec, copy)  # nothing to write: the plan of the copy
    db, window = index_with_year_tasks(
        archive, env, root / "tasks" / "seasonal.db", config=SEASONAL_TASKS
    )
    return Bench(root, archive, env, db, window)


def task_dir(out: Path, tile: tuple[int, int], period: str) -> Path:
    x, y = tile
    return out / f"x{x:+04d}" / f"y{y:+05d}" / period


def stac_items(out: Path) -> list[Path]:
    return sorted(out.rglob("*.stac-item.json")) if out.exists() else []


def live_glob(root: Path, pattern: str) -> list[Path]:
    """``root.rglob(pattern)`` while a runner works under ``root``: a folder it removes
    during the walk (a finished attempt's staging) makes the walk start again."""
    while True:
        try:
            return list(root.rglob(pattern))
        except FileNotFoundError:
            continue


def files_in(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def band_file(scene, band: str) -> Path:
    return scene.dataset_yaml.with_name(scene.name + BAND_FILE[band])


@contextmanager
def restored(*paths: Path):
    """Put ``paths`` back as they were (content or absence) after the block."""
    saved = {p: (p.read_bytes() if p.exists() else None) for p in paths}
    try:
        yield
    finally:
        for p, data in saved.items():
            if data is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(data)


def write_run_config(path: Path, base: Path, **patch: Any) -> Path:
    doc = yaml.safe_load(base.read_text())
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli_run(
    config: Path, db: Path, out: Path | str, *tasks: str, opts: tuple[str, ...] = ()
) -> tuple[Any, Any]:
    """``odc-ndvi run`` in-process (click's CliRunner); returns (result, RunSummary|None)."""
    from click.testing import CliRunner

    import odc_ndvi_plugin.ops.session as runner_mod
    from odc_ndvi_plugin.cli import main

    location = out if isinstance(out, str) else f"file://{out}"
    summaries = []
    real_execute = runner_mod.execute

    def spy(*a, **k):
        summaries.append(real_execute(*a, **k))
        return summaries[-1]

    runner_mod.execute = spy
    try:
        result = CliRunner().invoke(
            main,
            ["run", "--config", str(config), "--location", location, "--threads", "2"]
            + list(opts)
            + [str(db), *tasks],
        )
    finally:
        runner_mod.execute = real_execute
    return result, (summaries[0] if summaries else None)


def seasonal_config(bench: Bench, out: Path, *, threads: int) -> Any:
    """The shipped seasonal run config on the bench's task db, writing to ``out``."""
    from odc_ndvi_plugin.ops.runner import load_run_config

    cfg, _ = load_run_config(
        yaml.safe_load(SEASONAL_RUN.read_text()),
        filedb=str(bench.db),
        output_location=f"file://{out}",
        threads=threads,
    )
    return cfg


def slow_cli(
    bench: Bench,
    config: Path,
    out: Path,
    *args: str,
    delay: float,
    write_delay: float = 0.0,
    gate: Path | None = None,
) -> subprocess.Popen:
    """``odc-ndvi run`` as a subprocess, ``delay`` seconds added to every season of every reduced block and
    ``write_delay`` to every output file's rename into place; with ``gate`` (a path) the
    reduction waits until that file exists."""
    cmd = [sys.executable, "-c", SLOW_CLI, "run", "--config", str(config)]
    cmd += ["--location", f"file://{out}", "--threads", "2", *args]
    env = {
        **bench.environ(),
        "ODC_NDVI_TEST_DELAY": str(delay),
        "ODC_NDVI_TEST_WRITE_DELAY": str(write_delay),
        "ODC_NDVI_TEST_GATE": str(gate or ""),
    }
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# -- scenarios (shared with benchmarks/fault_table.py) ---------------------------------------
def scenario_unreadable_input(bench: Bench, fault: str, make_env=None) -> dict[str, Any]:
    """One task's input broken (truncated COG / missing file / band absent from the dataset
    doc); a second task of the same tile, other season, is fine. Run through the CLI."""
    tile = bench.tiles[0]
    bad, good = bench.task_id(tile, PERIODS[1]), bench.task_id(tile, PERIODS[2])
    victim = bench.scenes((3,))[0]
    red = band_file(victim, "red")
    db = bench.db
    out = bench.out(f"fault-{fault}")
    if fault == "band absent":
        # the task db caches dataset documents: index a copy without nir08 into a fresh
        # datacube and save tasks from there. `datacube dataset add` (Doc2Dataset) refuses
        # such a document; the index API takes it (as older indexing tools did, or when a
        # product gains a band after its datasets were indexed)
        from datacube.index.eo3 import prep_eo3
        from datacube.model import Dataset

        env = make_env()
        doc = yaml.safe_load(victim.dataset_yaml.read_text())
        del doc["measurements"]["nir08"]
        add_products(env, [bench.archive.product_definition])
        others = [p for p in bench.archive.dataset_paths if p != victim.dataset_yaml]
        index_datasets(env, others)
        with env.datacube() as dc:
            product = dc.index.products.get_by_name(bench.archive.product)
            uri = victim.dataset_yaml.as_uri()
            doc = prep_eo3(doc, resolution=None)  # extent etc., as Doc2Dataset does
            dc.index.datasets.add(Dataset(product, doc, uri=uri), with_lineage=False)
        db = save_tasks(
            env.environ(),
            config=SEASONAL_TASKS,
            grid=bench.archive.spec.gridspec,
            temporal_range=bench.window,
            output=bench.root / "tasks" / "no-nir.db",
        )
        names = ["'nir08'"]
    else:
        names = [red.name]
    t0 = time.monotonic()
    with restored(red):
        if fault == "truncated COG":
            red.write_bytes(red.read_bytes()[:300])
        elif fault == "missing file":
            red.unlink()
        result, summary = cli_run(SEASONAL_RUN, db, out, bad, good)
    return {
        "fault": f"{fault} (dataset {victim.dataset_yaml.parent.name})",
        "victim_id": _dataset_id(victim),
        "names": names,
        "result": result,
        "summary": summary,
        "bad": (tile, PERIODS[1]),
        "good": (tile, PERIODS[2]),
        "out": out,
        "seconds": time.monotonic() - t0,
    }


def _dataset_id(scene) -> str:
    return str(yaml.safe_load(scene.dataset_yaml.read_text())["id"])


def scenario_no_clear_observations(bench: Bench) -> dict[str, Any]:
    """Every MAM observation high-confidence cloud, and the year config (4 seasons) run on
    the MAM tasks: MAM is all cloud, DJF/JJA/SON have no acquisitions at all."""
    cloud = QA_PIXEL_BY_CONDITION[Condition.CLOUD_HIGH]
    qa_files = [band_file(s, "qa_pixel") for s in bench.scenes((3, 4, 5))]
    out = bench.out("no-clear")
    tasks = [bench.task_id(t, PERIODS[1]) for t in bench.tiles]
    t0 = time.monotonic()
    with restored(*qa_files):
        for path in qa_files:
            with rasterio.open(path) as src:
                profile, qa = src.profile, src.read(1)
            qa = np.where(qa == 1, qa, cloud).astype(qa.dtype)  # keep fill (1), cloud elsewhere
            profile.update(driver="GTiff")
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            profile["tiled"] = False
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(qa, 1)
        result, summary = cli_run(YEAR_RUN, bench.db, out, *tasks)
    bands: dict[str, list[np.ndarray]] = {}
    for tile in bench.tiles:
        for tif in task_dir(out, tile, PERIODS[1]).glob("*.tif"):
            band = tif.name.split(f"{PERIODS[1]}_")[-1].removesuffix(".tif")
            with rasterio.open(tif) as src:
                bands.setdefault(band, []).append(src.read(1))
    return {
        "result": result,
        "summary": summary,
        "out": out,
        "bands": bands,
        "qa_files": len(qa_files),
        "seconds": time.monotonic() - t0,
    }


def scenario_sigterm(bench: Bench, delay: float = 0.5, write_delay: float = 0.5) -> dict[str, Any]:
    """SIGTERM to ``odc-ndvi run`` (all 8 tasks, one at a time, computing slowed by
    ``delay`` and each file's rename by ``write_delay``) after its first finished task, at
    the worst moment: while the next task's STAC item is being written. Then a plain rerun."""
    from odc_ndvi_plugin.ops.session import execute

    out = bench.out("sigterm")
    proc = slow_cli(
        bench,
        SEASONAL_RUN,
        out,
        "--max-in-flight",
        "1",
        str(bench.db),
        delay=delay,
        write_delay=write_delay,
    )
    reader = LineReader(proc.stderr)
    try:
        started = reader.wait_for(" done", timeout=90)
        deadline, in_stac_write = time.monotonic() + 30, False
        while started and not in_stac_write and time.monotonic() < deadline:
            in_stac_write = bool(live_glob(out, ".*.stac-item.json.*.part"))
            time.sleep(0.02)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        stop_seconds = time.monotonic() - t_term
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = reader.text()
    finished = stac_items(out)
    files = files_in(out)
    missing_assets = [
        str(item.parent / Path(a["href"]).name)
        for item in finished
        for a in json.loads(item.read_text())["assets"].values()
        if not (item.parent / Path(a["href"]).name).exists()
    ]
    cfg = seasonal_config(bench, out, threads=2)
    t0 = time.monotonic()
    rerun = execute(cfg, max_in_flight=2)
    return {
        "started": started,
        "in_stac_write": in_stac_write,
        "missing_assets": missing_assets,
        "rc": rc,
        "stop_seconds": stop_seconds,
        "stderr": stderr,
        "finished_before": [p.parent for p in finished],
        "files_before": files,
        "rerun": rerun,
        "rerun_seconds": time.monotonic() - t0,
        "after": stac_items(out),
        "n_tasks": len(bench.all_tasks()),
        "out": out,
    }


def scenario_version_change(bench: Bench) -> dict[str, Any]:
    """Outputs of version 0.1.0 exist; version 0.2.0 runs at the same location, then with
    --overwrite, then at a location with {version} in it."""
    task = bench.task_id(bench.tiles[0], PERIODS[1])
    cfgs = bench.root / "cfg"
    base = yaml.safe_load(SEASONAL_RUN.read_text())["product"]
    v1 = write_run_config(cfgs / "v1.yaml", SEASONAL_RUN, product={**base, "version": "0.1.0"})
    v2 = write_run_config(cfgs / "v2.yaml", SEASONAL_RUN, product={**base, "version": "0.2.0"})
    out = bench.out("versions")
    runs = {}
    runs["v1"] = cli_run(v1, bench.db, out, task)[1]
    item = stac_items(out)[0]
    runs["v2"] = cli_run(v2, bench.db, out, task)[1]
    version_after_v2 = json.loads(item.read_text())["properties"]["odc:dataset_version"]
    runs["v2 --overwrite"] = cli_run(v2, bench.db, out, task, opts=("--overwrite",))[1]
    version_after_overwrite = json.loads(item.read_text())["properties"]["odc:dataset_version"]
    templ = bench.out("versions-templated")
    runs["v1 {version}"] = cli_run(v1, bench.db, f"file://{templ}/{{version}}", task)[1]
    runs["v2 {version}"] = cli_run(v2, bench.db, f"file://{templ}/{{version}}", task)[1]
    return {
        "runs": runs,
        "item": item,
        "version_after_v2": version_after_v2,
        "version_after_overwrite": version_after_overwrite,
        "templated": templ,
        "out": out,
    }


def scenario_delivered_twice(bench: Bench, delay: float = 1.0) -> dict[str, Any]:
    """The same task computed by two ``odc-ndvi run --overwrite`` processes at once (as two
    workers would after an SQS message is delivered twice), over an existing output."""
    from odc_ndvi_plugin.ops.session import execute

    tile = bench.tiles[1]
    task = bench.task_id(tile, PERIODS[2])
    ref = bench.out("twice-reference")
    cfg = seasonal_config(bench, ref, threads=2)
    reference = execute(cfg, tasks=[task])
    out = bench.out("twice")
    shutil.copytree(ref, out)  # an existing output, being overwritten twice at once
    t0 = time.monotonic()
    procs = [
        slow_cli(bench, SEASONAL_RUN, out, "--overwrite", str(bench.db), task, delay=delay)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    return {
        "reference": reference,
        "ref_dir": task_dir(ref, tile, PERIODS[2]),
        "dir": task_dir(out, tile, PERIODS[2]),
        "rcs": [p.returncode for p in procs],
        "stderr": [e for _, e in outs],
        "seconds": time.monotonic() - t0,
    }


def scenario_duplicate_outlived(bench: Bench, ending: str, delay: float = 0.5) -> dict[str, Any]:
    """Runner A (a slow ``odc-ndvi run`` process) computes a task; while it runs, runner B
    computes the same task to completion (an SQS redelivery after A's lease lapsed). Then A
    is SIGTERMed (``ending="sigterm"``) or left to finish (``"finish"``). B's files must
    survive A either way, byte for byte and inode for inode."""
    from odc_ndvi_plugin.ops.session import execute

    tile = bench.tiles[0]
    task = bench.task_id(tile, PERIODS[3])
    out = bench.out(f"outlived-{ending}")
    gate = bench.root / f"gate-{ending}"  # A's reduction is held until B has finished
    proc = slow_cli(bench, SEASONAL_RUN, out, "-v", str(bench.db), task, delay=delay, gate=gate)
    reader = LineReader(proc.stderr)
    try:
        submitted = reader.wait_for("Submitting", timeout=90)
        cfg = seasonal_config(bench, out, threads=1)
        b = execute(cfg, tasks=[task])
        a_running_after_b = proc.poll() is None
        b_files = {f: (f.stat().st_ino, f.read_bytes()) for f in files_in(out)}
        if ending == "sigterm":
            proc.send_signal(signal.SIGTERM)
        gate.touch()
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = {f: (f.stat().st_ino, f.read_bytes()) for f in files_in(out)}
    return {
        "submitted": submitted,
        "b": b,
        "a_running_after_b": a_running_after_b,
        "rc": rc,
        "stderr": reader.text(),
        "b_files": b_files,
        "after": after,
        "rerun": execute(cfg, tasks=[task]),
        "dir": task_dir(out, tile, PERIODS[3]),
    }


def cog_errors(path: Path) -> list[str]:
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    _, errors, _ = validate(str(path), full_check=True)
    # odc-geo writes overview IFDs before the main IFD; GDAL 3.6's validator flags only that
    return [e for e in errors if "offset of" not in e.lower()]


# -- tests ------------------------------------------------------------------------------------
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_archive, datacube_env_module) -> Bench:
    root = tmp_path_factory.mktemp("reliability")
    return make_bench(root, tiny_archive("usgs_c2"), datacube_env_module)


@pytest.mark.parametrize("fault", ["truncated COG", "missing file", "band absent"])
def test_unreadable_input_fails_its_task_only(bench, make_datacube_env, fault):
    r = scenario_unreadable_input(bench, fault, make_env=make_datacube_env)
    result, summary = r["result"], r["summary"]
    assert result.exit_code == 1, result.output
    assert summary is not None, (result.output, result.exception)
    assert (summary.done, summary.failed, summary.skipped) == (1, 1, 0)
    ((location, error),) = summary.errors
    assert location == r["bad"][1] or location.endswith(r["bad"][1])
    assert r["victim_id"] in error
    for name in r["names"]:
        assert name in error
    assert r["victim_id"] in result.output  # printed by the CLI too
    assert files_in(task_dir(r["out"], *r["bad"])) == []  # no COG, no STAC item, no temp file
    good = task_dir(r["out"], *r["good"])
    assert len(list(good.glob("*.stac-item.json"))) == 1
    assert len(list(good.glob("*.tif"))) == 3  # ndvi_mean, clear_count, rgba
    assert not list(r["out"].rglob("*.tmp"))


def test_all_cloud_and_empty_seasons_are_written_as_nan_and_zero(bench):
    r = scenario_no_clear_observations(bench)
    assert r["result"].exit_code == 0, r["result"].output
    assert (r["summary"].done, r["summary"].failed) == (2, 0)
    assert len(stac_items(r["out"])) == 2
    bands = r["bands"]
    seasons = ("djf", "mam", "jja", "son")
    assert set(bands) >= {f"ndvi_mean_{s}" for s in seasons} | {f"clear_count_{s}" for s in seasons}
    for season in seasons:
        for plane in bands[f"ndvi_mean_{season}"]:
            assert plane.dtype == np.float32 and np.isnan(plane).all(), season
        for plane in bands[f"clear_count_{season}"]:
            assert plane.dtype == np.uint16 and (plane == 0).all(), season  # not nodata 65535


def test_sigterm_stops_promptly_and_rerun_does_exactly_the_rest(bench):
    r = scenario_sigterm(bench)
    assert r["started"], r["stderr"][-3000:]
    assert r["rc"] == 130, r["stderr"][-3000:]
    assert r["stop_seconds"] < 20
    assert "interrupted" in r["stderr"]
    finished = r["finished_before"]
    assert 1 <= len(finished) < r["n_tasks"]
    assert r["in_stac_write"]  # the signal came while a STAC item was being written
    assert r["missing_assets"] == []  # a STAC item means the task's files are all there
    # only whole tasks are left: every file sits in a finished task's folder, no temp files
    for f in r["files_before"]:
        assert f.parent in finished, f
        assert not f.name.endswith(".tmp"), f
    rerun = r["rerun"]
    assert (rerun.skipped, rerun.done, rerun.failed) == (
        len(finished),
        r["n_tasks"] - len(finished),
        0,
    )
    assert len(r["after"]) == r["n_tasks"]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"plugin_config": {"colour": "red"}}, "plugin_config: unknown key 'colour'"),
        (
            {"plugin_config": {"good_pixel_flags": {"cloud": "maybe"}}},
            "plugin_config.good_pixel_flags.cloud: value 'maybe' is not allowed",
        ),
        (
            {"plugin_config": {"good_pixel_flags": {"fmask": "valid"}}},
            "plugin_config.good_pixel_flags: unknown flag 'fmask'",
        ),
        (
            {"plugin_config": {"season_mode": "year", "seasons": {"a": [13]}}},
            "plugin_config.seasons.a: expected an integer in 1..12, got 13",
        ),
        ({"plugin_config": {"statistics": ["mode"]}}, "plugin_config.statistics: 'mode'"),
        ({"threads_per_worker": 2}, "run config: unknown key 'threads_per_worker'"),
        ("unwritable", "is not writable"),
    ],
    ids=["plugin key", "flag value", "flag name", "months", "statistic", "run key", "location"],
)
def test_bad_config_fails_run_before_any_work(bench, tmp_path, patch, message):
    out = tmp_path / "out"
    if patch == "unwritable":
        config = SEASONAL_RUN
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        out = blocker / "out"
    else:
        config = write_run_config(tmp_path / "bad.yaml", SEASONAL_RUN, **patch)
    result, summary = cli_run(config, bench.db, out)
    assert result.exit_code != 0
    assert summary is None or (summary.done, summary.failed) == (0, 0)
    assert message in result.output, result.output
    if patch == "unwritable":
        assert str(blocker) in result.output
    assert files_in(out) == []


def test_version_is_in_the_path_only_with_a_version_template(bench):
    r = scenario_version_change(bench)
    runs = r["runs"]
    assert (runs["v1"].done, runs["v1"].skipped) == (1, 0)
    # same location, new version: the STAC item of 0.1.0 means "done"
    assert (runs["v2"].done, runs["v2"].skipped) == (0, 1)
    assert r["version_after_v2"] == "0.1.0"
    assert (runs["v2 --overwrite"].done, runs["v2 --overwrite"].skipped) == (1, 0)
    assert r["version_after_overwrite"] == "0.2.0"
    assert len(stac_items(r["out"])) == 1  # file names do not carry the version either
    # {version} in output_location: each version has its own tree (dashed version)
    assert (runs["v1 {version}"].done, runs["v2 {version}"].done) == (1, 1)
    trees = sorted(p.name for p in r["templated"].iterdir())
    assert trees == ["0-1-0", "0-2-0"]
    for tree in trees:
        (item,) = stac_items(r["templated"] / tree)
        version = json.loads(item.read_text())["properties"]["odc:dataset_version"]
        assert version.replace(".", "-") == tree


def test_task_delivered_twice_leaves_whole_identical_files(bench):
    r = scenario_delivered_twice(bench)
    assert r["rcs"] == [0, 0], [e[-2000:] for e in r["stderr"]]
    assert r["reference"].done == 1
    ref = {p.name: p for p in files_in(r["ref_dir"])}
    got = {p.name: p for p in files_in(r["dir"])}
    assert set(got) == set(ref)  # no temp files, nothing missing
    for name, path in got.items():
        if name.endswith(".tif"):
            assert path.read_bytes() == ref[name].read_bytes(), name
            assert not cog_errors(path), name
    (item,) = [p for p in got.values() if p.name.endswith(".stac-item.json")]
    doc = json.loads(item.read_text())
    for asset in doc["assets"].values():
        assert (item.parent / Path(asset["href"]).name).exists()


@pytest.mark.parametrize("ending", ["sigterm", "finish"])
def test_an_attempt_outlived_by_a_duplicate_leaves_its_files_alone(bench, ending):
    r = scenario_duplicate_outlived(bench, ending)
    assert r["submitted"], r["stderr"][-3000:]
    assert r["b"].done == 1 and r["a_running_after_b"], r["stderr"][-3000:]
    assert r["rc"] == (130 if ending == "sigterm" else 0), r["stderr"][-3000:]
    files = r["b_files"]
    assert len([f for f in files if f.name.endswith(".stac-item.json")]) == 1
    assert all(f.parent == r["dir"] for f in files)  # B left nothing staged
    assert r["after"] == files  # A removed, replaced or added nothing
    assert (r["rerun"].skipped, r["rerun"].done) == (1, 0)


# -- on_bad_input: skip | fail ------------------------------------------------------------------
def _cut_in_half(path: Path) -> None:
    """Header whole, image data cut: opens, then fails while decoding."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_skip_leaves_a_truncated_scene_out_and_the_item_names_it(bench, tmp_path):
    """``on_bad_input: skip``: the task completes without the scene, its outputs equal the
    truth computed without it, its STAC item lists it, the summary and report count it,
    and the run exits 0."""
    from odc_ndvi_plugin.load import SKIPPED_INPUTS
    from tests.helpers.truth import CLEAR_RULES, nan_stat, truth_days

    tile, period = bench.tiles[0], PERIODS[1]
    victim = bench.scenes((3,))[0]
    red = band_file(victim, "red")
    config = write_run_config(
        tmp_path / "skip.yaml", SEASONAL_RUN, plugin_config={"on_bad_input": "skip"}
    )
    out, plain = bench.out("skip"), bench.out("skip-odc-stats")
    report = tmp_path / "report.json"
    task_id = bench.task_id(tile, period)
    with restored(red):
        _cut_in_half(red)
        result, summary = cli_run(config, bench.db, out, task_id, opts=("--report", str(report)))
        # plain odc-stats run: the plugin's sink patch renders the item with the list too
        cmd = [sys.executable, "-m", "odc.stats", "run", "--config", str(config), "--threads"]
        cmd += ["2", "--location", f"file://{plain}", str(bench.db), task_id]
        proc = subprocess.run(
            cmd, env=bench.environ(), capture_output=True, text=True, timeout=150, check=False
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result.exit_code == 0, result.output
    assert (summary.done, summary.failed) == (1, 0)
    ((location, inputs),) = summary.bad_inputs
    assert [i["id"] for i in inputs] == [_dataset_id(victim)]
    assert f"{_dataset_id(victim)} ({red.as_uri()})" in result.output  # the summary's note
    for item_path in (*stac_items(out), *stac_items(plain)):
        (listed,) = json.loads(item_path.read_text())["properties"][SKIPPED_INPUTS]
        assert listed["id"] == _dataset_id(victim) and listed["file"] == red.as_uri()
        assert listed["band"] == "red"
    assert len(stac_items(plain)) == 1
    for ours in files_in(task_dir(out, tile, period)):
        if ours.suffix == ".tif":
            theirs = task_dir(plain, tile, period) / ours.name
            with rasterio.open(ours) as a, rasterio.open(theirs) as b:
                np.testing.assert_array_equal(a.read(), b.read(), err_msg=ours.name)
    doc = json.loads(report.read_text())
    assert doc["totals"]["skipped_inputs"] == 1
    assert doc["tasks"][0]["skipped_inputs"][0]["id"] == _dataset_id(victim)
    geobox = bench.archive.tiles()[tile]
    rule = CLEAR_RULES["usgs_c2"]
    months = (3, 4, 5)

    def season(days) -> np.ndarray:
        return np.stack([v for d, v in days if d.astype(object).month in months])

    without = season(truth_days(bench.archive, geobox, rule, without=frozenset({victim.name})))
    full = season(truth_days(bench.archive, geobox, rule))
    task = task_dir(out, tile, period)
    with rasterio.open(next(task.glob("*_clear_count.tif"))) as src:
        count = src.read(1)
    with rasterio.open(next(task.glob("*_ndvi_mean.tif"))) as src:
        mean = src.read(1)
    np.testing.assert_array_equal(count, nan_stat(without, "count"))
    np.testing.assert_allclose(mean, nan_stat(without, "mean"), atol=1e-5, equal_nan=True)
    # the scene mattered: with it, hundreds of pixels would count one more observation
    assert (nan_stat(full, "count") != count).sum() > 100


def test_fail_fails_the_task_with_one_line_and_no_traceback(bench, tmp_path):
    """``on_bad_input: fail`` (the default) as before: the task fails naming the dataset
    and file; the real ``odc-ndvi`` prints one line for the failed task and no traceback
    (rasterio's unpicklable error no longer turns into 'Failed to deserialize')."""
    tile = bench.tiles[0]
    victim = bench.scenes((3,))[0]
    red = band_file(victim, "red")
    out = bench.out("fail")
    task = bench.task_id(tile, PERIODS[1])
    cmd = [str(Path(sys.executable).with_name("odc-ndvi")), "run", "--config", str(SEASONAL_RUN)]
    cmd += ["--location", f"file://{out}", "--threads", "2", str(bench.db), task]
    with restored(red):
        _cut_in_half(red)
        proc = subprocess.run(
            cmd, env=bench.environ(), capture_output=True, text=True, timeout=120, check=False
        )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # the task's progress line while the run goes (and its entry in the closing list)
    summary_at = proc.stderr.index("\n  failed ")
    lines = [ln for ln in proc.stderr[:summary_at].splitlines() if _dataset_id(victim) in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "distributed." not in proc.stderr, proc.stderr[-3000:]
    assert "InputReadError" in lines[0] and red.name in lines[0], lines
    assert files_in(task_dir(out, tile, PERIODS[1])) == []
