"""End-to-end benchmark on an indexed synthetic archive: the tutorial vs the plugin.

One odc-stats tile (``--tile-px``, default 1024; ``--tile-px 2048`` for the real one) of a
synthetic USGS C2 archive (``odc_ndvi_plugin.dev.synthetic``, one Dec..Nov year at the 16-day
revisit, two overlapping WRS paths a day), indexed in an embedded datacube
(``odc_ndvi_plugin.dev.index``) with a task db from the real ``odc-stats save-tasks``. Cases:

* ``a``  tutorial, verbatim: ``dc.load(qa_pixel, red, nir08; resampling {qa: nearest,
  *: average}; EPSG:3577 30 m; dask_chunks time 2 / x 3072 / y 3221; group_by solar_day)``,
  ``make_mask``, ``stack.where(mask)``, NDVI, ``groupby("time.season").mean("time")``,
  ``.compute()`` (result in memory, nothing written);
* ``b``  our plugin through our runner (``odc_ndvi_plugin.ops.session.execute``) with the shipped
  ``cfg/run-usgs-c2-year.yaml``: seasonal mean + clear count, 8 COGs + rgba + STAC written;
* ``b'`` the same with ``plugin_config.loader: odc-stats`` (odc-stats' own loader);
* ``b+p`` ``b`` with the reduced dataset (and rgba) persisted right before ``sink.dump``
  by the benchmark, as odc-stats' own ``TaskRunner`` does. Runners before commit 23a8e20
  did not persist, and every output band (8 + rgba) re-ran the whole load; since then
  ``b`` persists itself and ``b+p`` should equal ``b``;
* ``c``  load floor: the task's datasets, the three bands read window by window exactly as
  ``b``'s direct loader reads them (same solar-day grouping, same output chunks), reduced
  by a trivial sum;
* ``d``  odc-stats' built-in ``ndvi-median`` plugin through the same runner, on the DEA
  flavour of the same archive (one yearly median, not four seasons). ``--skip-d`` skips it.

All cases use the same in-process dask ``LocalCluster`` (1 worker, ``--threads`` threads,
loopback only) and run in their own fresh interpreter; peak RSS is the child's ``VmHWM``
at its end, whole-process CPU comes from ``os.wait4``. "wall"/"CPU" time the work only (after imports and
cluster start); "process" columns are the whole child. For ``a`` and ``b`` the dask task stream is
aggregated by task prefix (thread-seconds per stage), and ``b``'s task is also computed
once more under cProfile with the sync scheduler (``--no-profile`` skips it) to split the
load into open / read / NDVI and to time reduce and COG encoding.

Data and the index are cached under ``benchmarks/results/work/`` (gitignored): the first
run generates and indexes the archive (a few minutes at 2048 px), later runs reuse it.

    python benchmarks/bench_pipeline.py                      # 1024 px tile, 2 threads
    python benchmarks/bench_pipeline.py --tile-px 2048       # the real tile size
    python benchmarks/bench_pipeline.py --crs EPSG:32755     # UTM scenes: reprojection
    python benchmarks/bench_pipeline.py --tile-px 3200 --cases a,b,c --memory-limit 4GiB
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import mib, run_case_process, write_results  # noqa: E402 - benchmarks/ is on sys.path as the script dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CFG = ROOT / "cfg"
START, END = dt.date(2022, 12, 3), dt.date(2023, 11, 30)
WINDOW = "2022-12--P12M"
CASES = {
    "a": "tutorial: dc.load + make_mask + where + NDVI + groupby season mean",
    "b": "plugin via runner (direct loader), COGs written",
    "b'": "plugin via runner, loader: odc-stats",
    "b+p": "b, dataset persisted before sink.dump by the bench (no-op since 23a8e20)",
    "c": "load floor: same window reads as b, trivial sum",
    "d": "odc-stats ndvi-median via runner (DEA flavour)",
}


# --------------------------------------------------------------------------------------
# preparation (parent)
# --------------------------------------------------------------------------------------


def _spec(flavour: str, args: argparse.Namespace):
    from odc_ndvi_plugin.dev.synthetic import ArchiveSpec

    return ArchiveSpec.for_tiles(
        tiles=(1, 1),
        tile_px=args.tile_px,
        start=START,
        end=END,
        revisit_days=args.revisit_days,
        flavour=flavour,
        crs=args.crs,
    )


def index_archives(dcenv: Any, archives: list[Any]) -> None:
    """Add the archives' product definitions and index their datasets (idempotent)."""
    from odc_ndvi_plugin.dev.index import add_products, index_datasets

    for archive in archives:
        add_products(dcenv, [archive.product_definition])
        index_datasets(dcenv, archive.dataset_paths)


