"""Round 3 (issue 13): the whole task and the whole process, at production shape.

Worlds: a synthetic USGS C2 archive (``odc_ndvi_plugin.dev.synthetic``) shaped like a
production year: Landsat 8 and Landsat 9 (16 days each, 8 days apart: an 8-day revisit),
two overlapping WRS paths a day, Dec 2022 .. Nov 2023 (46 solar days, 92 scenes), about
40 % cloud (``cloudiness`` below; the measured clear fraction is reported); one region of
1 x 2 tiles of 3200 px (2 tasks of the 3200 px grid, and 2 whole tiles of the 2048 px grid
inside it). ``aligned``: scenes on the Albers grid (EPSG:3577); ``utm``: scenes on a UTM grid
(EPSG:32755), warped to the Albers tile. Archive, embedded index (its own PostgreSQL) and
task dbs (the real ``odc-stats save-tasks``) are cached under
``benchmarks/results/work/r3-<world>/`` (a few GB each; the first ``prepare`` takes minutes).

Subcommands (each writes a JSON to ``benchmarks/results/``, gitignored):

* ``prepare``  generate + index the worlds, write the task dbs and run configs;
* ``tasks``    the table: ``odc-stats run --threads 2`` and ``odc-ndvi run --threads 2`` (child
  processes, the real console scripts) x cog_opts {shipped ``cfg/run-usgs-c2-year.yaml``
  (zstd 1), DEA-style deflate 6} x worlds x tile sizes; per-task *warm* time = the second
  task of a two-task run (odc-stats' "Starting/Finished processing" log lines, odc-ndvi's
  ``--report``); *cold* = a one-task run, process start to exit. Baselines in the same
  series: the tutorial (bench_pipeline's case ``a``, verbatim) warm (second tile of a warm
  session, same threads) and as a cold one-tile process; and the decode floor
  (bench_pipeline's case ``c``: the loader's reads, no NDVI, no reduction, no output),
  warm. Cases run round-robin, repeated; medians reported. Every run's stderr is searched
  for dask's "large graph" warning (default threshold);
* ``profile``  where a warm task's time goes (task stream by prefix with 2 threads; cProfile
  stages with the sync scheduler) and what lives when (RSS sampled every 20 ms against the
  running task prefixes); bytes read (``/proc/self/io`` rchar) per task;
* ``startup``  ``python -X importtime -c "import datacube, odc.stats.proc"``, with and without
  the ``rfc3987_syntax`` skip, and what resolving + constructing our plugin adds;
* ``identity`` decoded pixels of both entry points' outputs vs round 2 (commit 586713b, a
  worktree given by ``--round2``, run through ``odc-stats run`` with PYTHONPATH on it);
* ``report``   tables (markdown) and the cost model from the latest JSONs (and the latest
  ``bench_gateway`` JSON for the per-worker check).

    python benchmarks/bench_round3.py prepare
    python benchmarks/bench_round3.py tasks --repeats 3                # ~1.5 h
    python benchmarks/bench_round3.py tasks --worlds aligned --sizes 2048 --repeats 1
    python benchmarks/bench_round3.py profile
    python benchmarks/bench_round3.py startup
    python benchmarks/bench_round3.py identity --round2 /tmp/round2
    python benchmarks/bench_round3.py report
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench_pipeline as bp  # noqa: E402 - benchmarks/ is on sys.path as the script dir
from _proc import mib, run_measured, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORK = RESULTS / "work"
BIN = Path(sys.executable).parent

WORLDS = {"aligned": "EPSG:3577", "utm": "EPSG:32755"}
SIZES = (2048, 3200)
#: the synthetic generator's cloud knob: 0.35 gives ~46 % cloud cover (eo:cloud_cover,
#: medium-confidence cloud and cirrus included) and ~39 % of observations not clear by
#: the tutorial's flags (clouds, their dilation ring, shadow, water); measured at prepare
CLOUDINESS = 0.35
#: Landsat 8 and 9: the same WRS-2 paths, 8 days apart, 16 days each
PLATFORMS = (("landsat-8", dt.date(2022, 12, 3)), ("landsat-9", dt.date(2022, 12, 11)))
END = dt.date(2023, 11, 30)
ARCHIVE_TILE_PX, ARCHIVE_TILES = 3200, (1, 2)
THREADS = 2
ENTRIES = ("odc-stats", "odc-ndvi")
COGS = ("shipped", "dea6")
#: DEA-style COG options: odc-stats' defaults (deflate level 6, 512 px blocks), rgba too
DEA6_COG_OPTS = {
    "compress": "deflate",
    "zlevel": 6,
    "blocksize": 512,
    "overrides": {"rgba": {"compress": "deflate", "zlevel": 6}},
}
SHIPPED_CONFIG = ROOT / "cfg" / "run-usgs-c2-year.yaml"


# --------------------------------------------------------------------------------------
# worlds: archive, index, task dbs (cached)
# --------------------------------------------------------------------------------------


def world_specs(world: str) -> list[Any]:
    """Landsat 8 and Landsat 9 archives of one world (same surface, same clouds per day)."""
    from odc_ndvi_plugin.dev.synthetic import ArchiveSpec

    return [
        ArchiveSpec.for_tiles(
            tiles=ARCHIVE_TILES,
            tile_px=ARCHIVE_TILE_PX,
            start=start,
            end=END,
            revisit_days=16,
            crs=WORLDS[world],
            cloudiness=CLOUDINESS,
            platform=platform,
        )
        for platform, start in PLATFORMS
    ]


def world_dir(world: str) -> Path:
    return WORK / f"r3-{world}"


def _archive_dir(world: str, platform: str) -> Path:
    return world_dir(world) / "archive" / platform


def _generate(args: tuple[Any, Path]) -> tuple[str, float]:
    from odc_ndvi_plugin.dev.synthetic import generate_archive

    spec, out = args
    t0 = time.monotonic()
    generate_archive(spec, out)
    return str(out), time.monotonic() - t0


def whole_tiles(spec: Any, tile_px: int) -> list[tuple[tuple[int, int], Any]]:
    """Tiles of the ``epsg:3577;30;<tile_px>`` grid lying wholly inside the region, north
    first."""
    from odc.geo import xy_
    from odc.geo.gridspec import GridSpec

    res = spec.resolution
    gs = GridSpec("EPSG:3577", (tile_px, tile_px), res, origin=xy_(0, 0))
    tm = tile_px * res
    x1 = spec.x0 + spec.width_px * res
    y1 = spec.y0 - spec.height_px * res
    out = []
    for iy in range(math.floor(spec.y0 / tm) - 1, math.ceil(y1 / tm) - 1, -1):
        for ix in range(math.ceil(spec.x0 / tm), math.floor(x1 / tm)):
            if iy * tm >= y1 and (iy + 1) * tm <= spec.y0:
                out.append(((ix, iy), gs.tile_geobox((ix, iy))))
    return out


def _clear_fraction(archives: list[Any]) -> dict[str, float]:
    """Of every valid (in-footprint) pixel of every scene's qa_pixel file: the share clear by
    the tutorial's flags (``make_mask`` on the preset's flags_definition); and the mean
    ``eo:cloud_cover`` of the dataset documents."""
    import numpy as np
    import rasterio
    import xarray as xr
    import yaml
    from datacube.utils.masking import make_mask

    from odc_ndvi_plugin.presets import PRESETS

    preset = PRESETS["usgs_c2"]
    counts: dict[int, int] = {}
    covers = []
    for archive in archives:
        for path in archive.dataset_paths:
            doc = yaml.safe_load(Path(path).read_text())
            covers.append(doc["properties"]["eo:cloud_cover"])
            qa_file = Path(path).parent / doc["measurements"][preset.mask_band]["path"]
            with rasterio.open(qa_file) as src:
                values, n = np.unique(src.read(1), return_counts=True)
            for v, c in zip(values.tolist(), n.tolist(), strict=True):
                counts[v] = counts.get(v, 0) + c
    values = np.array(sorted(counts), dtype=np.uint16)
    n = np.array([counts[v] for v in values.tolist()], dtype=np.int64)
    attrs = {"flags_definition": dict(preset.flags_definition)}
    good = make_mask(xr.DataArray(values, dims=["v"], attrs=attrs), **preset.good_pixel_flags)
    valid = values != 1  # qa_pixel fill
    return {
        "clear_of_valid": float(n[good.values & valid].sum() / n[valid].sum()),
        "mean_eo_cloud_cover_pct": float(np.mean(covers)),
        "valid_pixels": int(n[valid].sum()),
    }


def _write_configs(workdir: Path) -> dict[str, str]:
    """The run configs of the cog_opts cases: the shipped file as it is, and a copy with
    DEA-style cog_opts."""
    import yaml

    doc = yaml.safe_load(SHIPPED_CONFIG.read_text())
    doc["cog_opts"] = DEA6_COG_OPTS
    dea6 = workdir / "run-usgs-c2-year-dea6.yaml"
    dea6.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"shipped": str(SHIPPED_CONFIG), "dea6": str(dea6)}


def prepare(worlds: list[str]) -> dict[str, Any]:
    """Generate (2 processes), index and task each world; write its ctx.json."""
    from concurrent.futures import ProcessPoolExecutor

    from odc_ndvi_plugin.dev.index import init_index, open_index
    from odc_ndvi_plugin.dev.synthetic import plan_archive

    jobs = [
        (spec, _archive_dir(world, spec.platform))
        for world in worlds
        for spec in world_specs(world)
    ]
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=2) as pool:
        for out, secs in pool.map(_generate, jobs):
            print(f"  archive {out}: {secs:.0f}s", flush=True)
    t_gen = time.monotonic() - t0
    ctxs = {}
    for world in worlds:
        wdir = world_dir(world)
        specs = world_specs(world)
        archives = [plan_archive(s, _archive_dir(world, s.platform)) for s in specs]
        with open_index(wdir, use_user_config=False) as dcenv:
            init_index(dcenv)
            bp.index_archives(dcenv, archives)
            sizes = {}
            for px in SIZES:
                db = bp.year_task_db(
                    dcenv, "usgs-c2", f"epsg:3577;30;{px}", wdir / "tasks" / f"px{px}.db"
                )
                tiles = whole_tiles(specs[0], px)[:2]
                sizes[str(px)] = [bp.tile_ctx(specs[0], db, t, g, "usgs-c2") for t, g in tiles]
        scenes = sum(len(a.dataset_paths) for a in archives)
        days = sorted({d for s in specs for d in s.dates})
        ctx = {
            "world": world,
            "crs": WORLDS[world],
            "scenes": scenes,
            "solar_days": len(days),
            "first_day": str(days[0]),
            "last_day": str(days[-1]),
            "cloudiness": CLOUDINESS,
            "clear": _clear_fraction(archives),
            "archive_bytes": sum(f.stat().st_size for a in archives for f in a.root.rglob("*.TIF")),
            "sizes": sizes,
            "configs": _write_configs(wdir),
            "threads": THREADS,
        }
        (wdir / "ctx.json").write_text(json.dumps(ctx, indent=1))
        ctxs[world] = ctx
        c = ctx["clear"]
        print(
            f"  {world}: {scenes} scenes on {len(days)} solar days, "
            f"{ctx['archive_bytes'] / 2**30:.1f} GiB; clear {c['clear_of_valid']:.1%} of valid "
            f"observations, mean eo:cloud_cover {c['mean_eo_cloud_cover_pct']:.1f} %",
            flush=True,
        )
    return {"generate_s": t_gen, "worlds": ctxs}


def load_ctx(world: str) -> dict[str, Any]:
    path = world_dir(world) / "ctx.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `bench_round3.py prepare` first")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------
# children: the tutorial, the decode floor, the in-process runner (profile)
# --------------------------------------------------------------------------------------


def _rchar() -> int:
    """Bytes this process has read through read()/pread() so far (``/proc/self/io``)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def _close(client: Any) -> None:
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _timed_tiles(ctx: dict[str, Any], size: str, n_tiles: int, case: Any) -> dict[str, Any]:
    """``case(tile_ctx, client)`` on the first ``n_tiles`` tiles, one after the other on one
    LocalCluster (1 worker, THREADS threads): wall, CPU and bytes read of each."""
    client = bp._client(ctx["threads"])
    tiles = []
    try:
        for tile in ctx["sizes"][size][:n_tiles]:
            w0, c0, r0 = time.perf_counter(), time.process_time(), _rchar()
            info = case(tile, client)
            tiles.append(
                {
                    "task": tile["task"],
                    "wall_s": time.perf_counter() - w0,
                    "cpu_s": time.process_time() - c0,
                    "rchar_bytes": _rchar() - r0,
                    "info": info,
                }
            )
    finally:
        _close(client)
    return {"tiles": tiles}


