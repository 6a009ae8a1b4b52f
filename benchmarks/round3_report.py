"""``bench_round3.py report``: markdown tables and the cost model from the round-3 JSONs.

Reads the newest ``bench_round3_tasks-<world>-<size>_*.json`` of each series, and the newest
``bench_round3_profile``, ``bench_round3_startup``, ``bench_round3_identity`` and
``bench_gateway`` JSONs in the results folder; prints markdown (what benchmarks/README.md
quotes) and writes the cost model as ``bench_round3_cost_<time>.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from _proc import write_results

ENTRY_LABEL = {"odc-stats": "odc-stats run", "odc-ndvi": "odc-ndvi run"}
COG_LABEL = {"shipped": "zstd 1", "dea6": "deflate 6"}

#: the continent of the projection: Australia on the au-30 grid (3200 px x 30 m = 96 km
#: tiles, 9,216 km^2 each). Its 7.69 M km^2 of land fill 834 tiles; with the coastal tiles
#: that are part land we assume 1,100 tasks per year, each priced as a whole tile-year
CONTINENT = {"name": "Australia, au-30 grid", "land_km2": 7.69e6, "tile_km": 96.0, "tiles": 1100}


def _newest(results: Path, pattern: str) -> dict[str, Any] | None:
    files = sorted(results.glob(pattern), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else None


def _merged_profiles(results: Path) -> dict[str, Any] | None:
    """Every ``bench_round3_profile`` JSON's profiles, the newest of each world/size/cog."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(
        results.glob("bench_round3_profile_*.json"), key=lambda p: p.stat().st_mtime
    ):
        for size, cases in json.loads(path.read_text())["profiles"].items():
            merged.setdefault(size, {}).update(cases)
    return {"profiles": merged} if merged else None


def _series(results: Path) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(
        results.glob("bench_round3_tasks-*_*.json"), key=lambda p: p.stat().st_mtime
    ):
        doc = json.loads(path.read_text())
        out[(doc["world"], doc["size"])] = doc
    return out