def year_task_db(dcenv: Any, cfg_name: str, grid: str, output: Path) -> Path:
    """The real ``odc-stats save-tasks`` of ``cfg/save-tasks-<cfg_name>-year.yaml`` over
    ``WINDOW`` on ``grid`` (e.g. ``epsg:3577;30;3200``); kept if ``output`` exists."""
    from odc_ndvi_plugin.dev.demo import save_tasks

    return save_tasks(
        dcenv.environ(),
        config=CFG / f"save-tasks-{cfg_name}-year.yaml",
        grid=grid,
        temporal_range=WINDOW,
        output=output,
    )


def tile_ctx(
    spec: Any, db: Path, tile: tuple[int, int], gbox: Any, cfg_name: str
) -> dict[str, Any]:
    """What a case needs to know of one task: product, bands, task db and id, the tile's
    bounding box (EPSG:3577) and shape, the shipped run config of the flavour."""
    ix, iy = tile
    left, bottom, right, top = gbox.boundingbox
    return {
        "product": spec.product,
        "measurements": list(spec.measurements),
        "db": str(db),
        "task": f"{WINDOW}/{ix}/{iy}",
        "tile": [ix, iy],
        "bbox": [left, bottom, right, top],
        "shape": list(gbox.shape.yx),
        "run_config": str(CFG / f"run-{cfg_name}-year.yaml"),
    }


def _prepare(args: argparse.Namespace, dcenv: Any, workdir: Path) -> dict[str, Any]:
    """Generate + index the archive(s), write the task db(s); what the children need."""
    from odc_ndvi_plugin.dev.index import init_index
    from odc_ndvi_plugin.dev.synthetic import generate_archive

    init_index(dcenv)
    flavours = ["usgs_c2"] + ([] if args.skip_d else ["dea_ard"])
    ctx: dict[str, Any] = {
        "threads": args.threads,
        "memory_limit": args.memory_limit,
        "chunks": args.chunks,
    }
    for flavour in flavours:
        spec = _spec(flavour, args)
        t0 = time.monotonic()
        archive = generate_archive(spec, workdir / "archive" / flavour)
        t_gen = time.monotonic() - t0
        index_archives(dcenv, [archive])
        cfg_name = "usgs-c2" if flavour == "usgs_c2" else "dea-ard"
        db = year_task_db(
            dcenv, cfg_name, spec.gridspec, workdir / "tasks" / f"{spec.product}_{WINDOW}.db"
        )
        (tile, gbox) = next(iter(spec.tiles().items()))
        ctx[flavour] = {
            **tile_ctx(spec, db, tile, gbox, cfg_name),
            "scenes": len(archive.dataset_paths),
            "dates": len(spec.dates),
            "generate_s": t_gen,
        }
    return ctx


# --------------------------------------------------------------------------------------
# cases (children)
# --------------------------------------------------------------------------------------


def _client(threads: int, memory_limit: str | None = None):
    """The runner's local cluster: 1 in-process worker, ``threads`` threads, loopback, and
    the runner's ``memory_limit`` (``--memory-limit``; default as the runner's: all
    memory but 1 GiB). In-process, the worker's memory monitor compares the RSS of the
    whole process (interpreter, datacube, GDAL caches included) with the limit, as
    ``VmHWM`` does: it spills above 70 %, pauses above 80 % (no nanny, so no restart)."""
    from distributed import Client, LocalCluster
    from odc.stats.proc import get_max_mem

    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=threads,
        processes=False,
        memory_limit=memory_limit or max(get_max_mem() - (1 << 30), 1 << 30),
        dashboard_address="127.0.0.1:0",
    )
    return Client(cluster)


