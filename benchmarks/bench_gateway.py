"""Throughput of our runner on a real dask-gateway cluster: 1 vs 2 workers, demo region.

The demo region (``ArchiveSpec.demo()``: 2x2 tiles of 512 px, 46 USGS C2 scenes, one
Dec..Nov year -> 4 odc-stats tasks) is generated, indexed in an embedded datacube and
tasked with the real ``odc-stats save-tasks``, exactly as ``odc_ndvi_plugin.dev.demo.run_demo``
does; all of it is cached under ``benchmarks/results/work/gateway-demo/`` (gitignored).

A ``dask-gateway-server`` (UnsafeLocalBackend, SimpleAuthenticator, everything on
127.0.0.1) is started with the configuration and helpers of ``tests/fixtures/servers.py``
and stopped at the end, with every scheduler and worker it started. Rows:

* ``local``: ``execute(cfg)`` without a client (the runner's own in-process LocalCluster,
  ``threads=2``, ``max_in_flight=2``): the baseline;
* ``gateway``: ``execute(cfg, client=..., max_in_flight=2 x workers)`` on a new gateway
  cluster (``open_gateway_cluster``) of 1, then 2 workers, each 1 core / 1 thread.

Every row runs all tasks of the task db, ``overwrite=True``, to file:// under a temp dir.
"wall" is from the start of the first task's submission (``NDVITaskRunner._graph``, whose
``persist`` submits the task's load) to the last task's result; cluster start-up (gateway:
cluster created until its workers arrived, plus importing the plugin on the workers;
local: ``execute`` called until the first submission, i.e. LocalCluster start, preflight
and task db) is reported separately. "speed-up" is tasks/min over the 1-worker gateway row.
CPU seconds during ``execute()`` are split into this run's (this process, the gateway
server and all it started: proxy, scheduler, workers) and everything else's on the machine (``/proc/stat``): on a shared
2-core machine other jobs take cores from the workers, and the columns show how much.

    python benchmarks/bench_gateway.py                 # ~1 min (+20 s the first time)
    python benchmarks/bench_gateway.py --workers 1,2   # the default
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _proc import write_results  # noqa: E402 - benchmarks/ is on sys.path as the script dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))  # tests.fixtures.servers

#: run config of the demo (odc_ndvi_plugin.dev.demo) and what the rows change in it
RUN_CONFIG = "run-usgs-c2-year.yaml"
SAVE_TASKS_CONFIG = "save-tasks-usgs-c2-year.yaml"
WORKER_OPTIONS = {"worker_cores": 1, "worker_threads": 1, "worker_memory": 2.0}
#: imported on the workers before timing (seconds of imports, not task work)
WARM_UP = "import odc_ndvi_plugin.plugin, odc_ndvi_plugin.ops.runner, odc.geo.cog"


# --------------------------------------------------------------------------------------
# the demo region: archive + index + task db (cached)
# --------------------------------------------------------------------------------------


def prepare(workdir: Path) -> dict[str, Any]:
    """Generate, index and task the demo region as ``run_demo`` does; reuse a cached db."""
    from odc_ndvi_plugin.dev.demo import CFG_DIR, save_tasks
    from odc_ndvi_plugin.dev.index import add_products, index_datasets, init_index, open_index
    from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive

    spec = ArchiveSpec.demo(flavour="usgs_c2")
    window = f"{spec.start.year}-{spec.start.month:02d}--P12M"
    db = workdir / "tasks" / f"{spec.product}_{window}.db"
    t0 = time.monotonic()
    archive = generate_archive(spec, workdir / "archive" / "usgs_c2")  # idempotent
    if not db.exists():  # save_tasks writes the db only after indexing finished
        with open_index(workdir, use_user_config=False) as dcenv:
            init_index(dcenv)
            add_products(dcenv, [archive.product_definition])
            index_datasets(dcenv, archive.dataset_paths)
            save_tasks(
                dcenv.environ(),
                config=CFG_DIR / SAVE_TASKS_CONFIG,
                grid=spec.gridspec,
                temporal_range=window,
                output=db,
            )
    return {
        "region": (
            f"{len(spec.tiles())} tiles of {spec.tile_px} px, {len(archive.dataset_paths)} "
            f"scenes on {len(spec.dates)} dates {spec.start}..{spec.end}, {spec.product}"
        ),
        "tiles": len(spec.tiles()),
        "tile_px": spec.tile_px,
        "scenes": len(archive.dataset_paths),
        "db": str(db),
        "run_config": str(CFG_DIR / RUN_CONFIG),
        "prepare_s": time.monotonic() - t0,
    }


# --------------------------------------------------------------------------------------
# dask-gateway-server (tests/fixtures/servers.py's config and helpers, outside pytest)
# --------------------------------------------------------------------------------------


def gateway_server(root: Path):
    """The test fixtures' loopback ``dask-gateway-server`` (no moto), as a context manager."""
    from tests.fixtures.servers import _BIN, run_gateway_server

    if not (_BIN / "dask-gateway-server").exists():
        raise SystemExit("dask-gateway-server is not installed (pip install '.[gateway]')")
    return run_gateway_server(root, {})


