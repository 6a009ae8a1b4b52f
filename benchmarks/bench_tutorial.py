"""Round 4 (issue 22): the tutorial's own job at its own size, three ways, same data, same cores.

The tutorial ("Go big with dask gateway", /work/shared/reference/) loads 6,441 x 5,469 px x
43 solar days of DEA C3 ARD (``nbart_red``, ``nbart_nir``, ``oa_fmask``; int16, nodata -999)
onto EPSG:3577 at 30 m with ``dask_chunks={"time": 2, "x": 3072, "y": 3221}`` and computes
the seasonal NDVI mean in 57.8-66 s on four 8-core gateway workers: about 0.76 M
pixel-observations per core-second (6,441 x 5,469 x 43 = 1.51 G px-obs; 62 s x 32 cores).

World: a synthetic DEA C3 ARD-like archive (``odc_ndvi_plugin.dev.synthetic``, flavour
``dea_ard``) with scenes stored as DEA stores them, on UTM zone 55 (EPSG:32755) grids, two
overlapping paths a day, 43 solar days 8 days apart (2020-02-08 .. 2021-01-09, the
tutorial's dates), ~40 % cloud. The region is ``6441 * scale`` x ``5469 * scale`` px of the
Albers grid from the top-left corner of au-30 tile (13, -41) in Tasmania (the tutorial's
area). Generated once per scale (under ``nice -n 19``) into
``benchmarks/results/work/tutorial-s<scale>/`` with an embedded datacube index.

Three ways, each a fresh child process (process start to exit: imports, cluster and all),
on the same 2 cores:

* ``a``: the tutorial's code: its ``dc.load`` call (measurements, resampling, output CRS,
  resolution, ``dask_chunks``, ``group_by="solar_day"``), ``make_mask`` on the product's
  real ``flags_definition``, ``where``, NDVI, ``groupby("time.season").mean("time")``,
  ``.compute()``, on a 2-worker ``LocalCluster`` (1 thread each, processes);
* ``b``: ``odc_ndvi_plugin.seasonal_ndvi`` over the same region and window (the shipped
  ``cfg/run-dea-ard-year.yaml`` plugin_config: mean and clear count per season),
  ``.compute()`` on the same kind of cluster;
* ``c``: the real ``odc-stats save-tasks`` (grid ``epsg:3577;30;<3200 * scale>``, i.e.
  au-30 at scale 1) + ``odc-ndvi run --threads 2`` over every tile covering the region,
  writing COGs + STAC.

Reported per way: wall, CPU (the child and every process it reaped: ``os.wait4``), peak
RSS and PSS of the whole process tree (summed over the live processes, sampled every
0.1 s), pixel-observations per core-second (region pixels x 43 / (CPU s) and / (wall x 2
cores)), beside the tutorial's published 0.76 M/core-s. Ways run round-robin; medians;
the 1-minute load average before each run is recorded.

    python benchmarks/bench_tutorial.py prepare --scale 0.25      # generate + index once
    python benchmarks/bench_tutorial.py run --scale 0.25 --repeats 3
    python benchmarks/bench_tutorial.py report                    # markdown + plot
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _proc import mib, write_results  # noqa: E402 - benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORK = RESULTS / "work"
BIN = Path(sys.executable).parent
CFG = ROOT / "cfg"

#: the tutorial's job and its published figures
SHAPE = (6441, 5469)  # (y, x) px
SOLAR_DAYS = 43
START, END = dt.date(2020, 2, 8), dt.date(2021, 1, 9)  # 43 days, 8 days apart
TIME = ("2020-02-01", "2021-01-31")  # the 12 months holding them (dc.load's time=)
PERIOD = "2020-02--P12M"  # the same months as an odc-stats temporal range
PUBLISHED = {"wall_s": (57.8, 66.0), "cores": 32, "px_obs_per_core_s": 0.76e6}
#: top-left corner of au-30 tile (13, -41) (EPSG:3577), in the tutorial's Tasmanian area
ANCHOR = (1_248_000.0, -3_936_000.0)
CLOUDINESS = 0.35
THREADS = 2
WAYS = {
    "a": "tutorial code (dc.load + make_mask + NDVI + groupby season mean), 2-worker LocalCluster",
    "b": "seasonal_ndvi on the same cluster",
    "c": "odc-stats save-tasks + odc-ndvi run --threads 2 over the covering tiles",
    "floor": "decode floor of c's tasks (reads only; bench_pipeline case c), 2 threads",
}
RUN_CONFIG = CFG / "run-dea-ard-year.yaml"
SAVE_TASKS_CONFIG = CFG / "save-tasks-dea-ard-year.yaml"


# --------------------------------------------------------------------------------------
# the world (cached per scale)
# --------------------------------------------------------------------------------------


def region_shape(scale: float) -> tuple[int, int]:
    return round(SHAPE[0] * scale), round(SHAPE[1] * scale)


def tile_px(scale: float) -> int:
    """(c)'s tile: au-30's 3200 px scaled, rounded to a divisor of 3200 (so the anchor, an
    au-30 tile corner, is a tile corner of the grid too)."""
    want = 3200 * scale
    return min((d for d in range(100, 3201) if 3200 % d == 0), key=lambda d: abs(d - want))


def world_spec(scale: float) -> Any:
    from odc_ndvi_plugin.dev.synthetic import ArchiveSpec

    h, w = region_shape(scale)
    return ArchiveSpec(
        flavour="dea_ard",
        crs="EPSG:32755",
        x0=ANCHOR[0],
        y0=ANCHOR[1],
        width_px=w,
        height_px=h,
        tile_px=tile_px(scale),
        start=START,
        end=END,
        revisit_days=8,
        n_paths=2,
        cloudiness=CLOUDINESS,
    )


def world_dir(scale: float) -> Path:
    return WORK / f"tutorial-s{scale:g}"


def prepare(scale: float) -> dict[str, Any]:
    """Generate (this process under nice 19), index; write ctx.json."""
    from odc_ndvi_plugin.dev.index import init_index, open_index
    from odc_ndvi_plugin.dev.synthetic import generate_archive

    os.nice(19)
    wdir = world_dir(scale)
    spec = world_spec(scale)
    t0 = time.monotonic()
    done = {"n": 0}

    def progress(i: int, total: int, message: str) -> None:
        if i == total or time.monotonic() - done.get("t", 0) > 30:
            done["t"] = time.monotonic()
            print(f"  generate {i}/{total} scenes, {time.monotonic() - t0:.0f} s", flush=True)

    archive = generate_archive(spec, wdir / "archive", progress=progress)
    t_gen = time.monotonic() - t0
    ctx_path = wdir / "ctx.json"
    old = json.loads(ctx_path.read_text()) if ctx_path.exists() else {}
    with open_index(wdir, use_user_config=False) as dcenv:
        init_index(dcenv)
        import bench_pipeline as bp

        t1 = time.monotonic()
        bp.index_archives(dcenv, [archive])
        t_index = time.monotonic() - t1
    files = list(archive.root.rglob("*.tif")) + list(archive.root.rglob("*.TIF"))
    h, w = region_shape(scale)
    ctx = {
        "scale": scale,
        "shape": [h, w],
        "bbox": [spec.x0, spec.y0 - h * 30, spec.x0 + w * 30, spec.y0],  # l, b, r, t
        "solar_days": len(spec.dates),
        "scenes": len(archive.dataset_paths),
        "product": spec.product,
        "measurements": list(spec.measurements),
        "tile_px": spec.tile_px,
        "archive_bytes": sum(f.stat().st_size for f in files),
        # the first generation's time is kept (a rerun finds every scene written)
        "generate_s": old.get("generate_s") or t_gen,
        "index_s": t_index,
        "workdir": str(wdir),
    }
    ctx_path.write_text(json.dumps(ctx, indent=1))
    print(
        f"  world s{scale:g}: {h} x {w} px, {ctx['scenes']} scenes on {ctx['solar_days']} "
        f"solar days, {ctx['archive_bytes'] / 2**30:.2f} GiB, generated in "
        f"{ctx['generate_s']:.0f} s (nice 19), indexed in {t_index:.0f} s",
        flush=True,
    )
    return ctx


def load_ctx(scale: float) -> dict[str, Any]:
    path = world_dir(scale) / "ctx.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `bench_tutorial.py prepare --scale {scale}`")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------
# children: the three ways
# --------------------------------------------------------------------------------------


def _cluster() -> Any:
    """A 2-worker LocalCluster (1 thread each, worker processes), loopback only."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=THREADS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    return Client(cluster)