class _MemoryWatch:
    """What the worker's memory manager did during a case: its warnings (pause/resume,
    "unmanaged memory"), seconds spent paused and the largest RSS seen (sampled every
    0.1 s), and the spill counters (``disk-write``/``disk-read`` digests)."""

    def __init__(self, client: Any) -> None:
        import logging
        import threading

        self.worker = next(iter(client.cluster.workers.values()))
        self.messages: list[str] = []
        self.paused_s = 0.0
        self.max_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        watch = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                watch.messages.append(record.getMessage())

        self._handler = _Handler(logging.WARNING)
        self._logger = logging.getLogger("distributed.worker.memory")
        self._logger.setLevel(logging.WARNING)  # the parent "distributed" is at ERROR
        self._logger.addHandler(self._handler)

    def _sample(self) -> None:
        import psutil
        from distributed.core import Status

        proc = psutil.Process()
        while not self._stop.wait(0.1):
            self.max_rss = max(self.max_rss, proc.memory_info().rss)
            if self.worker.status == Status.paused:
                self.paused_s += 0.1

    def __enter__(self) -> _MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._logger.removeHandler(self._handler)

    def report(self) -> dict[str, Any]:
        spill: dict[str, float] = {}
        for key, value in self.worker.digests_total.items():
            if isinstance(key, tuple) and key[-2:-1] and key[-2] in ("disk-write", "disk-read"):
                name = f"{key[-2]}-{key[-1]}"
                spill[name] = spill.get(name, 0) + value
        pauses = [m for m in self.messages if "Pausing worker" in m]
        return {
            "memory_limit_bytes": self.worker.memory_manager.memory_limit,
            "paused_times": len(pauses),
            "paused_s": round(self.paused_s, 1),
            "spilled_count": int(spill.get("disk-write-count", 0)),
            "spilled_bytes": int(spill.get("disk-write-bytes", 0)),
            "unspilled_count": int(spill.get("disk-read-count", 0)),
            "max_sampled_rss_bytes": self.max_rss,
            "warnings": sorted({m.split(" -- ")[0][:160] for m in self.messages}),
        }


def _case_a(ctx: dict[str, Any], client: Any) -> dict[str, Any]:
    import datacube
    from datacube.utils.masking import make_mask

    from odc_ndvi_plugin.presets import PRESETS

    u = ctx["usgs_c2"]
    left, bottom, right, top = u["bbox"]
    red, nir, qa = u["measurements"]
    dc = datacube.Datacube(app="bench_pipeline")
    # --- the tutorial, verbatim ---------------------------------------------------------
    stack = dc.load(
        product=u["product"],
        x=(left, right),
        y=(bottom, top),
        crs="EPSG:3577",
        time=("2022-12-01", "2023-11-30"),
        measurements=[qa, red, nir],
        resampling={qa: "nearest", "*": "average"},
        output_crs="EPSG:3577",
        resolution=(-30, 30),
        dask_chunks={"time": 2, "x": 3072, "y": 3221},
        group_by="solar_day",
    )
    mask = make_mask(stack[qa], **PRESETS["usgs_c2"].good_pixel_flags)
    cloud_free = stack.where(mask)
    ndvi = (cloud_free[nir] - cloud_free[red]) / (cloud_free[nir] + cloud_free[red])
    seasonal = ndvi.groupby("time.season").mean("time")
    result = seasonal.compute()
    # -------------------------------------------------------------------------------------
    return {
        "observations": int(stack.sizes["time"]),
        "shape": [int(n) for n in result.shape],
        "dtype": str(result.dtype),
        "where_dtype": str(cloud_free[red].dtype),
    }