def _child_tutorial(ctx: dict[str, Any], size: str, n_tiles: int) -> dict[str, Any]:
    """bench_pipeline's case ``a`` (the tutorial, verbatim)."""
    return _timed_tiles(ctx, size, n_tiles, lambda t, c: bp._case_a({"usgs_c2": t}, c))


def _child_floor(ctx: dict[str, Any], size: str, n_tiles: int) -> dict[str, Any]:
    """bench_pipeline's case ``c`` (the loader's graph and reads, summed: no NDVI, no
    reduction, no output)."""
    return _timed_tiles(
        ctx, size, n_tiles, lambda t, c: bp._case_c({"usgs_c2": t, "chunks": None}, c)
    )


class _Timeline:
    """RSS and dask-managed bytes of this process, sampled every ``every`` s (managed bytes
    by task prefix every 5th sample), while a task runs on the in-process worker."""

    def __init__(self, worker: Any, every: float = 0.02):
        import threading

        self.worker, self.every = worker, every
        self.samples: list[tuple[float, int, int]] = []  # (t, rss, managed)
        self.by_prefix: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil
        from dask.utils import key_split

        proc, n = psutil.Process(), 0
        while not self._stop.wait(self.every):
            now = time.time()
            state = self.worker.state
            self.samples.append((now, proc.memory_info().rss, int(state.nbytes)))
            n += 1
            if n % 5 == 0:
                acc: dict[str, int] = {}
                for ts in list(state.tasks.values()):
                    if ts.state == "memory" and ts.nbytes:
                        name = key_split(ts.key)
                        acc[name] = acc.get(name, 0) + int(ts.nbytes)
                self.by_prefix.append((now, acc))

    def __enter__(self) -> _Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _running_at(records: list[dict[str, Any]], t: float) -> dict[str, int]:
    from dask.utils import key_split

    out: dict[str, int] = {}
    for rec in records:
        for ss in rec.get("startstops", ()):
            if ss.get("action") == "compute" and ss["start"] <= t <= ss["stop"]:
                name = key_split(rec["key"])
                out[name] = out.get(name, 0) + 1
    return out