def _close(client: Any) -> None:
    """Close the cluster; on a loaded machine a worker process can miss the nanny's
    deadline at shutdown (TimeoutError): the job is done by then, so that is no failure."""
    try:
        client.close()
        client.cluster.close()
    except (TimeoutError, OSError) as err:
        print(f"cluster close: {err!r} (after the job; ignored)", file=sys.stderr)


def _save(result: Any, out: Path | None) -> None:
    """The seasonal means as float32 .npy (for the a-vs-b comparison)."""
    import numpy as np

    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    for season, arr in result.items():
        np.save(out / f"{season.lower()}.npy", np.asarray(arr, dtype="float32"))


def _way_a(ctx: dict[str, Any], save: Path | None) -> dict[str, Any]:
    import datacube
    from datacube.utils import masking

    from odc_ndvi_plugin.presets import PRESETS

    left, bottom, right, top = ctx["bbox"]
    red, nir, qa_band = ctx["measurements"]
    qa_mask = dict(PRESETS["dea_ard"].good_pixel_flags)
    client = _cluster()
    t0, c0 = time.perf_counter(), time.process_time()
    dc = datacube.Datacube(app="bench_tutorial")
    # --- the tutorial's code (x/y in EPSG:3577 instead of lon/lat: the same pixels) -------
    measurements = [qa_band, red, nir]
    resampling = {qa_band: "nearest", "*": "average"}
    # the tutorial's y chunk: 3072 + half the sliver = half the height (3221 at full size)
    y_chunk = -(-ctx["shape"][0] // 2)
    dataset = dc.load(
        product=ctx["product"],
        x=(left, right),
        y=(bottom, top),
        crs="EPSG:3577",
        time=TIME,
        measurements=measurements,
        resampling=resampling,
        output_crs="EPSG:3577",
        resolution=(-30, 30),
        dask_chunks={"time": 2, "x": 3072, "y": y_chunk},
        group_by="solar_day",
    )
    cloud_free_mask = masking.make_mask(dataset[qa_band], **qa_mask)
    cloud_free = dataset.where(cloud_free_mask)
    band_diff = cloud_free[nir] - cloud_free[red]
    band_sum = cloud_free[nir] + cloud_free[red]
    ndvi = band_diff / band_sum
    ndvi_unweighted = ndvi.groupby("time.season").mean("time")
    actual_result = ndvi_unweighted.compute()
    # ---------------------------------------------------------------------------------
    job_s = time.perf_counter() - t0
    info = {
        "job_s": job_s,
        "job_client_cpu_s": time.process_time() - c0,
        "loaded_shape": [int(n) for n in dataset[red].shape],
        "chunks": [list(map(int, c[:1])) for c in dataset[red].data.chunks],
        "y_chunk": y_chunk,
        "seasons": [str(s) for s in actual_result.season.values],
    }
    _save({str(s): actual_result.sel(season=s).values for s in actual_result.season.values}, save)
    _close(client)
    return info


def _plugin_config() -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(RUN_CONFIG.read_text())["plugin_config"])


