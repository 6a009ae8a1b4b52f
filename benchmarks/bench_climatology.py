"""Climatology memory and time against the number of years (issue 19).

One climatology task is ``NDVISeasonal(season_mode="climatology").reduce(xx).compute()``
on one tile: ``ndvi (spec, y, x)`` float32 with a ``time`` coordinate, 1993-12 onwards,
``--per-year`` observations a year (23: one Landsat at its 16-day revisit), NaN clouds.
The input is *lazy*: each observation is generated when the graph reads it (one
``(1, px, px)`` chunk per solar day, as the loader delivers them), so the process never
holds the stack and the peak RSS is what the reduction keeps. Cases, each in its own
fresh interpreter (peak RSS = the child's ``VmHWM`` read from /proc, wall and CPU of the
compute from the child):

* ``year``: the baseline in the same run, a year-mode task (12 months, mean + count,
  four seasons) on the same tile: what a season-year costs today;
* ``clim-<Y>``: climatology over Y years with the default bands (mean, std, years,
  count per season; streamed per block: the state is a fixed number of planes);
* ``median-<Y>`` / ``minmax-<Y>``: the same with ``statistics: [median]`` /
  ``[min, max]`` of the block means (median keeps every block's mean plane: Y float32
  planes per season; min/max two running planes per season).

Every climatology is checked for what it must have (``clear_years`` at most Y, the std
finite exactly where at least 2 years counted) before the table is printed.
JSON goes to ``benchmarks/results/`` (gitignored).

    nice -n 10 python benchmarks/bench_climatology.py                 # 5, 10, 20 years, 1024 px
    nice -n 10 python benchmarks/bench_climatology.py --years 5,20 --px 512 --cases clim
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _proc import mib, run_measured, write_results  # noqa: E402 - benchmarks/ is the script dir

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SEASONS = ("djf", "mam", "jja", "son")
#: case kind -> plugin_config statistics (climatology adds mean, std, years, count itself)
KINDS = {
    "year": ["mean", "count"],
    "clim": ["mean", "count"],
    "median": ["mean", "count", "median"],
    "minmax": ["mean", "count", "min", "max"],
}


def _dates(years: int, per_year: int) -> np.ndarray:
    """``per_year`` dates a year, evenly spread, from 1993-12-01 over ``years`` blocks of
    12 months (block k = [1993-12 + 12 k, 1993-12 + 12 k + 12) months)."""
    out = []
    for k in range(years):
        start = np.datetime64(f"{1993 + k}-12-01")
        days = (np.datetime64(f"{1994 + k}-12-01") - start).astype(int)
        step = days / per_year
        offsets = np.floor(np.arange(per_year) * step + step / 2).astype("timedelta64[D]")
        out.append(start + offsets)
    return np.concatenate(out).astype("datetime64[ns]")


def _plane(block: np.ndarray, block_info=None, *, seed: int, cloud: float) -> np.ndarray:
    """One observation, generated when read (seeded by its index: reruns are identical)."""
    (t0, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    rng = np.random.default_rng([seed, t0, y0, x0])
    shape = (1, y1 - y0, x1 - x0)
    plane = rng.uniform(-0.2, 0.9, size=shape).astype(np.float32)
    plane[rng.random(shape, dtype=np.float32) < cloud] = np.nan
    return plane


def _build(times: np.ndarray, px: int, cloud: float, seed: int):
    import dask.array as da
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    gbox = GeoBox.from_bbox(
        (1_500_000, -3_900_000 - 30 * px, 1_500_000 + 30 * px, -3_900_000),
        "epsg:3577",
        resolution=30,
    )
    seedling = da.zeros((len(times), px, px), chunks=(1, px, px), dtype=np.float32)
    data = da.map_blocks(_plane, seedling, seed=seed, cloud=cloud, dtype=np.float32)
    ndvi = xr.DataArray(
        data, dims=("spec", "y", "x"), coords={"time": ("spec", times), **xr_coords(gbox)}
    )
    return xr.Dataset({"ndvi": ndvi})


def _run_case(args: argparse.Namespace) -> None:
    """Child: build the lazy input, compute the task once, check and report it."""
    import dask

    from odc_ndvi_plugin import NDVISeasonal

    kind, years = args.case.split("-")
    years = int(years)
    mode = "year" if kind == "year" else "climatology"
    times = _dates(years, args.per_year)
    xx = _build(times, args.px, args.cloud, args.seed)
    plugin = NDVISeasonal(
        season_mode=mode,
        statistics=KINDS[kind],
        chunks={"y": args.chunk, "x": args.chunk},
    )
    lazy = plugin.reduce(xx)
    rss0 = _status("VmRSS")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        out = lazy.compute()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if mode == "climatology":
        for s in SEASONS:
            n = out[f"clear_years_{s}"].values
            assert n.max() <= years, (s, np.unique(n))
            np.testing.assert_array_equal(np.isfinite(out[f"ndvi_std_{s}"].values), n >= 2)
    report = {
        "state_model_bytes": _state_model(plugin, years, args.px),
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_compute_bytes": rss0,
        "peak_rss_bytes": _status("VmHWM"),
        "observations": len(times),
        "bands": list(out.data_vars),
    }
    Path(args.report).write_text(json.dumps(report))


def _state_model(plugin, years: int, px: int) -> int:
    """Bytes the reduction's running state holds for the whole tile (every block's state
    alive at once, the worst case), from the kernels' own ``nbytes``: a season-year's
    accumulators (year mode) or a season's climate state with its median planes."""
    from odc_ndvi_plugin.reduce import GroupAccumulator, SeasonClimate

    cfg = plugin.config
    shape = (px, px)
    if cfg.seasons.mode == "climatology":
        state = SeasonClimate.empty(shape, cfg.band_statistics, cfg.min_clear)
        per_season = state.nbytes + (years * px * px * 4 if state.means is not None else 0)
    else:
        per_season = GroupAccumulator.empty(shape, cfg.statistics).nbytes
    return per_season * len(cfg.seasons.groups)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _spawn(case: str, args: argparse.Namespace, tmp: Path) -> dict:
    report = tmp / f"{case}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--report", str(report)]
    for key in ("per_year", "px", "chunk", "cloud", "seed", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    measured = run_measured(cmd)
    if measured["returncode"] != 0:
        raise SystemExit(f"case {case} failed with exit code {measured['returncode']}")
    return {**json.loads(report.read_text()), **measured}


def _uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--years", default="5,10,20", help="climatology lengths, default 5,10,20")
    p.add_argument(
        "--cases", default="clim,median,minmax", help="of clim, median, minmax (default all)"
    )
    p.add_argument("--per-year", type=int, default=23, help="observations a year, default 23")
    p.add_argument("--px", type=int, default=1024, help="tile is PX x PX pixels, default 1024")
    p.add_argument("--chunk", type=int, default=512, help="plugin_config.chunks, default 512")
    p.add_argument("--cloud", type=float, default=0.4, help="NaN (cloud) fraction, default 0.4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="dask threads, default 2")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        _run_case(args)
        return 0

    years = [int(y) for y in args.years.split(",")]
    kinds = [k for k in args.cases.split(",") if k]
    unknown = set(kinds) - set(KINDS) - {"year"}
    if unknown:
        raise SystemExit(f"--cases: unknown {sorted(unknown)}; allowed: clim, median, minmax")
    cases = ["year-1"] + [f"{k}-{y}" for k in kinds for y in years]
    plane_mib = args.px * args.px * 4 / 2**20
    print(
        f"bench_climatology: {args.px} x {args.px} px tile, chunks {args.chunk}, "
        f"{args.per_year} observations a year, cloud {args.cloud:.0%}, {args.threads} dask "
        f"threads; one float32 plane = {plane_mib:.0f} MiB; {_uptime()}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_clim_") as tmpdir:
        for i, case in enumerate(cases, 1):
            print(f"  [{i}/{len(cases)}] {case} ...", flush=True)
            results[case] = _spawn(case, args, Path(tmpdir))
    end_load = _uptime()

    base = results["year-1"]
    header = (
        "| case | years | observations | stack if held MiB | wall s | CPU s | peak RSS MiB "
        "| peak / year-mode | state model MiB |"
    )
    lines = [header, "|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|"]
    for case in cases:
        r = results[case]
        kind, y = case.split("-")
        held = r["observations"] * plane_mib
        lines.append(
            f"| {kind} | {y} | {r['observations']} | {held:,.0f} | {r['wall_s']:.1f} "
            f"| {r['cpu_s']:.1f} | {mib(r['peak_rss_bytes'])} "
            f"| {r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f} "
            f"| {mib(r['state_model_bytes'])} |"
        )
    print("\n" + "\n".join(lines))
    for kind in kinds:
        rss = [results[f"{kind}-{y}"]["peak_rss_bytes"] for y in years]
        if len(years) > 1:
            slope = (rss[-1] - rss[0]) / (years[-1] - years[0])
            print(
                f"{kind}: peak RSS grows {slope / 2**20:,.1f} MiB a year ({years[0]}..{years[-1]})"
            )
    print(f"machine at the end: {end_load}")
    body = {
        "params": {
            k: getattr(args, k)
            for k in ("years", "cases", "per_year", "px", "chunk", "cloud", "seed", "threads")
        },
        "load_at_end": end_load,
        "results": results,
        "table": lines,
    }
    out = write_results("bench_climatology", body, args.out, RESULTS)
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