def _run_config(ctx: dict[str, Any], flavour: str, out: Path, **plugin_changes: Any):
    import yaml

    from odc_ndvi_plugin.ops.runner import load_run_config

    f = ctx[flavour]
    doc = yaml.safe_load(Path(f["run_config"]).read_text())
    doc["threads"] = ctx["threads"]
    doc["plugin_config"].update(plugin_changes)
    if ctx.get("chunks"):
        doc["plugin_config"]["chunks"] = {"x": ctx["chunks"], "y": ctx["chunks"]}
    # memory_limit reaches TaskRunnerConfig as for a real run; with the benchmark's client
    # passed to execute() the runner starts no cluster, so _client() applies the same limit
    cfg, _ = load_run_config(
        doc,
        filedb=f["db"],
        output_location=f"file://{out}",
        memory_limit=ctx.get("memory_limit"),
    )
    return cfg


def _execute(cfg: Any, task: str, client: Any) -> dict[str, Any]:
    from odc_ndvi_plugin.ops.session import execute

    summary = execute(cfg, tasks=[task], client=client)
    if summary.done != 1 or summary.failed:
        raise RuntimeError(f"run failed: {summary.line()} {summary.errors}")
    return {"summary": summary.line()}


def _persist_before_dump() -> None:
    """Bench-only patch: persist the reduced dataset (and the rgba preview, together, so
    they share one load) right before ``sink.dump``, as odc-stats' own ``TaskRunner._run``
    does. Runners before commit 23a8e20 did not: odc-stats' sink builds one graph per
    output band, so every band (8 + rgba) re-ran the whole load. On a runner that
    persists already this is a no-op (persisting persisted data)."""
    from distributed import default_client

    from odc_ndvi_plugin.ops.runner import AtomicCOGSink

    dump = AtomicCOGSink.dump

    def _dump(self, task, proc, ds, aux=None, *args, **kwargs):
        client = default_client()
        if aux is None:
            ds = client.persist(ds)
        else:
            ds, aux = client.persist([ds, aux])
        return dump(self, task, proc, ds, aux, *args, **kwargs)

    AtomicCOGSink.dump = _dump


def _case_b(ctx: dict[str, Any], client: Any, out: Path, loader: str) -> dict[str, Any]:
    cfg = _run_config(ctx, "usgs_c2", out, loader=loader)
    res = _execute(cfg, ctx["usgs_c2"]["task"], client)
    res["cogs"] = len(list(out.rglob("*.tif")))
    return res


def _case_d(ctx: dict[str, Any], client: Any, out: Path) -> dict[str, Any]:
    import yaml

    from odc_ndvi_plugin.ops.runner import load_run_config

    f = ctx["dea_ard"]
    red, nir, mask = f["measurements"]
    doc = yaml.safe_load(Path(f["run_config"]).read_text())
    doc["threads"] = ctx["threads"]
    doc["plugin"] = "odc.stats.plugins.ls_ndvi_median.StatsNDVI"  # "ndvi-median"
    # the synthetic DEA product has no contiguity band: the fmask band stands in
    # (fmask == 0 is nodata, already masked as "nodata" by the plugin)
    doc["plugin_config"] = {
        "input_bands": [red, nir],
        "output_bands": "ndvi_median",
        "mask_band": mask,
        "contiguity_band": mask,
        "resampling": "nearest",
    }
    doc["product"] = {**doc["product"], "name": "bench_ndvi_median", "short_name": "bench"}
    doc["cog_opts"].pop("overrides", None)
    cfg, _ = load_run_config(
        doc,
        filedb=f["db"],
        output_location=f"file://{out}",
        memory_limit=ctx.get("memory_limit"),
    )
    res = _execute(cfg, f["task"], client)
    res["cogs"] = len(list(out.rglob("*.tif")))
    return res


class _SyncClient:
    """Stands in for the dask client in the profile: ``persist`` on the sync scheduler."""

    def persist(self, x: Any, **_: Any) -> Any:
        import dask

        if isinstance(x, list | tuple):
            return list(dask.persist(*x, scheduler="sync"))
        return dask.persist(x, scheduler="sync")[0]