def _way_b(ctx: dict[str, Any], save: Path | None) -> dict[str, Any]:
    import warnings

    import datacube

    from odc_ndvi_plugin import seasonal_ndvi

    left, bottom, right, top = ctx["bbox"]
    client = _cluster()
    t0, c0 = time.perf_counter(), time.process_time()
    dc = datacube.Datacube(app="bench_tutorial")
    with warnings.catch_warnings():
        # Feb 2020 .. Jan 2021: DJF is not contiguous, as in the tutorial's groupby
        warnings.simplefilter("ignore", UserWarning)
        ds = seasonal_ndvi(
            dc,
            product=ctx["product"],
            time=TIME,
            x=(left, right),
            y=(bottom, top),
            xy_crs="EPSG:3577",
            crs="EPSG:3577",
            resolution=30,
            **_plugin_config(),
        )
    result = ds.compute()
    job_s = time.perf_counter() - t0
    info = {
        "job_s": job_s,
        "job_client_cpu_s": time.process_time() - c0,
        "shape": [int(n) for n in result[next(iter(result.data_vars))].shape],
        "tiles": int(ds.attrs["tiles"]),
        "datasets": int(ds.attrs["datasets"]),
        "bands": list(result.data_vars),
    }
    _save(
        {b.rsplit("_", 1)[-1].upper(): result[b].values for b in result.data_vars if "mean" in b},
        save,
    )
    _close(client)
    return info