def _f(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _cells(summary: dict[str, Any], entries: list[str], cogs: list[str], kind: str) -> list[str]:
    cells = []
    for entry in entries:
        for cog in cogs:
            s = summary.get(f"{entry}/{cog}/{kind}")
            if s is None:
                cells.append("-")
            elif kind == "warm":
                cells.append(f"{_f(s['task_s'])} ({_r(s.get('task_vs_tutorial'))})")
            else:
                cells.append(f"{_f(s['process_wall_s'])} ({_r(s.get('process_vs_tutorial'))})")
    return cells


def tasks_tables(series: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    entries, cogs = ["odc-stats", "odc-ndvi"], ["shipped", "dea6"]
    head = [f"{ENTRY_LABEL[e]}, {COG_LABEL[c]}" for e in entries for c in cogs]
    lines = [
        "**Per task, warm** (the second task of a two-task process; tutorial: the second tile "
        "of a warm session): median seconds (ratio to the tutorial)",
        "",
        "| world | tile | tutorial | decode floor | " + " | ".join(head) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(head),
    ]
    for (world, size), doc in sorted(series.items()):
        s = doc["summary"]
        tut, floor = s.get("tutorial/warm"), s.get("floor/warm")
        lines.append(
            f"| {world} | {size} | {_f(tut and tut['task_s'])} | "
            f"{_f(floor and floor['task_s'])} ({_r(floor and tut and floor['task_s'] / tut['task_s'])}) | "
            + " | ".join(_cells(s, entries, cogs, "warm"))
            + " |"
        )
    lines += [
        "",
        "**Whole process, cold** (one task, process start to exit): median seconds (ratio to "
        "the tutorial's one-tile process)",
        "",
        "| world | tile | tutorial | " + " | ".join(head) + " |",
        "|---|---:|---:|" + "---:|" * len(head),
    ]
    for (world, size), doc in sorted(series.items()):
        s = doc["summary"]
        tut = s.get("tutorial/cold")
        lines.append(
            f"| {world} | {size} | {_f(tut and tut['process_wall_s'])} | "
            + " | ".join(_cells(s, entries, cogs, "cold"))
            + " |"
        )
    lines += [
        "",
        "**Peak RSS (VmHWM) of the cold one-task process**, MiB (ratio to the tutorial's), and "
        "task / decode floor (warm)",
        "",
        "| world | tile | tutorial | " + " | ".join(head) + " | task / floor (" + head[2] + ") |",
        "|---|---:|---:|" + "---:|" * (len(head) + 1),
    ]
    for (world, size), doc in sorted(series.items()):
        s = doc["summary"]
        tut = s.get("tutorial/cold")
        cells = []
        for e in entries:
            for c in cogs:
                x = s.get(f"{e}/{c}/cold")
                cells.append(
                    "-"
                    if x is None
                    else f"{x['peak_rss_bytes'] / 2**20:,.0f} ({_r(x.get('peak_rss_vs_tutorial'))})"
                )
        nd = s.get("odc-ndvi/shipped/warm", {})
        lines.append(
            f"| {world} | {size} | {_f(tut and tut['peak_rss_bytes'] / 2**20, 0)} | "
            + " | ".join(cells)
            + f" | {_r(nd.get('task_vs_floor'))} |"
        )
    lines += ["", "Loads and repeats:", ""]
    for (world, size), doc in sorted(series.items()):
        lg_plugin = sum(
            v.get("large_graph_runs", 0)
            for k, v in doc["summary"].items()
            if k.split("/")[0] in ENTRY_LABEL
        )
        lg_tutorial = sum(
            v.get("large_graph_runs", 0)
            for k, v in doc["summary"].items()
            if k.split("/")[0] not in ENTRY_LABEL
        )
        lmax = max(v.get("load_1min_max", 0) for v in doc["summary"].values())
        lines.append(
            f"- {world} {size}: {doc['repeats']} repeats, load average before "
            f"{doc['load_before'][0]:.2f}, highest 1-min load before a run {lmax:.2f}; runs "
            f"with dask's 'large graph' warning: odc-stats run / odc-ndvi run {lg_plugin}, "
            f"tutorial and floor {lg_tutorial}"
        )
    return lines


def profile_tables(profile: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for worlds in profile["profiles"].values():
        for key, p in worlds.items():
            run, prof = p["runner"], p["cprofile"]
            total = sum(v["thread_s"] for v in run["stages"].values()) or 1.0
            lines += [
                "",
                f"**{key}**: warm task {run['task_s']:.1f} s wall, {run['task_cpu_s']:.1f} s CPU "
                f"(2 threads), {run['rchar_bytes'] / 2**20:,.0f} MiB read; task stream "
                f"{total:.1f} thread-s:",
                "",
                "| task prefix | tasks | thread s | share |",
                "|---|---:|---:|---:|",
            ]
            for name, st in list(run["stages"].items())[:9]:
                lines.append(
                    f"| {name} | {st['tasks']:.0f} | {st['thread_s']:.1f} | "
                    f"{st['thread_s'] / total:.0%} |"
                )
            lines += [
                "",
                f"cProfile, sync scheduler, one thread: {prof['wall_s']:.1f} s",
                "",
                "| stage | calls | cum s | share |",
                "|---|---:|---:|---:|",
            ]
            for stage, st in prof["stages"].items():
                lines.append(
                    f"| {stage.strip()} | {st['calls']:.0f} | {st['cum_s']:.1f} | "
                    f"{st['cum_s'] / prof['wall_s']:.0%} |"
                )
    return lines


def memory_tables(
    profile: dict[str, Any], series: dict[tuple[str, int], dict[str, Any]]
) -> list[str]:
    lines: list[str] = []
    for worlds in profile["profiles"].values():
        for key, p in worlds.items():
            run = p["runner"]
            pk = run["peak"]
            lines += [
                "",
                f"**{key}** (in-process runner, 2 threads; RSS sampled every 20 ms):",
                "",
                "| when | RSS MiB | dask-managed MiB | what |",
                "|---|---:|---:|---|",
                f"| after imports + LocalCluster, before any task | "
                f"{run['rss_idle_bytes'] / 2**20:,.0f} | 0 | interpreter, datacube, odc-stats, "
                "distributed, GDAL |",
                f"| after the first task | {run['rss_after_first_task_bytes'] / 2**20:,.0f} | - | "
                "+ allocator retention, GDAL block cache |",
            ]
            for phase, ph in run["phases"].items():
                lines.append(
                    f"| {phase} ({ph['start_s']:.1f}-{ph['stop_s']:.1f} s) highest | "
                    f"{ph['max_rss_bytes'] / 2**20:,.0f} | {ph['managed_at_max_bytes'] / 2**20:,.0f} | |"
                )
            by = ", ".join(
                f"{k} {v / 2**20:,.0f}"
                for k, v in sorted(pk["managed_by_prefix"].items(), key=lambda kv: -kv[1])
            )
            lines.append(
                f"| peak at {pk['t_s']:.1f} s | {pk['rss_bytes'] / 2**20:,.0f} | "
                f"{pk['managed_bytes'] / 2**20:,.0f} | running: {pk['running']}; held: {by} |"
            )
    return lines


def startup_tables(st: dict[str, Any]) -> list[str]:
    lines = [
        "| imports | import time s (median, -X importtime) | process wall s (median) |",
        "|---|---:|---:|",
    ]
    for name, c in st["cases"].items():
        lines.append(f"| {name} | {c['import_s_median']:.2f} | {c['process_wall_s_median']:.2f} |")
    lines += [
        "",
        "| what odc-stats does with our plugin after its imports | median s |",
        "|---|---:|",
    ]
    for name, c in st["plugin"].items():
        lines.append(
            f"| {name}: resolve {statistics_median(c['resolve_s']):.3f} + construct "
            f"{statistics_median(c['construct_s']):.3f} | {c['total_s_median']:.3f} |"
        )
    top = st["cases"].get("odc-stats", {}).get("top", [])[:10]
    lines += [
        "",
        "odc-stats' import, largest modules (cumulative s): "
        + ", ".join(f"{m} {s:.2f}" for m, s in top),
    ]
    lines.append(
        "Imported when odc-stats resolves our plugin: "
        + ", ".join(f"{m} {s:.3f}" for m, s in st.get("plugin_imports", [])[:8])
    )
    return lines


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def identity_lines(ident: dict[str, Any]) -> list[str]:
    lines = [
        "| world / tile / cog_opts | odc-stats run vs round 2 | odc-ndvi run vs round 2 | large graph: round 2 / odc-stats / odc-ndvi |",
        "|---|---|---|---|",
    ]
    for key, o in ident.items():
        if not isinstance(o, dict) or "odc-stats vs round2" not in o:
            continue  # the JSON's own fields (benchmark, utc, machine)
        a, b = o["odc-stats vs round2"], o["odc-ndvi vs round2"]
        lg = o["large_graph"]
        lines.append(
            f"| {key} | {a['identical']}/{a['files']} identical | {b['identical']}/{b['files']} identical "
            f"| {'yes' if lg['round2'] else 'no'} / {'yes' if lg['odc-stats'] else 'no'} / "
            f"{'yes' if lg['odc-ndvi'] else 'no'} |"
        )
    return lines


def cost_model(
    series: dict[tuple[str, int], dict[str, Any]],
    profile: dict[str, Any] | None,
    gateway: dict[str, Any] | None,
    ctx: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Per tile-year: CPU-s (the warm task's CPU, odc-ndvi run), peak GB (cold process),
    bytes read; per-task fixed cost (2048 vs 3200 px CPU: a + b * pixels); per-process
    fixed cost (cold process wall - its task); projection for CONTINENT on N workers."""
    model: dict[str, Any] = {"continent": CONTINENT, "worlds": {}}
    for world in ("aligned", "utm"):
        big, small = series.get((world, 3200)), series.get((world, 2048))
        if big is None:
            continue
        w: dict[str, Any] = {}
        for cog in ("shipped", "dea6"):
            b = big["summary"].get(f"odc-ndvi/{cog}/warm")
            bc = big["summary"].get(f"odc-ndvi/{cog}/cold")
            if b is None or bc is None:
                continue
            m: dict[str, Any] = {
                "task_wall_s_2threads": b["task_s"],
                "task_cpu_s": b.get("warm_task_cpu_s"),
                "peak_gb": bc["peak_rss_bytes"] / 1e9,
                "process_fixed_s": bc["process_wall_s"] - bc["task_s"],
            }
            if small is not None and b.get("warm_task_cpu_s") is not None:
                s = small["summary"].get(f"odc-ndvi/{cog}/warm")
                if s is not None and s.get("warm_task_cpu_s") is not None:
                    p1, p2 = 2048**2, 3200**2
                    c1, c2 = s["warm_task_cpu_s"], b["warm_task_cpu_s"]
                    per_px = (c2 - c1) / (p2 - p1)
                    m["cpu_per_mpx_s"] = per_px * 1e6
                    m["task_fixed_cpu_s"] = c2 - per_px * p2
            if profile is not None:
                pr = profile["profiles"].get("3200", {}).get(f"{world}/3200/{cog}")
                if pr is not None:
                    m["bytes_read"] = pr["runner"]["rchar_bytes"]
                    m["profile_task_cpu_s"] = pr["runner"]["task_cpu_s"]
            cpu = m.get("task_cpu_s") or m.get("profile_task_cpu_s")
            if cpu:
                tiles = CONTINENT["tiles"]
                m["continent_worker_hours"] = tiles * cpu / 3600
                m["continent_wall_h"] = {
                    n: math.ceil(tiles / n) * cpu / 3600 for n in (1, 10, 50, 100, 200)
                }
                m["continent_read_tb"] = tiles * m.get("bytes_read", 0) / 1e12
            w[cog] = m
        model["worlds"][world] = w
    if gateway is not None:
        rows = {(r["runner"], r["workers"]): r for r in gateway["rows"]}
        model["gateway"] = {
            f"{k[0]} x{k[1]}": {
                "tasks": r["tasks"],
                "wall_s": r["wall_s"],
                "tasks_per_min": r["tasks_per_min"],
                "task_thread_s_per_worker": r.get("task_thread_s_per_worker"),
            }
            for k, r in rows.items()
        }
    return model


#: the demo region bench_gateway runs: 4 tasks of 512 x 512 px, 46 scenes each
GATEWAY_DEMO = {"px": 512 * 512, "scenes": 46}


def cost_tables(model: dict[str, Any], ctx: dict[str, dict[str, Any]]) -> list[str]:
    """The cost model as markdown: per tile-year figures, the continent on N workers, and
    the per-worker check against bench_gateway (1 thread per worker)."""
    cont = model["continent"]
    lines = [
        f"Assumed: {cont['name']}, {cont['tiles']:,} tile-years of {cont['tile_km']:.0f} km "
        "(3200 px), each like the measured world (Landsat 8 + 9, 8-day revisit, two paths: "
        "92 scenes). A worker = 2 threads on 2 cores, as measured; worker-hours = tiles x the "
        "warm task's wall (a runner process does many tasks, so its start-up is paid once "
        "per worker, not per tile); wall on N workers = ceil(tiles / N) task walls.",
        "",
        "| world | cog_opts | task wall s (2 threads) | task CPU s | CPU s per Mpx | "
        "per-task fixed CPU s | per-process fixed s | peak GB | read GB | worker-hours "
        "| wall h on 10 / 50 / 200 workers | read TB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for world, w in model["worlds"].items():
        for cog, m in w.items():
            wall = m["task_wall_s_2threads"]
            hours = {n: math.ceil(cont["tiles"] / n) * wall / 3600 for n in (10, 50, 200)}
            fixed = m.get("task_fixed_cpu_s")
            lines.append(
                f"| {world} | {COG_LABEL[cog]} | {wall:.1f} | {_f(m.get('task_cpu_s'))} | "
                f"{_f(m.get('cpu_per_mpx_s'), 2)} | "
                f"{'~0' if fixed is not None and fixed < 0.5 else _f(fixed)} | "
                f"{m['process_fixed_s']:.1f} | {m['peak_gb']:.2f} | "
                f"{_f(m.get('bytes_read') and m['bytes_read'] / 1e9)} | "
                f"{cont['tiles'] * wall / 3600:.1f} | "
                + " / ".join(f"{h:.2f}" for h in hours.values())
                + f" | {_f(m.get('bytes_read') and cont['tiles'] * m['bytes_read'] / 1e12, 2)} |"
            )
    gw = model.get("gateway")
    aligned = model["worlds"].get("aligned", {}).get("shipped")
    if gw and aligned and aligned.get("cpu_per_mpx_s"):
        # one demo task on one 1-thread worker: its pixels x scenes at the measured CPU
        # per Mpx of a 92-scene tile-year, plus the measured per-task fixed CPU (>= 0)
        per_task = aligned["cpu_per_mpx_s"] * GATEWAY_DEMO["px"] / 1e6 * GATEWAY_DEMO[
            "scenes"
        ] / 92 + max(aligned.get("task_fixed_cpu_s") or 0.0, 0.0)
        lines += [
            "",
            "Per-worker check against `bench_gateway.py` (demo region: 4 tasks of 512 px, 46 "
            f"scenes; 1-thread workers): the model predicts {per_task:.2f} s of task CPU per "
            f"task, {60 / per_task:.1f} tasks/min per worker.",
            "",
            "| row | tasks | wall s | tasks/min | task thread-s per worker |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in gw.items():
            per = r.get("task_thread_s_per_worker")
            busy = ", ".join(f"{v:.1f}" for v in per.values()) if isinstance(per, dict) else _f(per)
            lines.append(
                f"| {name} | {r['tasks']} | {r['wall_s']:.1f} | {r['tasks_per_min']:.1f} | {busy} |"
            )
    return lines


def report(results: Path) -> None:
    series = _series(results)
    profile = _merged_profiles(results)
    startup = _newest(results, "bench_round3_startup_*.json")
    ident = _newest(results, "bench_round3_identity_*.json")
    gateway = _newest(results, "bench_gateway_*.json")
    ctx = {}
    for world in ("aligned", "utm"):
        path = results / "work" / f"r3-{world}" / "ctx.json"
        if path.exists():
            ctx[world] = json.loads(path.read_text())
    out: list[str] = []
    for world, c in ctx.items():
        cl = c["clear"]
        out.append(
            f"- {world} ({c['crs']}): {c['scenes']} scenes on {c['solar_days']} solar days "
            f"({c['first_day']}..{c['last_day']}), {c['archive_bytes'] / 2**30:.1f} GiB; "
            f"clear {cl['clear_of_valid']:.1%} of valid observations (tutorial flags), "
            f"mean eo:cloud_cover {cl['mean_eo_cloud_cover_pct']:.1f} %"
        )
    if series:
        out += ["", *tasks_tables(series)]
    if profile:
        out += ["", "## profile", *profile_tables(profile)]
        out += ["", "## memory", *memory_tables(profile, series)]
    if startup:
        out += ["", "## start-up", "", *startup_tables(startup)]
    if ident:
        out += ["", "## identity", "", *identity_lines(ident)]
    model = cost_model(series, profile, gateway, ctx)
    out += ["", "## cost model", "", *cost_tables(model, ctx)]
    print("\n".join(out))
    print(f"\nJSON: {write_results('bench_round3_cost', model, None, results)}")