def _phases(records: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """First start and last stop of the task's stages (by task prefix)."""
    from dask.utils import key_split

    groups = {
        "load": ("day_block",),
        "fold": ("stream_fold",),
        "take": ("stream_take",),
        "encode": ("to_cog",),
        "rgba": ("colourise",),
        "write": ("stage", "commit"),
    }
    out: dict[str, tuple[float, float]] = {}
    for rec in records:
        name = key_split(rec["key"])
        for phase, prefixes in groups.items():
            if any(name.startswith(p) for p in prefixes):
                for ss in rec.get("startstops", ()):
                    if ss.get("action") == "compute":
                        a, b = out.get(phase, (math.inf, -math.inf))
                        out[phase] = (min(a, ss["start"]), max(b, ss["stop"]))
    return out


def _child_runner(ctx: dict[str, Any], size: str, cog: str, outdir: Path) -> dict[str, Any]:
    """Our runner (``execute``, the odc-ndvi path) in this process on tile 1, then tile 2
    with the task stream, an RSS / managed-memory timeline and the bytes read."""
    from distributed import get_task_stream

    from odc_ndvi_plugin.ops.session import execute

    tiles = [dict(t, run_config=ctx["configs"][cog]) for t in ctx["sizes"][size][:2]]
    client = bp._client(ctx["threads"])
    worker = next(iter(client.cluster.workers.values()))
    try:
        rss_before = bp._peak_rss()
        import psutil

        rss_idle = psutil.Process().memory_info().rss
        cfg = bp._run_config({"usgs_c2": tiles[0], "threads": ctx["threads"]}, "usgs_c2", outdir)
        w0 = time.perf_counter()
        execute(cfg, tasks=[tiles[0]["task"]], client=client)
        first_s = time.perf_counter() - w0
        rss_after_first = psutil.Process().memory_info().rss
        cfg = bp._run_config({"usgs_c2": tiles[1], "threads": ctx["threads"]}, "usgs_c2", outdir)
        with _Timeline(worker) as tl, get_task_stream(client) as ts:
            t0, c0, r0 = time.time(), time.process_time(), _rchar()
            summary = execute(cfg, tasks=[tiles[1]["task"]], client=client)
            t1, c1, r1 = time.time(), time.process_time(), _rchar()
        if summary.done != 1:
            raise RuntimeError(f"run failed: {summary.line()} {summary.errors}")
    finally:
        _close(client)
    records = ts.data
    peak_t, peak_rss, peak_managed = max(tl.samples, key=lambda s: s[1])
    near = min(tl.by_prefix, key=lambda s: abs(s[0] - peak_t))[1] if tl.by_prefix else {}
    phases = _phases(records)
    phase_rss = {}
    for phase, (a, b) in phases.items():
        inside = [s for s in tl.samples if a <= s[0] <= b]
        if inside:
            top = max(inside, key=lambda s: s[1])
            phase_rss[phase] = {
                "start_s": a - t0,
                "stop_s": b - t0,
                "max_rss_bytes": top[1],
                "managed_at_max_bytes": top[2],
            }
    max_managed = max(tl.by_prefix, key=lambda s: sum(s[1].values()))[1] if tl.by_prefix else {}
    return {
        "first_task_s": first_s,
        "task_s": t1 - t0,
        "task_cpu_s": c1 - c0,
        "rchar_bytes": r1 - r0,
        "rss_idle_bytes": rss_idle,
        "peak_rss_before_bytes": rss_before,
        "rss_after_first_task_bytes": rss_after_first,
        "peak_rss_bytes": bp._peak_rss(),
        "peak": {
            "t_s": peak_t - t0,
            "rss_bytes": peak_rss,
            "managed_bytes": peak_managed,
            "managed_by_prefix": near,
            "running": _running_at(records, peak_t),
        },
        "max_managed_by_prefix": max_managed,
        "phases": phase_rss,
        "stages": bp._task_stream_summary(records),
        "timeline": [(round(t - t0, 3), r, m) for t, r, m in tl.samples[::5]],
    }


def _child_cprofile(ctx: dict[str, Any], size: str, cog: str, outdir: Path) -> dict[str, Any]:
    """bench_pipeline's profile (the task's graph under cProfile, sync scheduler) of tile 2,
    after an unprofiled run of the same on tile 1 (GDAL and imports warm)."""
    tiles = [dict(t, run_config=ctx["configs"][cog]) for t in ctx["sizes"][size][:2]]
    bp._case_profile({"usgs_c2": tiles[0], "threads": 1}, outdir / "t1")
    return bp._case_profile({"usgs_c2": tiles[1], "threads": 1}, outdir / "t2")


def _run_child(args: argparse.Namespace) -> None:
    import logging

    import distributed  # noqa: F401  (imported before any timing, as bench_pipeline's cases)

    logging.getLogger("distributed").setLevel(logging.ERROR)
    ctx = json.loads(Path(args.ctx).read_text())
    out = Path(args.outdir)
    if args.kind == "tutorial":
        report = _child_tutorial(ctx, args.size, args.tiles)
    elif args.kind == "floor":
        report = _child_floor(ctx, args.size, args.tiles)
    elif args.kind == "runner":
        report = _child_runner(ctx, args.size, args.cog, out)
    elif args.kind == "cprofile":
        report = _child_cprofile(ctx, args.size, args.cog, out)
    else:
        raise SystemExit(f"unknown child {args.kind}")
    report["vmhwm_bytes"] = bp._peak_rss()
    Path(args.report).write_text(json.dumps(report))


# --------------------------------------------------------------------------------------
# parent: one measured run
# --------------------------------------------------------------------------------------

_ODC_STATS_LOG = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \{proc\.py:\d+\} INFO - "
    r"(?P<what>Starting|Finished) processing of (?P<loc>\S+)"
)