def _way_c(ctx: dict[str, Any], save: Path | None, tmp: Path) -> dict[str, Any]:
    """save-tasks, then odc-ndvi run, as a user runs them (child processes)."""
    db = tmp / "tasks.db"
    out = tmp / "out"
    t0 = time.perf_counter()
    _save_tasks(ctx, db)
    tasks = covering_tasks(ctx, db)
    t_save = time.perf_counter() - t0
    report = tmp / "report.json"
    subprocess.run(
        [
            str(BIN / "odc-ndvi"),
            "run",
            "--config",
            str(RUN_CONFIG),
            "--threads",
            str(THREADS),
            "--location",
            f"file://{out}",
            "--report",
            str(report),
            str(db),
            *tasks,
        ],
        check=True,
    )
    job_s = time.perf_counter() - t0
    rep = json.loads(report.read_text())
    done = rep.get("tasks", [])
    if len(done) != len(tasks) or any(t.get("status") != "done" for t in done):
        raise SystemExit(f"odc-ndvi run: {len(done)} of {len(tasks)} tasks reported, {done}")
    info = {
        "job_s": job_s,
        "save_tasks_s": t_save,
        "run_s": job_s - t_save,
        "grid": f"epsg:3577;30;{ctx['tile_px']}",
        "tasks": tasks,
        "task_seconds": [t.get("seconds") for t in done],
        "cogs": len(list(out.rglob("*.tif"))),
    }
    if save is not None:
        try:
            _mosaic_means(ctx, out, save)
        except Exception as err:  # the comparison is a side dish: never lose the timing
            info["mosaic_error"] = repr(err)
    shutil.rmtree(out, ignore_errors=True)
    return info