# --------------------------------------------------------------------------------------
# one row
# --------------------------------------------------------------------------------------


def _run_cfg(ctx: dict[str, Any], out: Path, **changes: Any):
    import yaml

    from odc_ndvi_plugin.ops.runner import load_run_config

    doc = yaml.safe_load(Path(ctx["run_config"]).read_text())
    cfg, _ = load_run_config(
        doc, filedb=ctx["db"], output_location=f"file://{out}", overwrite=True, **changes
    )
    return cfg


@contextlib.contextmanager
def _first_submission(marks: dict[str, float]) -> Iterator[None]:
    """Record when the runner starts submitting its first task (``_graph`` persists the
    task's load on the cluster before the sink's graph is computed)."""
    from odc_ndvi_plugin.ops.runner import NDVITaskRunner

    graph = NDVITaskRunner._graph

    def timed(self, task, apply_eodatasets3, **kwargs):
        marks.setdefault("first_submit", time.monotonic())
        return graph(self, task, apply_eodatasets3, **kwargs)

    NDVITaskRunner._graph = timed
    try:
        yield
    finally:
        NDVITaskRunner._graph = graph


def _machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat, all processes)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user .. steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def _our_cpu_s(server_pid: int | None) -> tuple[float, float]:
    """CPU seconds of this process, and of the gateway server with everything it started
    (its proxy, the cluster's scheduler and workers)."""
    import psutil

    t = os.times()
    total = 0.0
    if server_pid is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            server = psutil.Process(server_pid)
            for proc in [server, *server.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    c = proc.cpu_times()
                    total += c.user + c.system
    return t.user + t.system, total


def run_row(
    ctx: dict[str, Any],
    out: Path,
    *,
    client: Any = None,
    server_pid: int | None = None,
    max_in_flight: int,
    **changes: Any,
) -> dict[str, Any]:
    from odc_ndvi_plugin.ops.session import execute

    cfg = _run_cfg(ctx, out, **changes)
    marks: dict[str, float] = {}
    results: list[float] = []
    cpu0, machine0 = _our_cpu_s(server_pid), _machine_cpu_s()
    t_call = time.monotonic()
    stream = contextlib.nullcontext(None)
    if client is not None:
        from distributed import get_task_stream

        stream = get_task_stream(client=client)
    with _first_submission(marks), stream as ts:
        summary = execute(
            cfg,
            client=client,
            max_in_flight=max_in_flight,
            progress=lambda _msg: results.append(time.monotonic()),
        )
    t_end = time.monotonic()
    busy: dict[str, float] = {}  # thread-seconds of dask tasks per gateway worker
    for rec in ts.data if ts is not None else []:
        for s in rec.get("startstops", ()):
            if s["action"] == "compute":
                busy[rec["worker"]] = busy.get(rec["worker"], 0.0) + s["stop"] - s["start"]
    machine = _machine_cpu_s() - machine0
    cpu1 = _our_cpu_s(server_pid)
    cpu_client, cpu_gateway = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    ours = cpu_client + cpu_gateway
    if summary.failed or summary.done == 0:
        raise SystemExit(f"run failed: {summary.line()} {summary.errors}")
    stac = len(list(out.rglob("*.stac-item.json")))
    if stac != summary.done:
        raise SystemExit(f"{summary.done} tasks done but {stac} STAC items in {out}")
    t0 = marks["first_submit"]
    wall = results[-1] - t0
    return {
        "tasks": summary.done,
        "wall_s": wall,
        "tasks_per_min": summary.done / wall * 60,
        "results_s": [t - t0 for t in results],
        "before_first_submit_s": t0 - t_call,
        "after_last_result_s": t_end - results[-1],
        "execute_s": t_end - t_call,
        # during execute(): CPU of this run (client/runner, gateway server + its processes)
        # and of everything else on the machine (other jobs compete for the same cores)
        "cpu_ours_s": ours,
        "cpu_client_s": cpu_client,  # this process (local: also the runner's workers)
        "cpu_gateway_s": cpu_gateway,  # gateway server, proxy, scheduler, workers
        "cpu_others_s": max(0.0, machine - ours),
        "task_thread_s_per_worker": dict(sorted(busy.items())),
        "cogs": len(list(out.rglob("*.tif"))),
        "summary": summary.line(),
    }


def gateway_row(
    ctx: dict[str, Any], server: Any, out: Path, workers: int, timeout: float
) -> dict[str, Any]:
    from odc_ndvi_plugin.ops.gateway import GatewayClusterConfig, open_gateway_cluster

    cfg = GatewayClusterConfig.from_mapping(
        {"cluster_options": WORKER_OPTIONS, "workers": workers, "wait_timeout": timeout},
        source="bench_gateway",
    )
    t0 = time.monotonic()
    with open_gateway_cluster(
        cfg, address=server.address, proxy_address=server.proxy_address, auth=server.auth
    ) as (_cluster, client):
        t_ready = time.monotonic()
        # a builtin: the plugin's modules are imported on every worker once, untimed
        if set(client.run(exec, WARM_UP).values()) != {None}:
            raise SystemExit("warm-up import failed on a worker")
        t_warm = time.monotonic()
        nworkers = len(client.scheduler_info()["workers"])
        row = run_row(ctx, out, client=client, server_pid=server.pid, max_in_flight=2 * workers)
        t_run = time.monotonic()
    row.update(
        runner="gateway",
        workers=nworkers,
        threads_per_worker=1,
        max_in_flight=2 * workers,
        cluster_start_s=t_ready - t0,
        warm_up_s=t_warm - t_ready,
        startup_s=t_warm - t0,
        shutdown_s=time.monotonic() - t_run,
    )
    return row


def local_row(ctx: dict[str, Any], out: Path, threads: int) -> dict[str, Any]:
    row = run_row(ctx, out, max_in_flight=2, threads=threads)
    row.update(
        runner="local",
        workers=1,
        threads_per_worker=threads,
        max_in_flight=2,
        startup_s=row["before_first_submit_s"],
    )
    return row


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> list[str]:
    ref = next((r for r in rows if r["runner"] == "gateway" and r["workers"] == 1), None)
    lines = [
        "| runner | workers | threads | tasks | wall s | tasks/min | speed-up | start-up s "
        "| our CPU s | others' CPU s |",
        "|--------|--------:|--------:|------:|-------:|----------:|---------:|-----------:"
        "|----------:|--------------:|",
    ]
    for r in rows:
        speed = f"{r['tasks_per_min'] / ref['tasks_per_min']:.2f}x" if ref else "-"
        lines.append(
            f"| {r['runner']} | {r['workers']} | {r['threads_per_worker']} | {r['tasks']} "
            f"| {r['wall_s']:.1f} | {r['tasks_per_min']:.1f} | {speed} | {r['startup_s']:.1f} "
            f"| {r['cpu_ours_s']:.1f} | {r['cpu_others_s']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2", help="gateway cluster sizes (1,2)")
    p.add_argument("--threads", type=int, default=2, help="local baseline threads (2)")
    p.add_argument("--no-local", action="store_true", help="skip the local baseline")
    p.add_argument("--timeout", type=float, default=120, help="wait for workers, s (120)")
    p.add_argument("--workdir", type=Path, default=None, help="cache (results/work/gateway-demo)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (benchmarks/results/)")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.workers.split(",") if n.strip()]
    if not sizes or min(sizes) < 1:
        p.error("--workers: comma-separated positive integers")

    t_start = time.monotonic()
    workdir = args.workdir or RESULTS / "work" / "gateway-demo"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = prepare(workdir)
    print(
        f"bench_gateway: {ctx['region']} (prepared in {ctx['prepare_s']:.0f}s, cached in "
        f"{workdir}); {os.cpu_count()} CPUs",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    server_start = None
    with tempfile.TemporaryDirectory(prefix="bench_gateway_") as tmpdir:
        tmp = Path(tmpdir)
        if not args.no_local:
            print(f"  local runner, {args.threads} threads ...", flush=True)
            rows.append(local_row(ctx, tmp / "out-local", args.threads))
            print(f"    {rows[-1]['summary']}, wall {rows[-1]['wall_s']:.1f}s", flush=True)
        with gateway_server(tmp / "gateway") as server:
            server_start = server.startup_seconds
            print(f"  dask-gateway-server up in {server_start:.1f}s at {server.address}")
            for n in sizes:
                print(f"  gateway cluster, {n} worker(s) x 1 thread ...", flush=True)
                row = gateway_row(ctx, server, tmp / f"out-gw{n}", n, args.timeout)
                rows.append(row)
                split = ", ".join(f"{v:.1f}" for v in row["task_thread_s_per_worker"].values())
                print(
                    f"    cluster up in {row['cluster_start_s']:.1f}s + warm-up "
                    f"{row['warm_up_s']:.1f}s; {row['summary']}, wall {row['wall_s']:.1f}s; "
                    f"dask task thread-s per worker: {split}",
                    flush=True,
                )
    total = time.monotonic() - t_start

    print()
    print("\n".join(table(rows)))
    print(
        "\nwall: first task submitted -> last result; speed-up: tasks/min over gateway x 1; "
        "start-up: gateway = cluster created + workers arrived + plugin imported on them, "
        "local = execute() called -> first task submitted (LocalCluster, preflight, task db); "
        "CPU s: during execute(), this run's processes (incl. the gateway server, scheduler, "
        "workers) vs "
        f"all other processes on the {os.cpu_count()} CPUs (/proc/stat)."
        f"\ndask-gateway-server start-up {server_start:.1f}s; total {total:.0f}s."
    )

    body = {
        "params": {
            "workers": sizes,
            "worker_options": WORKER_OPTIONS,
            "local_threads": None if args.no_local else args.threads,
            "run_config": ctx["run_config"],
            "overwrite": True,
        },
        "region": ctx,
        "gateway_server_start_s": server_start,
        "rows": rows,
        "total_s": total,
    }
    out = write_results("bench_gateway", body, args.out, RESULTS)
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