def _env(dcenv: Any, pythonpath: str | None = None) -> dict[str, str]:
    env = {**os.environ, **dcenv.environ()}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return env


def _odc_stats_task_seconds(stdout: str) -> list[tuple[str, float]]:
    """(task, seconds) from odc-stats' "Starting/Finished processing of" log lines."""
    started: dict[str, dt.datetime] = {}
    out = []
    for line in stdout.splitlines():
        m = _ODC_STATS_LOG.match(line)
        if not m:
            continue
        when = dt.datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f")
        if m["what"] == "Starting":
            started[m["loc"]] = when
        elif m["loc"] in started:
            out.append((m["loc"], (when - started[m["loc"]]).total_seconds()))
    return out


def _large_graph(stderr: str) -> list[str]:
    return sorted({ln.strip()[:160] for ln in stderr.splitlines() if "large graph" in ln})


def run_entry(
    entry: str,
    config: str,
    tiles: list[dict[str, Any]],
    env: dict[str, str],
    tmp: Path,
    *,
    keep: Path | None = None,
) -> dict[str, Any]:
    """One ``odc-stats run`` / ``odc-ndvi run`` process over ``tiles`` (in that order),
    ``--threads 2``, to a fresh output folder (``keep``: that folder, left in place)."""
    out = keep or Path(tempfile.mkdtemp(prefix="out-", dir=tmp))
    report = tmp / "run-report.json"
    report.unlink(missing_ok=True)
    db = tiles[0]["db"]
    tasks = [t["task"] for t in tiles]
    common = ["run", "--config", config, "--threads", str(THREADS), "--location", f"file://{out}"]
    if entry == "odc-stats":
        cmd = [str(BIN / "odc-stats"), *common, db, *tasks]
    else:
        cmd = [str(BIN / "odc-ndvi"), *common, "--report", str(report), db, *tasks]
    so, se = tmp / "stdout.txt", tmp / "stderr.txt"
    load = os.getloadavg()[0]
    res = run_measured(cmd, env=env, stdout=so, stderr=se, timeout=1800)
    stdout, stderr = so.read_text(errors="replace"), se.read_text(errors="replace")
    if res["returncode"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res['returncode']}):\n{stderr[-3000:]}")
    if entry == "odc-stats":
        secs = _odc_stats_task_seconds(stdout)
    else:
        doc = json.loads(report.read_text())
        secs = [(t["location"], t["seconds"]) for t in doc["tasks"] if t["status"] == "done"]
    if len(secs) != len(tasks):
        raise SystemExit(
            f"{entry}: {len(secs)} task times for {len(tasks)} tasks:\n{stdout[-2000:]}"
        )
    items = list(out.rglob("*.stac-item.json"))
    if len(items) != len(tasks):
        raise SystemExit(f"{entry}: {len(items)} STAC items for {len(tasks)} tasks in {out}")
    res.update(
        task_s=[s for _, s in secs],
        tasks=[loc for loc, _ in secs],
        large_graph=_large_graph(stderr),
        load_1min=load,
        output_bytes=sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
    )
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return res


