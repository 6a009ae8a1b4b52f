"""Reduce-only benchmark: ``NDVISeasonal(season_mode="year").reduce`` vs the tutorial's xarray.

Both cases reduce the same in-memory, dask-backed NDVI block ``ndvi (spec, y, x)``
(float32, NaN = cloud, a ``time`` coordinate on ``spec``; the layout of
``tests/test_plugin.py::_ndvi_stack``) with the same local threaded dask scheduler:

* ``plugin``:   ``NDVISeasonal(season_mode="year").reduce(xx).compute()`` (mean + clear
  count for DJF/MAM/JJA/SON, the plugin's defaults);
* ``tutorial``: the tutorial's raw xarray lines on the same float data:
  ``cloud_free = stack.where(mask)``; NDVI; ``cloud_free.groupby("time.season").mean("time")``.
  ``mask`` is a lazy boolean "clear" array (``isfinite``), standing in for ``make_mask``.
  By default the block already *is* NDVI, so the NDVI step is the identity; with
  ``--tutorial-ndvi`` the tutorial also computes ``(nir - red) / (nir + red)`` from lazy
  red/nir bands derived from the block (extra arithmetic the plugin does at load time).

Each case computes ``--repeat`` times (default 3) from the same lazy graph; the fastest
wall time (and its CPU time) is reported, all times go to the JSON. Every case runs in its
own fresh interpreter (``python bench_reduce.py --case ...``); the
parent reads that child's own peak RSS and CPU time with ``os.wait4``. The child builds
the input (same seed -> same data), then times only the compute; its peak RSS therefore
includes the input block, which is reported separately as ``input_rss``.

Both results are checked to agree (``np.testing.assert_allclose``) before the table is
printed. JSON goes to ``benchmarks/results/`` (gitignored).

    python benchmarks/bench_reduce.py                      # 40 x 2048 x 2048, 2 threads
    python benchmarks/bench_reduce.py --obs 20 --px 512    # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _proc import mib, run_case_process, write_results  # noqa: E402 - benchmarks/ is on sys.path as the script dir

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CASES = ("plugin", "tutorial")
SEASONS = ("djf", "mam", "jja", "son")


def _dates(n: int) -> np.ndarray:
    """``n`` acquisition dates spread over one Dec..Nov year (the year-mode task window)."""
    start = np.datetime64("2022-12-01")
    step = 365 / n
    days = np.floor(np.arange(n) * step + step / 2).astype("timedelta64[D]")
    return (start + days).astype("datetime64[ns]")


def _build(obs: int, px: int, chunk: int, cloud: float, seed: int):
    """The input block, built slice by slice (no float64 full-size temporaries)."""
    import dask.array as da
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    gbox = GeoBox.from_bbox(
        (1_500_000, -3_900_000 - 30 * px, 1_500_000 + 30 * px, -3_900_000),
        "epsg:3577",
        resolution=30,
    )
    rng = np.random.default_rng(seed)
    values = np.empty((obs, px, px), dtype=np.float32)
    for i in range(obs):
        plane = rng.uniform(-0.2, 0.9, size=(px, px)).astype(np.float32)
        plane[rng.random((px, px)) < cloud] = np.nan
        values[i] = plane
    data = da.from_array(values, chunks=(1, chunk, chunk))
    ndvi = xr.DataArray(
        data, dims=("spec", "y", "x"), coords={"time": ("spec", _dates(obs)), **xr_coords(gbox)}
    )
    return xr.Dataset({"ndvi": ndvi})


def _status_bytes(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak RSS of this process image) from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0; best effort)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_now() -> int:
    return _status_bytes("VmRSS")


def _run_case(args: argparse.Namespace) -> None:
    """Child process: build the input, time one case, save its means and timings."""
    import dask

    xx = _build(args.obs, args.px, args.chunk, args.cloud, args.seed)
    _reset_peak_rss()  # building the input (dask tokenises the array) peaks above its size
    input_rss = _rss_now()
    if args.case == "plugin":
        from odc_ndvi_plugin import NDVISeasonal

        plugin = NDVISeasonal(season_mode="year")
        out = plugin.reduce(xx)
    else:
        import xarray as xr

        ndvi = xx["ndvi"].swap_dims({"spec": "time"})
        mask = ndvi.notnull()  # the clear mask (lazy, boolean), like make_mask's output
        if args.tutorial_ndvi:
            red = (1 - ndvi) / 2  # float32 "bands" with (nir - red) / (nir + red) == ndvi
            nir = (1 + ndvi) / 2
            cloud_free = xr.Dataset({"red": red, "nir": nir}).where(mask)
            ndvi_cf = (cloud_free.nir - cloud_free.red) / (cloud_free.nir + cloud_free.red)
        else:
            cloud_free = ndvi.where(mask)
            ndvi_cf = cloud_free  # the block already is NDVI
        out = ndvi_cf.groupby("time.season").mean("time")

    walls, cpus = [], []
    lazy = out
    for _ in range(max(1, args.repeat)):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        with dask.config.set(scheduler="threads", num_workers=args.threads):
            out = lazy.compute()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    best = min(range(len(walls)), key=walls.__getitem__)
    wall, cpu = walls[best], cpus[best]

    if args.case == "plugin":
        means = {s: out[f"ndvi_mean_{s}"].values for s in SEASONS}
        dtypes = sorted({str(v.dtype) for v in out.data_vars.values()})
    else:
        means = {s: out.sel(season=s.upper()).values for s in SEASONS}
        dtypes = [str(out.dtype)]
    np.savez(args.save, **means)
    report = {
        "wall_s": wall,
        "cpu_s": cpu,
        "all_wall_s": walls,
        "all_cpu_s": cpus,
        "input_rss_bytes": input_rss,
        # VmHWM, not ru_maxrss: after fork + exec ru_maxrss still counts the parent's RSS
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "output_dtypes": dtypes,
    }
    Path(args.report).write_text(json.dumps(report))


def _spawn(case: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Run one case in a fresh interpreter; its rusage comes from ``os.wait4``."""
    save, report = tmp / f"{case}.npz", tmp / f"{case}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--case",
        case,
        "--save",
        str(save),
        "--report",
        str(report),
        "--obs",
        str(args.obs),
        "--px",
        str(args.px),
        "--chunk",
        str(args.chunk),
        "--cloud",
        str(args.cloud),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--repeat",
        str(args.repeat),
    ]
    if args.tutorial_ndvi:
        cmd.append("--tutorial-ndvi")
    return run_case_process(case, cmd, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--obs", type=int, default=40, help="observations (spec length), default 40")
    p.add_argument("--px", type=int, default=2048, help="block is PX x PX pixels, default 2048")
    p.add_argument("--chunk", type=int, default=1024, help="input chunks (1, C, C), default 1024")
    p.add_argument("--cloud", type=float, default=0.3, help="NaN (cloud) fraction, default 0.3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="dask threads, default 2")
    p.add_argument(
        "--repeat", type=int, default=3, help="computes per case; the fastest is reported (3)"
    )
    p.add_argument(
        "--tutorial-ndvi",
        action="store_true",
        help="tutorial case also computes NDVI from (lazy) red/nir bands",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    # child-process arguments
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.case:
        _run_case(args)
        return 0

    shape = f"{args.obs} x {args.px} x {args.px}"
    print(
        f"bench_reduce: ndvi (spec, y, x) float32 {shape} "
        f"({args.obs * args.px * args.px * 4 / 2**20:,.0f} MiB), chunks (1, {args.chunk}, "
        f"{args.chunk}), cloud {args.cloud:.0%}, dask threaded scheduler, {args.threads} threads, "
        f"best of {args.repeat} computes"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_reduce_") as tmpdir:
        tmp = Path(tmpdir)
        for case in CASES:
            print(f"  running {case} ...", flush=True)
            results[case] = _spawn(case, args, tmp)
        a, b = np.load(tmp / "plugin.npz"), np.load(tmp / "tutorial.npz")
        max_diff = 0.0
        for s in SEASONS:
            np.testing.assert_allclose(a[s], b[s], rtol=1e-5, atol=1e-6, equal_nan=True)
            np.testing.assert_array_equal(np.isnan(a[s]), np.isnan(b[s]))
            both = ~np.isnan(a[s])
            if both.any():
                diff = np.abs(a[s][both].astype(np.float64) - b[s][both].astype(np.float64))
                max_diff = max(max_diff, float(diff.max()))
    print(f"  means agree (allclose rtol=1e-5, atol=1e-6; max |diff| {max_diff:.2e})\n")

    header = (
        "| case     | wall s | CPU s | peak RSS MiB | RSS with input MiB | peak - input MiB "
        "| out dtypes     |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for case in CASES:
        r = results[case]
        print(
            f"| {case:<8} | {r['wall_s']:6.2f} | {r['cpu_s']:5.2f} | {mib(r['peak_rss_bytes']):>12} "
            f"| {mib(r['input_rss_bytes']):>18} "
            f"| {mib(r['peak_rss_bytes'] - r['input_rss_bytes']):>16} "
            f"| {','.join(r['output_dtypes']):<14} |"
        )
    pl, tu = results["plugin"], results["tutorial"]
    ratios = {
        "wall": pl["wall_s"] / tu["wall_s"],
        "cpu": pl["cpu_s"] / tu["cpu_s"],
        "peak_rss": pl["peak_rss_bytes"] / tu["peak_rss_bytes"],
        "peak_minus_input": (pl["peak_rss_bytes"] - pl["input_rss_bytes"])
        / max(1, tu["peak_rss_bytes"] - tu["input_rss_bytes"]),
    }
    print(
        f"\nplugin / tutorial: wall {ratios['wall']:.2f}x, CPU {ratios['cpu']:.2f}x, "
        f"peak RSS {ratios['peak_rss']:.2f}x (above input: {ratios['peak_minus_input']:.2f}x)"
    )

    body = {
        "params": {
            k: getattr(args, k)
            for k in ("obs", "px", "chunk", "cloud", "seed", "threads", "repeat", "tutorial_ndvi")
        },
        "max_abs_diff": max_diff,
        "results": results,
        "ratios_plugin_over_tutorial": ratios,
    }
    out = write_results("bench_reduce", body, args.out, RESULTS)
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