def _case_profile(ctx: dict[str, Any], out: Path) -> dict[str, Any]:
    """Case b's task graph (runner._graph: load, reduce, COGs) single-threaded under cProfile."""
    import cProfile
    import pstats

    import dask
    from odc.stats.tasks import parse_task

    from odc_ndvi_plugin.ops.runner import NDVITaskRunner

    cfg = _run_config(ctx, "usgs_c2", out, loader="direct")
    runner = NDVITaskRunner(cfg)
    runner.client = lambda: _SyncClient()  # a runner that persists must not start a cluster
    task = runner.rdr.load_task(parse_task(ctx["usgs_c2"]["task"]))
    prof = cProfile.Profile()
    wall0 = time.perf_counter()
    prof.enable()
    # sync scheduler for everything, also for computations started while building the
    # graph (odc-stats' sink COG-encodes a lazy band by computing it): cProfile sees
    # only the calling thread
    with dask.config.set(scheduler="sync"):
        graph = runner._graph(task, False)
        t_graph = time.perf_counter() - wall0
        dask.compute(graph)
    prof.disable()
    wall = time.perf_counter() - wall0
    stats = pstats.Stats(prof)
    found: dict[str, dict[str, float]] = {}
    for (path, _line, func), (_cc, ncalls, _tt, ct, _callers) in stats.stats.items():
        for stage, (mod, name) in PROFILE_STAGES.items():
            if func == name and path.endswith(mod):
                st = found.setdefault(stage, {"calls": 0, "cum_s": 0.0})
                st["calls"] += ncalls
                st["cum_s"] += ct
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:10]
    own = [
        {"function": f"{Path(path).name}:{func}", "calls": nc, "own_s": tt}
        for (path, _line, func), (_cc, nc, tt, _ct, _callers) in top
    ]
    return {"wall_s": wall, "graph_build_s": t_graph, "stages": found, "top_own_time": own}


#: cProfile functions reported for the profile of case b: label -> (file suffix, function)
PROFILE_STAGES = {
    "load: one solar day on one load block (_day_block)": (
        "odc_ndvi_plugin/load/_direct.py",
        "_day_block",
    ),
    "  one scene on one block (_scene_ndvi_on)": (
        "odc_ndvi_plugin/load/_direct.py",
        "_scene_ndvi_on",
    ),
    "    rasterio.open": ("rasterio/__init__.py", "open"),
    "    read: rasterio window reads (_read_window)": (
        "odc_ndvi_plugin/load/_rio.py",
        "_read_window",
    ),
    "    clear mask (clear_pixels)": ("odc_ndvi_plugin/ndvi.py", "clear_pixels"),
    "    NDVI (ndvi_where)": ("odc_ndvi_plugin/ndvi.py", "ndvi_where"),
    "    warp bounds (rasterio.warp.transform_bounds)": ("rasterio/warp.py", "transform_bounds"),
    "    warp (rasterio.warp.reproject)": ("rasterio/warp.py", "reproject"),
    "reduce: season stats (reduce_block)": ("odc_ndvi_plugin/reduce/_kernels.py", "reduce_block"),
    "rgba preview (ndvi_rgba)": ("odc_ndvi_plugin/preview.py", "ndvi_rgba"),
    "COG encode (odc.geo _write_cog)": ("odc/geo/cog/_rio.py", "_write_cog"),
    "file write (runner _stage)": ("odc_ndvi_plugin/ops/commit.py", "stage_output"),
    "commit (runner _commit)": ("odc_ndvi_plugin/ops/commit.py", "commit_staged"),
}