def run_child(
    kind: str,
    ctx_path: Path,
    size: str,
    env: dict[str, str],
    tmp: Path,
    *,
    tiles: int = 2,
    cog: str = "shipped",
) -> dict[str, Any]:
    """One child process of this script (tutorial, floor, runner, cprofile)."""
    report = tmp / f"child-{kind}.json"
    report.unlink(missing_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "child",
        "--kind",
        kind,
        "--ctx",
        str(ctx_path),
        "--size",
        size,
        "--tiles",
        str(tiles),
        "--cog",
        cog,
        "--report",
        str(report),
        "--outdir",
        str(out),
    ]
    se = tmp / "stderr.txt"
    load = os.getloadavg()[0]
    res = run_measured(cmd, env=env, stderr=se, timeout=3600)
    stderr = se.read_text(errors="replace")
    if res["returncode"] != 0:
        raise SystemExit(f"child {kind} failed ({res['returncode']}):\n{stderr[-3000:]}")
    res.update(json.loads(report.read_text()), load_1min=load, large_graph=_large_graph(stderr))
    shutil.rmtree(out, ignore_errors=True)
    return res


@contextlib.contextmanager
def _world_index(world: str) -> Iterator[Any]:
    from odc_ndvi_plugin.dev.index import open_index

    with open_index(world_dir(world), use_user_config=False) as dcenv:
        yield dcenv


def _prime_page_cache(world: str) -> float:
    """Read every file of the world's archive once, so that no case pays the first read
    from disk (all cases then read from the page cache, as repeated runs do)."""
    t0 = time.monotonic()
    for f in (world_dir(world) / "archive").rglob("*.TIF"):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    return time.monotonic() - t0


def _med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------
# tasks: the round-3 table
# --------------------------------------------------------------------------------------


def _cases(entries: list[str], cogs: list[str], baselines: bool) -> list[tuple[str, ...]]:
    cases: list[tuple[str, ...]] = []
    if baselines:
        cases += [("tutorial", "warm"), ("tutorial", "cold"), ("floor", "warm")]
    for entry in entries:
        for cog in cogs:
            cases += [(entry, cog, "warm"), (entry, cog, "cold")]
    return cases


def _case_name(case: tuple[str, ...]) -> str:
    return "/".join(case)