def _save_tasks(ctx: dict[str, Any], db: Path) -> None:
    subprocess.run(
        [
            str(BIN / "odc-stats"),
            "save-tasks",
            "--config",
            str(SAVE_TASKS_CONFIG),
            "--grid",
            f"epsg:3577;30;{ctx['tile_px']}",
            "--temporal-range",
            PERIOD,
            str(db),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _task_ctxs(ctx: dict[str, Any], db: Path) -> list[dict[str, Any]]:
    """bench_pipeline's per-task ctx (its case ``c`` and profile read it) for (c)'s tasks."""
    return [
        {
            "product": ctx["product"],
            "measurements": ctx["measurements"],
            "db": str(db),
            "task": task,
            "run_config": str(RUN_CONFIG),
        }
        for task in covering_tasks(ctx, db)
    ]


def covering_tasks(ctx: dict[str, Any], db: Path) -> list[str]:
    """The task db's tasks whose tile overlaps the region (save-tasks also makes tasks for
    tiles that only the scenes' margins reach)."""
    from odc.stats.tasks import TaskReader

    left, bottom, right, top = ctx["bbox"]
    tm = ctx["tile_px"] * 30
    out = []
    for period, ix, iy in TaskReader(str(db)).all_tiles:
        if ix * tm < right and (ix + 1) * tm > left and iy * tm < top and (iy + 1) * tm > bottom:
            out.append(f"{period}/{ix}/{iy}")
    return sorted(out)


def _way_floor(ctx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """The decode floor of (c): bench_pipeline's case ``c`` (the direct loader's graph with
    each day's NDVI replaced by a sum of what ``load.read_scene`` reads; no NDVI, no
    reduction, no output) over every task of (c), one after the other on one in-process
    LocalCluster of 2 threads (as odc-ndvi run's)."""
    import bench_pipeline as bp

    db = tmp / "tasks.db"
    _save_tasks(ctx, db)
    tasks = _task_ctxs(ctx, db)
    client = bp._client(THREADS)
    t0 = time.perf_counter()
    per = []
    for t in tasks:
        w0 = time.perf_counter()
        bp._case_c({"usgs_c2": t, "chunks": None}, client)
        per.append(time.perf_counter() - w0)
    job_s = time.perf_counter() - t0
    client.close()
    client.cluster.close()
    return {"job_s": job_s, "tasks": len(tasks), "task_seconds": per}


def _way_profile(ctx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Where (c)'s time goes: bench_pipeline's cProfile of one task graph (the runner's
    load, reduce, COGs) on dask's sync scheduler, for the task with the most datasets."""
    import bench_pipeline as bp
    from odc.stats.tasks import TaskReader, parse_task

    db = tmp / "tasks.db"
    _save_tasks(ctx, db)
    tasks = _task_ctxs(ctx, db)
    rdr = TaskReader(str(db))
    biggest = max(tasks, key=lambda t: len(rdr.datasets(parse_task(t["task"]))))
    # the runner opens its own copy: LMDB refuses a second open of a file in one process
    copy = tmp / "tasks-profile.db"
    shutil.copyfile(db, copy)
    res = bp._case_profile({"usgs_c2": {**biggest, "db": str(copy)}, "threads": 1}, tmp / "out")
    res["task"] = biggest["task"]
    res["job_s"] = res["wall_s"]
    return res


def _mosaic_means(ctx: dict[str, Any], out: Path, save: Path) -> None:
    """(c)'s seasonal mean COGs cut to the region (for the comparison with a and b)."""
    import numpy as np
    import rasterio
    from rasterio.windows import from_bounds

    left, bottom, right, top = ctx["bbox"]
    h, w = ctx["shape"]
    save.mkdir(parents=True, exist_ok=True)
    for season in ("djf", "mam", "jja", "son"):
        canvas = np.full((h, w), np.nan, dtype="float32")
        for cog in out.rglob(f"*_ndvi_mean_{season}.tif"):
            with rasterio.open(cog) as src:
                win = from_bounds(left, bottom, right, top, src.transform).round_offsets()
                data = src.read(1, window=win, boundless=True, fill_value=np.nan)
                data = data[:h, :w]
                canvas[: data.shape[0], : data.shape[1]] = np.where(
                    np.isnan(canvas[: data.shape[0], : data.shape[1]]),
                    data,
                    canvas[: data.shape[0], : data.shape[1]],
                )
        np.save(save / f"{season}.npy", canvas)


def _child(args: argparse.Namespace) -> None:
    import logging

    import distributed  # noqa: F401 - imported before the way's clock, as by a user

    logging.getLogger("distributed").setLevel(logging.ERROR)
    ctx = json.loads(Path(args.ctx).read_text())
    save = Path(args.save) if args.save else None
    tmp = Path(args.tmp)
    if args.way == "a":
        info = _way_a(ctx, save)
    elif args.way == "b":
        info = _way_b(ctx, save)
    elif args.way == "c":
        info = _way_c(ctx, save, tmp)
    elif args.way == "floor":
        info = _way_floor(ctx, tmp)
    else:
        info = _way_profile(ctx, tmp)
    Path(args.report).write_text(json.dumps(info))


# --------------------------------------------------------------------------------------
# measuring a process tree
# --------------------------------------------------------------------------------------


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_tree(cmd: list[str], env: dict[str, str], log: Path, poll_s: float = 0.1) -> dict[str, Any]:
    """Run ``cmd``: wall, CPU (``os.wait4``: the child and all it reaped; and the sum of
    the last CPU time seen of every process of the tree), peak RSS and PSS of the whole tree
    (summed over its live processes at each sample)."""
    import psutil

    with open(log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT)
        top = psutil.Process(proc.pid)
        peak_rss = peak_pss = peak_n = 0
        cpu_seen: dict[int, float] = {}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = pss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    cpu_seen[p.pid] = t.user + t.system
                except psutil.Error:
                    continue
                pss += _pss(p.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            peak_n = max(peak_n, len(procs))
            time.sleep(poll_s)
        wall = time.perf_counter() - t0
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "cpu_sampled_s": sum(cpu_seen.values()),
        "peak_tree_rss_bytes": peak_rss,
        "peak_tree_pss_bytes": peak_pss,
        "max_processes": peak_n,
    }


def _load1() -> float:
    return os.getloadavg()[0]


def _prime_page_cache(ctx: dict[str, Any]) -> float:
    t0 = time.monotonic()
    for f in (Path(ctx["workdir"]) / "archive").rglob("*.tif"):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    return time.monotonic() - t0


def run_series(
    scale: float,
    repeats: int,
    ways: list[str],
    compare: bool,
    checkpoint: Any = None,
) -> dict[str, Any]:
    """Run the ways round-robin; ``checkpoint(body)``, if given, gets the runs so far after
    each run (a full-size series takes over an hour: an interrupted one keeps its runs)."""
    from odc_ndvi_plugin.dev.index import open_index

    ctx = load_ctx(scale)
    wdir = world_dir(scale)
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    compare_dir = wdir / "compare"
    with open_index(wdir, use_user_config=False) as dcenv:
        env = {**os.environ, **dcenv.environ(), "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        primed = _prime_page_cache(ctx)
        print(f"  page cache primed in {primed:.0f} s; load {_load1():.2f}", flush=True)
        ctx_file = wdir / "ctx.json"
        for rep in range(repeats):
            for way in ways:
                if way == "profile" and rep > 0:
                    continue  # once: cProfile, not a timing
                tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-tut-{way}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                report = tmp / "report.json"
                save = compare_dir / way if compare and rep == 0 else None
                cmd = [
                    sys.executable,
                    str(Path(__file__)),
                    "child",
                    "--way",
                    way,
                    "--ctx",
                    str(ctx_file),
                    "--report",
                    str(report),
                    "--tmp",
                    str(tmp),
                ] + (["--save", str(save)] if save else [])
                load = _load1()
                res = run_tree(cmd, env, tmp.parent / f"bench-tut-{way}.log")
                if res["returncode"] != 0:
                    log = (tmp.parent / f"bench-tut-{way}.log").read_text()[-3000:]
                    raise SystemExit(f"way {way} failed ({res['returncode']}):\n{log}")
                res.update(json.loads(report.read_text()), load_before=load, repeat=rep)
                runs[way].append(res)
                print(
                    f"  {way} #{rep + 1}: wall {res['wall_s']:.1f} s (job {res['job_s']:.1f} s), "
                    f"CPU {res['cpu_s']:.1f} s, peak tree RSS {mib(res['peak_tree_rss_bytes'])}"
                    f" MiB / PSS {mib(res['peak_tree_pss_bytes'])} MiB; load before {load:.2f}",
                    flush=True,
                )
                shutil.rmtree(tmp, ignore_errors=True)
                if checkpoint is not None:
                    checkpoint({"ctx": ctx, "runs": runs, "summary": summarise(ctx, runs)})
    body: dict[str, Any] = {"ctx": ctx, "runs": runs, "summary": summarise(ctx, runs)}
    if compare:
        try:
            body["agreement"] = agreement(compare_dir, list(ways))
        except Exception as err:  # keep the timings whatever happens here
            body["agreement"] = {"error": repr(err)}
    return body


def _med(values: list[float]) -> float:
    return statistics.median(values)


def summarise(ctx: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    h, w = ctx["shape"]
    px_obs = h * w * ctx["solar_days"]
    out = {}
    for way, rs in runs.items():
        if way == "profile" or not rs:
            continue
        wall, cpu = _med([r["wall_s"] for r in rs]), _med([r["cpu_s"] for r in rs])
        job = _med([r["job_s"] for r in rs])
        out[way] = {
            "repeats": len(rs),
            "wall_s": wall,
            "job_s": job,
            "cpu_s": cpu,
            "cpu_sampled_s": _med([r.get("cpu_sampled_s") or 0.0 for r in rs]),
            "peak_tree_rss_bytes": _med([r["peak_tree_rss_bytes"] for r in rs]),
            "peak_tree_pss_bytes": _med([r["peak_tree_pss_bytes"] for r in rs]),
            "px_obs": px_obs,
            "px_obs_per_cpu_s": px_obs / cpu,
            "px_obs_per_core_s_wall": px_obs / (wall * THREADS),
            "loads_before": [r["load_before"] for r in rs],
            "walls": [r["wall_s"] for r in rs],
        }
    if "a" in out:
        for way in out:
            out[way]["wall_vs_a"] = out[way]["wall_s"] / out["a"]["wall_s"]
            out[way]["rss_vs_a"] = out[way]["peak_tree_rss_bytes"] / out["a"]["peak_tree_rss_bytes"]
    return out


def agreement(compare_dir: Path, ways: list[str]) -> dict[str, Any]:
    """Seasonal means of each way against (a)'s: pixels finite in both, max / mean |diff|,
    pixels finite in one only."""
    import numpy as np

    out: dict[str, Any] = {}
    if "a" not in ways:
        return out
    for way in ways:
        if way == "a":
            continue
        per = {}
        for season in ("djf", "mam", "jja", "son"):
            fa, fb = compare_dir / "a" / f"{season}.npy", compare_dir / way / f"{season}.npy"
            if not (fa.exists() and fb.exists()):
                continue
            a, b = np.load(fa), np.load(fb)
            if a.shape != b.shape:
                per[season] = {"shape_a": a.shape, "shape_b": b.shape}
                continue
            both = np.isfinite(a) & np.isfinite(b)
            d = np.abs(a[both].astype("float64") - b[both])
            per[season] = {
                "both_finite": int(both.sum()),
                "only_a": int((np.isfinite(a) & ~np.isfinite(b)).sum()),
                "only_other": int((~np.isfinite(a) & np.isfinite(b)).sum()),
                "max_abs_diff": float(d.max()) if d.size else None,
                "mean_abs_diff": float(d.mean()) if d.size else None,
                "share_within_0.01": float((d <= 0.01).mean()) if d.size else None,
            }
        out[way] = per
    return out


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def _latest(pattern: str) -> list[Path]:
    return sorted(RESULTS.glob(pattern))


def report(paths: list[Path], plot: Path | None) -> str:
    lines = []
    docs = [json.loads(p.read_text()) for p in paths]
    lines.append(
        "| scale | region px | way | runs | wall s (median) | vs a | CPU s | vs a | peak tree RSS MiB "
        "| vs a | peak tree PSS MiB | M px-obs / CPU-s | M px-obs / core-s (wall x 2) | "
        "job s (after imports + cluster) | load before |"
    )
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for doc in docs:
        ctx = doc["ctx"]
        for way, s in doc["summary"].items():
            lines.append(
                f"| {ctx['scale']:g} | {ctx['shape'][0]:,} x {ctx['shape'][1]:,} x "
                f"{ctx['solar_days']} | {way} | {s['repeats']} | {s['wall_s']:.1f} | "
                f"{s.get('wall_vs_a', float('nan')):.2f}x | {s['cpu_s']:.1f} | "
                f"{s['cpu_s'] / doc['summary']['a']['cpu_s'] if 'a' in doc['summary'] else float('nan'):.2f}x | "
                f"{mib(s['peak_tree_rss_bytes'])} | {s.get('rss_vs_a', float('nan')):.2f}x | "
                f"{mib(s['peak_tree_pss_bytes'])} | {s['px_obs_per_cpu_s'] / 1e6:.2f} | "
                f"{s['px_obs_per_core_s_wall'] / 1e6:.2f} | {s['job_s']:.1f} | "
                f"{', '.join(f'{x:.1f}' for x in s['loads_before'])} |"
            )
    lines.append(
        f"| published | 6,441 x 5,469 x 43 | tutorial on 4 x 8-core gateway workers | - | "
        f"57.8-66 | | | | | | | | {PUBLISHED['px_obs_per_core_s'] / 1e6:.2f} | | |"
    )
    for doc in docs:
        for prof in doc["runs"].get("profile", []):
            lines.append(
                f"\ncProfile of (c)'s biggest task {prof['task']} (scale {doc['ctx']['scale']:g}), "
                f"sync scheduler, one thread: {prof['wall_s']:.1f} s\n"
            )
            lines.append("| stage | calls | cum s | share |")
            lines.append("|---|---:|---:|---:|")
            for stage, st in prof["stages"].items():
                share = st["cum_s"] / prof["wall_s"]
                lines.append(f"| {stage} | {st['calls']} | {st['cum_s']:.1f} | {share:.0%} |")
    if plot is not None and docs:
        _plot(docs, plot)
        lines.append(f"\n![time and peak RSS per way]({plot.name})")
    return "\n".join(lines)


def _plot(docs: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels, walls, cpus, rss, colours = [], [], [], [], []
    palette = {"a": "#999999", "b": "#1f77b4", "c": "#2ca02c"}
    for doc in docs:
        for way, s in doc["summary"].items():
            labels.append(f"{way}\ns={doc['ctx']['scale']:g}")
            walls.append(s["wall_s"])
            cpus.append(s["cpu_s"])
            rss.append(s["peak_tree_rss_bytes"] / 2**20)
            colours.append(palette.get(way, "k"))
    xs = range(len(labels))
    ax1.bar([x - 0.2 for x in xs], walls, width=0.4, color=colours, label="wall")
    ax1.bar([x + 0.2 for x in xs], cpus, width=0.4, color=colours, alpha=0.45, hatch="//")
    ax1.set_xticks(list(xs), labels)
    ax1.set_ylabel("s (median): wall (solid), CPU (hatched)")
    ax2.bar(labels, rss, color=colours)
    ax2.set_ylabel("peak RSS of the process tree, MiB")
    fig.suptitle(
        "The tutorial's job on 2 cores: a = tutorial code, b = seasonal_ndvi, "
        "c = save-tasks + odc-ndvi run",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="generate + index the world of --scale (once)")
    p.add_argument("--scale", type=float, default=1.0)
    p = sub.add_parser("run", help="the three ways, round-robin, medians")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ways", default="a,b,c")
    p.add_argument("--no-compare", action="store_true", help="skip the a-vs-b/c agreement")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("report", help="markdown table (+ plot) of the latest run JSONs")
    p.add_argument("paths", nargs="*", type=Path)
    p.add_argument("--plot", type=Path, default=HERE / "tutorial-round4.png")
    p = sub.add_parser("child")
    p.add_argument("--way", choices=[*WAYS, "floor", "profile"], required=True)
    p.add_argument("--ctx", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--save")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.scale)
    elif args.cmd == "run":
        ways = [w for w in args.ways.split(",") if w]
        partial = RESULTS / f"tutorial_s{args.scale:g}_partial.json"

        def checkpoint(body: dict[str, Any]) -> None:
            write_results(f"tutorial_s{args.scale:g}", {**body, "partial": True}, partial, RESULTS)

        body = run_series(args.scale, args.repeats, ways, not args.no_compare, checkpoint)
        partial.unlink(missing_ok=True)
        body["uptime_after"] = os.getloadavg()
        path = write_results(f"tutorial_s{args.scale:g}", body, args.out, RESULTS)
        print(report([path], None))
        print(json.dumps(body.get("agreement", {}), indent=1))
        print(f"  -> {path}")
    elif args.cmd == "report":
        paths = args.paths or _latest("tutorial_s*.json")
        print(report(paths, args.plot))
    else:
        _child(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