def _floor_day(
    sources: Any, dst: Any, resampling: str, mask_filters: Any, read_env=(), skip=False
) -> Any:
    """Stands in for ``load._day_block`` in case c: the same reads (``load.read_scene``: the
    mask band, then red/NIR in the file blocks with a clear pixel still wanted), summed
    instead of turned into NDVI. The result has the day block's shape (its sum in [0, 0, 0])
    so the rest of the loader's graph is unchanged."""
    import numpy as np

    from odc_ndvi_plugin.load import read_scene

    ny, nx = dst.shape.yx
    total, wanted = 0.0, None
    for source in sources:
        scene = read_scene(source, dst, mask_filters=mask_filters, wanted=wanted)
        if scene.red is not None and scene.nir is not None:
            total += float(scene.red.sum(dtype=np.float64) + scene.nir.sum(dtype=np.float64))
        if scene.aligned and scene.good is not None:
            # clear pixels so far (the loader's "still wanted" is where its NDVI is NaN)
            p = scene.pad
            clear = np.zeros((ny + 2 * p, nx + 2 * p), dtype=bool)
            clear[scene.box] = scene.good
            gap = ~clear[p : p + ny, p : p + nx]
            wanted = gap if wanted is None else wanted & gap
            if not wanted.any():
                break
    out = np.zeros((1, ny, nx), dtype=np.float32)
    out[0, 0, 0] = total
    return out


def _case_c(ctx: dict[str, Any], client: Any) -> dict[str, Any]:
    import yaml
    from odc.stats.tasks import TaskReader, parse_task

    import odc_ndvi_plugin.load._direct as load
    from odc_ndvi_plugin import NDVISeasonal

    u = ctx["usgs_c2"]
    plugin_config = yaml.safe_load(Path(u["run_config"]).read_text())["plugin_config"]
    if ctx.get("chunks"):
        plugin_config["chunks"] = {"x": ctx["chunks"], "y": ctx["chunks"]}
    plugin_config["loader"] = "direct"
    rdr = TaskReader(u["db"])
    tidx = parse_task(u["task"])
    datasets = rdr.datasets(tidx)
    gbox = rdr._gridspec.tile_geobox(tidx[1:])
    load._day_block = _floor_day  # this child process only: the loader's graph, reads only
    stack = NDVISeasonal(**plugin_config).input_data(datasets, gbox).ndvi
    total = float(client.compute(stack.data.sum(dtype="float64"), sync=True))
    days = load.group_by_solar_day(datasets, gbox)
    return {
        "datasets": len(datasets),
        "solar_days": len(days),
        "blocks": stack.data.npartitions,
        "sum": total,
    }


def _task_stream_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    from dask.utils import key_split

    stages: dict[str, dict[str, float]] = {}
    for rec in records:
        name = key_split(rec["key"])
        for ss in rec.get("startstops", ()):
            if ss.get("action") != "compute":
                continue
            st = stages.setdefault(name, {"tasks": 0, "thread_s": 0.0})
            st["tasks"] += 1
            st["thread_s"] += ss["stop"] - ss["start"]
    return dict(sorted(stages.items(), key=lambda kv: -kv[1]["thread_s"]))