def tasks_series(
    world: str,
    size: str,
    repeats: int,
    entries: list[str],
    cogs: list[str],
    baselines: bool,
) -> dict[str, Any]:
    """All cases of one (world, tile size), round-robin, ``repeats`` times."""
    ctx = load_ctx(world)
    ctx_path = world_dir(world) / "ctx.json"
    tiles = ctx["sizes"][size]
    cases = _cases(entries, cogs, baselines)
    runs: dict[str, list[dict[str, Any]]] = {_case_name(c): [] for c in cases}
    with (
        _world_index(world) as dcenv,
        tempfile.TemporaryDirectory(prefix="r3-", dir=world_dir(world)) as tmpdir,
    ):
        tmp = Path(tmpdir)
        env = _env(dcenv)
        primed = _prime_page_cache(world)
        load0 = os.getloadavg()
        print(
            f"== {world} {size} px: {len(cases)} cases x {repeats}; page cache primed in "
            f"{primed:.0f}s; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
            flush=True,
        )
        for rep in range(repeats):
            for case in cases:
                name = _case_name(case)
                if case[0] == "tutorial":
                    n = 2 if case[1] == "warm" else 1
                    r = run_child("tutorial", ctx_path, size, env, tmp, tiles=n)
                    r["task_s"] = [t["wall_s"] for t in r["tiles"]]
                elif case[0] == "floor":
                    r = run_child("floor", ctx_path, size, env, tmp, tiles=2)
                    r["task_s"] = [t["wall_s"] for t in r["tiles"]]
                else:
                    entry, cog, kind = case
                    sel = tiles if kind == "warm" else tiles[:1]
                    r = run_entry(entry, ctx["configs"][cog], sel, env, tmp)
                runs[name].append(r)
                flag = f" LARGE GRAPH: {r['large_graph']}" if r.get("large_graph") else ""
                print(
                    f"  [{rep + 1}/{repeats}] {name:<22} tasks "
                    f"{', '.join(f'{s:.1f}' for s in r['task_s'])} s; process "
                    f"{r['process_wall_s']:.1f} s wall, {r['process_cpu_s']:.1f} s CPU, peak "
                    f"{mib(r['peak_rss_bytes'])} MiB (load {r['load_1min']:.2f}){flag}",
                    flush=True,
                )
    load1 = os.getloadavg()
    return {
        "world": world,
        "size": int(size),
        "repeats": repeats,
        "load_before": load0,
        "load_after": load1,
        "runs": runs,
        "summary": summarise(runs),
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Medians per case: warm = the second task's seconds; cold = process wall/CPU/peak;
    ``warm_task_cpu_s``: process CPU of the two-task run minus that of the one-task run
    (medians), i.e. the second task's CPU plus nothing else."""
    out: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        if not rs:
            continue
        kind = name.rsplit("/", 1)[-1]
        s: dict[str, Any] = {"n": len(rs)}
        if kind == "warm":
            s["task_s"] = _med([r["task_s"][1] for r in rs])
            s["first_task_s"] = _med([r["task_s"][0] for r in rs])
            s["process_wall_s"] = _med([r["process_wall_s"] for r in rs])
            s["process_cpu_s"] = _med([r["process_cpu_s"] for r in rs])
            s["task_s_all"] = [r["task_s"][1] for r in rs]
        else:
            s["process_wall_s"] = _med([r["process_wall_s"] for r in rs])
            s["process_cpu_s"] = _med([r["process_cpu_s"] for r in rs])
            s["process_wall_s_all"] = [r["process_wall_s"] for r in rs]
            s["task_s"] = _med([r["task_s"][0] for r in rs])
        s["peak_rss_bytes"] = _med([r["peak_rss_bytes"] for r in rs])
        s["large_graph_runs"] = sum(bool(r.get("large_graph")) for r in rs)
        s["load_1min_max"] = max(r["load_1min"] for r in rs)
        out[name] = s
    for name, s in out.items():
        base = name.rsplit("/", 1)[0]
        if name.endswith("/warm") and f"{base}/cold" in out:
            s["warm_task_cpu_s"] = s["process_cpu_s"] - out[f"{base}/cold"]["process_cpu_s"]
    tw, tc = out.get("tutorial/warm"), out.get("tutorial/cold")
    for name, s in out.items():
        if name.endswith("/warm") and tw:
            s["task_vs_tutorial"] = s["task_s"] / tw["task_s"]
        if name.endswith("/cold") and tc:
            s["process_vs_tutorial"] = s["process_wall_s"] / tc["process_wall_s"]
            s["peak_rss_vs_tutorial"] = s["peak_rss_bytes"] / tc["peak_rss_bytes"]
        if name.endswith("/warm") and "floor/warm" in out:
            s["task_vs_floor"] = s["task_s"] / out["floor/warm"]["task_s"]
    return out


# --------------------------------------------------------------------------------------
# profile, startup, identity
# --------------------------------------------------------------------------------------


def profile(worlds: list[str], size: str, cogs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for world in worlds:
        ctx_path = world_dir(world) / "ctx.json"
        with (
            _world_index(world) as dcenv,
            tempfile.TemporaryDirectory(prefix="r3p-", dir=world_dir(world)) as tmpdir,
        ):
            tmp, env = Path(tmpdir), _env(dcenv)
            _prime_page_cache(world)
            print(f"== profile {world} {size} px; load {os.getloadavg()[0]:.2f}", flush=True)
            for cog in cogs:
                key = f"{world}/{size}/{cog}"
                runner = run_child("runner", ctx_path, size, env, tmp, cog=cog)
                runner.pop("timeline_full", None)
                prof = run_child("cprofile", ctx_path, size, env, tmp, cog=cog)
                out[key] = {"runner": runner, "cprofile": prof}
                pk = runner["peak"]
                print(
                    f"  {key}: warm task {runner['task_s']:.1f}s ({runner['task_cpu_s']:.1f}s CPU), "
                    f"read {runner['rchar_bytes'] / 2**20:,.0f} MiB; peak RSS "
                    f"{mib(pk['rss_bytes'])} MiB at {pk['t_s']:.1f}s (managed "
                    f"{mib(pk['managed_bytes'])} MiB; running {pk['running']}); cProfile "
                    f"{prof['wall_s']:.1f}s",
                    flush=True,
                )
    return out


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")

STARTUP_CASES = {
    "odc-stats": "import datacube, odc.stats.proc",
    "odc-stats, rfc3987_syntax skipped (odc-ndvi)": (
        "from odc_ndvi_plugin._startup import skip_unused_imports; skip_unused_imports(); "
        "import datacube, odc.stats.proc"
    ),
    "tutorial (datacube, make_mask, distributed)": (
        "import datacube; from datacube.utils.masking import make_mask; import distributed"
    ),
    "python -c pass": "pass",
}

#: what odc-stats run does with a plugin, after its own imports: resolve + construct
PLUGIN_COST = """
import json, sys, time, yaml
{skip}
import datacube, odc.stats.proc
from odc.stats.plugins import resolve
cfg = yaml.safe_load(open({config!r}).read())
before = set(sys.modules)
t0 = time.perf_counter()
cls = resolve(cfg["plugin"])
t1 = time.perf_counter()
cls(**cfg["plugin_config"])
t2 = time.perf_counter()
print(json.dumps({{"resolve_s": t1 - t0, "construct_s": t2 - t1,
                  "new_modules": len(set(sys.modules) - before)}}))
"""


def _importtime(stderr: str) -> tuple[float, list[tuple[str, float, int]]]:
    """Total import seconds (top-level cumulative) and (module, cumulative s, depth)."""
    rows = []
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            depth = (len(m[3]) - 1) // 2
            rows.append((m[4], int(m[2]) / 1e6, depth))
    return sum(c for _, c, d in rows if d == 0), rows


def startup(repeats: int) -> dict[str, Any]:
    env = {**os.environ}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out: dict[str, Any] = {"cases": {}, "plugin": {}}
    with tempfile.TemporaryDirectory(prefix="r3s-") as tmpdir:
        tmp = Path(tmpdir)
        so, se = tmp / "out.txt", tmp / "err.txt"
        for _ in range(2):  # byte code compiled and files cached before timing
            for snippet in STARTUP_CASES.values():
                run_measured([sys.executable, "-c", snippet], env=env, stdout=so, stderr=se)
        for rep in range(repeats):
            for name, snippet in STARTUP_CASES.items():
                r = run_measured(
                    [sys.executable, "-X", "importtime", "-c", snippet],
                    env=env,
                    stdout=so,
                    stderr=se,
                )
                total, rows = _importtime(se.read_text())
                plain = run_measured([sys.executable, "-c", snippet], env=env, stdout=so, stderr=se)
                c = out["cases"].setdefault(name, {"import_s": [], "process_wall_s": []})
                c["import_s"].append(total)
                c["process_wall_s"].append(plain["process_wall_s"])
                if rep == repeats - 1:
                    c["top"] = sorted([(m, s) for m, s, d in rows if d <= 1], key=lambda x: -x[1])[
                        :15
                    ]
                    c["rfc3987_syntax_s"] = sum(s for m, s, _ in rows if m == "rfc3987_syntax")
            for skip in (False, True):
                code = PLUGIN_COST.format(
                    skip="from odc_ndvi_plugin._startup import skip_unused_imports; "
                    "skip_unused_imports()"
                    if skip
                    else "",
                    config=str(SHIPPED_CONFIG),
                )
                r = run_measured([sys.executable, "-c", code], env=env, stdout=so, stderr=se)
                if r["returncode"] != 0:
                    raise SystemExit(se.read_text()[-2000:])
                doc = json.loads(so.read_text().strip().splitlines()[-1])
                key = "odc-ndvi (skip)" if skip else "odc-stats"
                for k, v in doc.items():
                    out["plugin"].setdefault(key, {}).setdefault(k, []).append(v)
            print(f"  startup repeat {rep + 1}/{repeats} done", flush=True)
        # what resolving the plugin imports beyond odc-stats' own modules
        code = PLUGIN_COST.format(skip="", config=str(SHIPPED_CONFIG))
        run_measured(
            [sys.executable, "-X", "importtime", "-c", code], env=env, stdout=so, stderr=se
        )
        _, rows = _importtime(se.read_text())
        names = [m for m, _, _ in rows]
        after = names.index("odc.stats.proc") + 1 if "odc.stats.proc" in names else 0
        out["plugin_imports"] = sorted(
            [(m, s) for m, s, d in rows[after:] if d == 0], key=lambda x: -x[1]
        )[:15]
    for c in out["cases"].values():
        c["import_s_median"] = _med(c["import_s"])
        c["process_wall_s_median"] = _med(c["process_wall_s"])
    for c in out["plugin"].values():
        c["total_s_median"] = _med(
            [a + b for a, b in zip(c["resolve_s"], c["construct_s"], strict=True)]
        )
    return out


def _decoded(path: Path) -> list[tuple[Any, ...]]:
    """Every overview level's pixels (level 0 = full resolution) with dtype, nodata, grid."""
    import rasterio

    levels = []
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
        # nodata as text: NaN != NaN would make every float file "differ"
        nodata = tuple(repr(v) for v in src.nodatavals)
        meta = (src.dtypes, nodata, tuple(src.transform), str(src.crs), src.count)
    for level in range(n + 1):
        kw = {} if level == 0 else {"overview_level": level - 1}
        with rasterio.open(path, **kw) as src:
            a = src.read()
            levels.append((a.shape, a.tobytes()))
    return [meta, *levels]


def compare_outputs(a: Path, b: Path) -> dict[str, Any]:
    """Decoded pixels (every overview level), dtypes, nodata and grids of every COG under
    ``a`` against the same file under ``b``."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.tif"))
    other = sorted(p.relative_to(b) for p in b.rglob("*.tif"))
    differ = [str(f) for f in files if not (b / f).exists() or _decoded(a / f) != _decoded(b / f)]
    return {
        "files": len(files),
        "same_names": files == other,
        "identical": len(files) - len(differ),
        "differ": differ,
    }


def identity(worlds: list[str], sizes: list[str], cogs: list[str], round2: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for world in worlds:
        ctx = load_ctx(world)
        with (
            _world_index(world) as dcenv,
            tempfile.TemporaryDirectory(prefix="r3i-", dir=world_dir(world)) as tmpdir,
        ):
            tmp = Path(tmpdir)
            env, env_r2 = _env(dcenv), _env(dcenv, pythonpath=str(round2))
            for size in sizes:
                tile1 = ctx["sizes"][size][:1]
                for cog in cogs:
                    cfg = ctx["configs"][cog]
                    dirs = {
                        k: tmp / f"{size}-{cog}-{k}" for k in ("round2", "odc-stats", "odc-ndvi")
                    }
                    runs = {
                        "round2": run_entry(
                            "odc-stats", cfg, tile1, env_r2, tmp, keep=dirs["round2"]
                        ),
                        "odc-stats": run_entry(
                            "odc-stats", cfg, tile1, env, tmp, keep=dirs["odc-stats"]
                        ),
                        "odc-ndvi": run_entry(
                            "odc-ndvi", cfg, tile1, env, tmp, keep=dirs["odc-ndvi"]
                        ),
                    }
                    key = f"{world}/{size}/{cog}"
                    out[key] = {
                        "task": tile1[0]["task"],
                        "large_graph": {k: r["large_graph"] for k, r in runs.items()},
                        "task_s": {k: r["task_s"][0] for k, r in runs.items()},
                        "odc-stats vs round2": compare_outputs(dirs["round2"], dirs["odc-stats"]),
                        "odc-ndvi vs round2": compare_outputs(dirs["round2"], dirs["odc-ndvi"]),
                    }
                    o = out[key]
                    print(
                        f"  {key}: odc-stats {o['odc-stats vs round2']['identical']}/"
                        f"{o['odc-stats vs round2']['files']}, odc-ndvi "
                        f"{o['odc-ndvi vs round2']['identical']}/{o['odc-ndvi vs round2']['files']} "
                        f"files identical to round 2; large graph: "
                        f"{ {k: bool(v) for k, v in o['large_graph'].items()} }",
                        flush=True,
                    )
                    for d in dirs.values():
                        shutil.rmtree(d, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, sizes: str = "2048,3200") -> None:
        sp.add_argument("--worlds", default="aligned,utm", help="aligned,utm")
        sp.add_argument("--sizes", default=sizes, help="tile sizes (2048,3200)")
        sp.add_argument("--cogs", default=",".join(COGS), help="shipped,dea6")
        sp.add_argument("--out", type=Path, default=None, help="JSON path (benchmarks/results/)")

    sp = sub.add_parser("prepare", help="generate, index and task the worlds (cached)")
    common(sp)
    sp = sub.add_parser("tasks", help="the round-3 table (entry points, baselines)")
    common(sp)
    sp.add_argument("--repeats", type=int, default=3)
    sp.add_argument("--entries", default=",".join(ENTRIES), help="odc-stats,odc-ndvi")
    sp.add_argument("--no-baselines", action="store_true", help="skip tutorial and floor")
    sp = sub.add_parser("profile", help="stages, memory timeline, bytes read of a warm task")
    common(sp, sizes="3200")
    sp = sub.add_parser("startup", help="import costs")
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--out", type=Path, default=None)
    sp = sub.add_parser("identity", help="outputs vs round 2 (decoded pixels)")
    common(sp)
    sp.add_argument("--round2", type=Path, required=True, help="worktree of commit 586713b")
    sp = sub.add_parser("report", help="markdown tables and the cost model from the JSONs")
    sp.add_argument("--results", type=Path, default=RESULTS)
    sp = sub.add_parser("child", help=argparse.SUPPRESS)
    for a in ("--kind", "--ctx", "--size", "--cog", "--report", "--outdir"):
        sp.add_argument(a)
    sp.add_argument("--tiles", type=int, default=2)
    args = p.parse_args(argv)

    if args.cmd == "child":
        _run_child(args)
        return 0
    if args.cmd == "report":
        from round3_report import report  # noqa: PLC0415 - only for this subcommand

        report(args.results)
        return 0
    if args.cmd == "startup":
        body = startup(args.repeats)
        print(json.dumps({k: v.get("import_s_median") for k, v in body["cases"].items()}))
        print(f"JSON: {write_results('bench_round3_startup', body, args.out, RESULTS)}")
        return 0
    worlds = [w for w in args.worlds.split(",") if w]
    sizes = [s for s in args.sizes.split(",") if s]
    cogs = [c for c in args.cogs.split(",") if c]
    if args.cmd == "prepare":
        body = prepare(worlds)
        name = "bench_round3_prepare"
    elif args.cmd == "tasks":
        entries = [e for e in args.entries.split(",") if e]
        series = []
        for world in worlds:
            for size in sizes:
                one = tasks_series(world, size, args.repeats, entries, cogs, not args.no_baselines)
                series.append(one)
                write_results(f"bench_round3_tasks-{world}-{size}", one, None, RESULTS)
        body = {"series": series}
        name = "bench_round3_tasks"
    elif args.cmd == "profile":
        body = {"profiles": {s: profile(worlds, s, cogs) for s in sizes}}
        name = "bench_round3_profile"
    else:
        body = identity(worlds, sizes, cogs, args.round2)
        name = "bench_round3_identity"
    print(f"JSON: {write_results(name, body, args.out, RESULTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