def _peak_rss() -> int:
    """Peak RSS of this process image (``VmHWM``). Not ``ru_maxrss``: after fork + exec it
    still counts the parent's RSS at fork time (the parent holds datacube & co.)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _run_case(args: argparse.Namespace) -> None:
    """Child: one case, timed after imports and cluster start."""
    import logging
    import warnings

    import distributed  # noqa: F401  (imports outside the timed section)

    logging.getLogger("distributed").setLevel(logging.ERROR)
    ctx = json.loads(Path(args.ctx).read_text())
    out = Path(args.outdir)
    if args.case == "profile":
        report = _case_profile(ctx, out)
        report["peak_rss_bytes"] = _peak_rss()
        Path(args.report).write_text(json.dumps(report))
        return
    client = _client(ctx["threads"], ctx.get("memory_limit"))
    try:
        from distributed import get_task_stream

        with warnings.catch_warnings(record=True) as caught, _MemoryWatch(client) as mem:
            warnings.simplefilter("always")
            wall0, cpu0 = time.perf_counter(), time.process_time()
            with get_task_stream(client) as ts:
                if args.case == "a":
                    info = _case_a(ctx, client)
                elif args.case == "b":
                    info = _case_b(ctx, client, out, "direct")
                elif args.case == "b'":
                    info = _case_b(ctx, client, out, "odc-stats")
                elif args.case == "b+p":
                    _persist_before_dump()
                    info = _case_b(ctx, client, out, "direct")
                elif args.case == "c":
                    info = _case_c(ctx, client)
                else:
                    info = _case_d(ctx, client, out)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stages = _task_stream_summary(ts.data)
        memory = mem.report()
    finally:
        client.close()
    big = sorted(
        {str(w.message).splitlines()[0] for w in caught if "large graph" in str(w.message)}
    )
    if big:
        info["warnings"] = big
    report = {"wall_s": wall, "cpu_s": cpu, "info": info, "stages": stages, "dask_memory": memory}
    report["peak_rss_bytes"] = _peak_rss()
    Path(args.report).write_text(json.dumps(report))


# --------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------


def _spawn(case: str, ctx_path: Path, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    report = tmp / f"report-{case}.json"
    outdir = tmp / f"out-{case.replace(chr(39), 'q').replace('+', '_')}"
    outdir.mkdir()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--case",
        case,
        "--ctx",
        str(ctx_path),
        "--report",
        str(report),
        "--outdir",
        str(outdir),
    ]
    return run_case_process(case, cmd, report, env=env)


def _table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| case | what | wall s | CPU s | peak RSS MiB | process wall s | process CPU s |",
        "|------|------|-------:|------:|-------------:|---------------:|--------------:|",
    ]
    for case, r in results.items():
        lines.append(
            f"| {case} | {CASES[case]} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {mib(r['peak_rss_bytes'])} | {r['process_wall_s']:.1f} | {r['process_cpu_s']:.1f} |"
        )
    return lines


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    pairs = [("b", o) for o in ("a", "c", "d", "b'", "b+p")] + [("b+p", o) for o in ("a", "c")]
    for num, den in pairs:
        if num not in results or den not in results:
            continue
        n, d = results[num], results[den]
        out[f"{num}/{den}"] = {
            "wall": n["wall_s"] / d["wall_s"],
            "cpu": n["cpu_s"] / d["cpu_s"],
            "peak_rss": n["peak_rss_bytes"] / d["peak_rss_bytes"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tile-px", type=int, default=1024, help="tile size in pixels (1024)")
    p.add_argument("--crs", default="EPSG:3577", help="scene CRS, e.g. EPSG:32755 (UTM)")
    p.add_argument("--threads", type=int, default=2, help="dask threads (2)")
    p.add_argument(
        "--revisit-days",
        type=int,
        default=16,
        help="days between acquisitions of a path (16 = 1x observations; 32 = half, 8 = double)",
    )
    p.add_argument(
        "--cases", default="a,b,b',b+p,c,d", help="comma-separated subset of a,b,b',b+p,c,d"
    )
    p.add_argument("--skip-d", action="store_true", help="skip case d (no DEA archive)")
    p.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the cProfile run of case b's graph (single thread, after the cases)",
    )
    p.add_argument(
        "--memory-limit",
        default=None,
        help="dask worker memory_limit, e.g. 4GiB (default: all memory but 1 GiB, as the runner)",
    )
    p.add_argument(
        "--chunks",
        type=int,
        default=None,
        help="override plugin_config chunks (x = y = N px) for b, b', b+p, c and the profile",
    )
    p.add_argument("--workdir", type=Path, default=None, help="cache (benchmarks/results/work)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (benchmarks/results/)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.add_argument("--outdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.case:
        _run_case(args)
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.skip_d and "d" in cases:
        cases.remove("d")
    args.skip_d = "d" not in cases
    if not cases or any(c not in CASES for c in cases):
        p.error(f"--cases must be among {', '.join(CASES)}")

    from odc_ndvi_plugin.dev.index import open_index

    crs_tag = args.crs.replace(":", "").lower()
    revisit_tag = f"-r{args.revisit_days}" if args.revisit_days != 16 else ""
    workdir = (args.workdir or RESULTS / "work") / f"px{args.tile_px}-{crs_tag}{revisit_tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench_pipeline: 1 tile of {args.tile_px} px (30 m, EPSG:3577 grid), scenes in "
        f"{args.crs}, {START}..{END} every 16 days x 2 paths, {args.threads} dask threads"
    )
    t0 = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with open_index(workdir, use_user_config=False) as dcenv:
        ctx = _prepare(args, dcenv, workdir)
        u = ctx["usgs_c2"]
        print(
            f"  archive: {u['scenes']} scenes on {u['dates']} dates, tile {u['shape']} "
            f"(prepared in {time.monotonic() - t0:.0f}s; cached in {workdir})"
        )
        env = {**os.environ, **dcenv.environ()}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        with tempfile.TemporaryDirectory(prefix="bench_pipeline_", dir=workdir) as tmpdir:
            tmp = Path(tmpdir)
            ctx_path = tmp / "ctx.json"
            ctx_path.write_text(json.dumps(ctx))
            for case in cases:
                print(f"  running {case}: {CASES[case]} ...", flush=True)
                results[case] = _spawn(case, ctx_path, tmp, env)
                r = results[case]
                print(
                    f"    wall {r['wall_s']:.1f}s, CPU {r['cpu_s']:.1f}s, "
                    f"peak RSS {mib(r['peak_rss_bytes'])} MiB; {r['info']}",
                    flush=True,
                )
                m = r["dask_memory"]
                print(
                    f"    dask: limit {mib(m['memory_limit_bytes'])} MiB, paused "
                    f"{m['paused_times']}x ({m['paused_s']}s), spilled {m['spilled_count']} "
                    f"keys ({mib(m['spilled_bytes'])} MiB), max sampled RSS "
                    f"{mib(m['max_sampled_rss_bytes'])} MiB; {m['warnings'] or 'no warnings'}",
                    flush=True,
                )
            profile = None
            if not args.no_profile:
                print("  profiling b (cProfile, dask sync scheduler, 1 thread) ...", flush=True)
                profile = _spawn("profile", ctx_path, tmp, env)
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    lines = _table(results)
    print("\n".join(lines))
    ratios = _ratios(results)
    print()
    for name, r in ratios.items():
        print(f"{name}: wall {r['wall']:.2f}x, CPU {r['cpu']:.2f}x, peak RSS {r['peak_rss']:.2f}x")
    for case in ("b", "a"):
        if case not in results:
            continue
        stages = results[case]["stages"]
        total = sum(s["thread_s"] for s in stages.values()) or 1.0
        print(f"\n({case}) dask task stream, thread-seconds by task prefix (top 8):")
        print("| task prefix | tasks | thread s | share |")
        print("|---|---:|---:|---:|")
        for name, s in list(stages.items())[:8]:
            print(
                f"| {name} | {s['tasks']:.0f} | {s['thread_s']:.1f} | {s['thread_s'] / total:.0%} |"
            )

    if profile is not None:
        print(
            f"\n(b) profile: graph of the task computed once with the sync scheduler: "
            f"{profile['wall_s']:.1f}s ({profile['graph_build_s']:.1f}s of it in runner._graph, "
            "which persists on runners since 23a8e20); "
            "cumulative seconds:"
        )
        print("| stage | calls | cum s | share of wall |")
        print("|---|---:|---:|---:|")
        for stage in PROFILE_STAGES:
            st = profile["stages"].get(stage)
            if st:
                label = stage.replace("  ", "\u2003")  # keep the indent in markdown
                print(
                    f"| {label} | {st['calls']:.0f} | {st['cum_s']:.1f} "
                    f"| {st['cum_s'] / profile['wall_s']:.0%} |"
                )

        print("\ntop functions by own time:")
        print("| function | calls | own s |")
        print("|---|---:|---:|")
        for f in profile["top_own_time"][:8]:
            print(f"| {f['function']} | {f['calls']} | {f['own_s']:.1f} |")

    body = {
        "params": {
            "tile_px": args.tile_px,
            "revisit_days": args.revisit_days,
            "crs": args.crs,
            "threads": args.threads,
            "memory_limit": args.memory_limit,
            "chunks": args.chunks,
            "cases": cases,
            "start": str(START),
            "end": str(END),
        },
        "archive": {k: v for k, v in ctx.items() if isinstance(v, dict)},
        "results": results,
        "ratios": ratios,
        "profile_b": profile,
    }
    out = write_results("bench_pipeline", body, args.out, RESULTS)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
