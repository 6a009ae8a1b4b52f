"""Fault table: the scenarios of ``tests/test_reliability.py`` run once, one row each.

Same scenario functions as the tests (imported from there), on a fresh embedded PostgreSQL
datacube and a tiny synthetic USGS C2 archive under a temporary folder:

    python benchmarks/fault_table.py            # prints: fault | expected | observed | outputs lost

"outputs lost" counts tasks without a complete output that a fault-free run would have
written, beyond the tasks the fault itself makes impossible. Exit status 1 if any row's
observation differs from the expectation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from odc_ndvi_plugin.dev.index import embedded_postgres, init_index  # noqa: E402
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive  # noqa: E402
from tests.test_reliability import (  # noqa: E402
    SEASONAL_RUN,
    cli_run,
    cog_errors,
    files_in,
    make_bench,
    scenario_delivered_twice,
    scenario_duplicate_outlived,
    scenario_no_clear_observations,
    scenario_sigterm,
    scenario_unreadable_input,
    scenario_version_change,
    stac_items,
    task_dir,
    write_run_config,
)

BAD_CONFIGS = {
    "unknown plugin_config key": ({"plugin_config": {"colour": "red"}}, "'colour'"),
    "bad good_pixel_flags value": (
        {"plugin_config": {"good_pixel_flags": {"cloud": "maybe"}}},
        "good_pixel_flags.cloud",
    ),
    "bad months": (
        {"plugin_config": {"season_mode": "year", "seasons": {"a": [13]}}},
        "seasons.a: month 13",
    ),
    "unknown statistic": ({"plugin_config": {"statistics": ["mode"]}}, "statistics: 'mode'"),
    "unknown run config key": ({"threads_per_worker": 2}, "'threads_per_worker'"),
    "unwritable output_location": (None, "is not writable"),
}


def _row(fault: str, expected: str, observed: str, lost: str, ok: bool) -> dict[str, str]:
    return {"fault": fault, "expected": expected, "observed": observed, "lost": lost, "ok": ok}


def unreadable_rows(bench, make_env) -> list[dict]:
    rows = []
    for fault in ("truncated COG", "missing file", "band absent"):
        r = scenario_unreadable_input(bench, fault, make_env=make_env)
        s = r["summary"]
        (_, error) = s.errors[0] if s.errors else ("", "")
        named = r["victim_id"] in error and all(n in error for n in r["names"])
        left = len(files_in(task_dir(r["out"], *r["bad"])))
        good_done = bool(list(task_dir(r["out"], *r["good"]).glob("*.stac-item.json")))
        ok = r["result"].exit_code == 1 and (s.done, s.failed) == (1, 1) and named and not left
        rows.append(
            _row(
                f"{fault} (1 of 2 tasks)",
                "bad task fails naming dataset+file/band; other done; exit 1; nothing left",
                f"exit {r['result'].exit_code}; done {s.done} failed {s.failed}; "
                f"named {'yes' if named else 'NO'}; files of failed task {left}",
                "0" if good_done else "1 (the good task)",
                ok and good_done,
            )
        )
    return rows


def no_clear_row(bench) -> dict:
    import numpy as np

    r = scenario_no_clear_observations(bench)
    bands = r["bands"]
    nan_ok = all(np.isnan(p).all() for k, v in bands.items() if k.startswith("ndvi") for p in v)
    zero_ok = all((p == 0).all() for k, v in bands.items() if k.startswith("clear") for p in v)
    s = r["summary"]
    items = len(stac_items(r["out"]))
    return _row(
        "MAM all cloud + DJF/JJA/SON no data",
        "written; stats NaN; clear_count 0",
        f"exit {r['result'].exit_code}; done {s.done}/2; {len(bands)} bands; "
        f"NaN {'yes' if nan_ok else 'NO'}; count 0 {'yes' if zero_ok else 'NO'}",
        str(2 - items),
        r["result"].exit_code == 0 and s.done == 2 and nan_ok and zero_ok and items == 2,
    )


def sigterm_row(bench) -> dict:
    r = scenario_sigterm(bench)
    k = len(r["finished_before"])
    partial = [f for f in r["files_before"] if f.parent not in r["finished_before"]]
    tmp = [f for f in r["files_before"] if f.name.endswith(".part") or ".staging" in f.parts]
    rerun = r["rerun"]
    ok = (
        r["rc"] == 130
        and r["stop_seconds"] < 20
        and not partial
        and not tmp
        and not r["missing_assets"]
        and (rerun.skipped, rerun.done) == (k, r["n_tasks"] - k)
    )
    when = "during a STAC item write" if r["in_stac_write"] else "(STAC write not caught)"
    return _row(
        "SIGTERM mid-run (8 tasks, 1 in flight)",
        "stops <20 s, exit!=0, no partial/staged; rerun = the rest",
        f"SIGTERM {when}: exit {r['rc']} after {r['stop_seconds']:.1f} s; "
        f"{k}/{r['n_tasks']} kept, assets missing {len(r['missing_assets'])}; "
        f"partial {len(partial)}, staged {len(tmp)}; rerun skipped {rerun.skipped} "
        f"done {rerun.done}",
        f"1 in-flight task (redone on rerun, {r['rerun_seconds']:.1f} s)",
        ok,
    )


def bad_config_rows(bench, root: Path) -> list[dict]:
    rows = []
    for n, (name, (patch, message)) in enumerate(BAD_CONFIGS.items()):
        out = root / f"bad-{n}" / "out"
        if patch is None:
            blocker = root / f"bad-{n}" / "a-file"
            blocker.parent.mkdir(parents=True, exist_ok=True)
            blocker.write_text("not a folder")
            config, out = SEASONAL_RUN, blocker / "out"
        else:
            config = write_run_config(root / f"bad-{n}" / "bad.yaml", SEASONAL_RUN, **patch)
        result, summary = cli_run(config, bench.db, out)
        left = len(files_in(out))
        named = message in result.output
        ok = result.exit_code != 0 and named and not left and summary is None
        rows.append(
            _row(
                name,
                "run fails before any task, naming the key/target",
                f"exit {result.exit_code}; named {'yes' if named else 'NO'}; "
                f"tasks started {'0' if summary is None else summary.done + summary.failed}; "
                f"files {left}",
                "0",
                ok,
            )
        )
    return rows


def version_row(bench) -> dict:
    r = scenario_version_change(bench)
    runs = r["runs"]
    trees = sorted(p.name for p in r["templated"].iterdir())
    ok = (
        (runs["v2"].skipped, runs["v2 --overwrite"].done) == (1, 1)
        and r["version_after_v2"] == "0.1.0"
        and r["version_after_overwrite"] == "0.2.0"
        and trees == ["0-1-0", "0-2-0"]
    )
    return _row(
        "outputs of v0.1.0 exist, run v0.2.0",
        "plain location: skipped (STAC item = done), --overwrite redoes; {version}: own tree",
        f"plain: skipped {runs['v2'].skipped} (item still {r['version_after_v2']}), "
        f"--overwrite done {runs['v2 --overwrite'].done} (item {r['version_after_overwrite']}); "
        f"{{version}}: trees {', '.join(trees)}",
        "0",
        ok,
    )


def twice_row(bench) -> dict:
    r = scenario_delivered_twice(bench)
    ref = {p.name: p for p in files_in(r["ref_dir"])}
    got = {p.name: p for p in files_in(r["dir"])}
    tifs = [n for n in got if n.endswith(".tif")]
    same = set(got) == set(ref) and all(got[n].read_bytes() == ref[n].read_bytes() for n in tifs)
    valid = not any(cog_errors(got[n]) for n in tifs)
    item = next((p for n, p in got.items() if n.endswith(".stac-item.json")), None)
    item_ok = item is not None and bool(json.loads(item.read_text())["assets"])
    ok = r["rcs"] == [0, 0] and same and valid and item_ok
    return _row(
        "same task twice at once (--overwrite)",
        "both exit 0; files whole, valid, identical",
        f"exits {r['rcs']}; identical to a single run {'yes' if same else 'NO'}; "
        f"valid COGs {'yes' if valid else 'NO'}; STAC item {'ok' if item_ok else 'BAD'}",
        "0" if item_ok else "1",
        ok,
    )


def outlived_rows(bench) -> list[dict]:
    rows = []
    for ending in ("sigterm", "finish"):
        r = scenario_duplicate_outlived(bench, ending)
        kept = r["after"] == r["b_files"]
        lost = sum(1 for f in r["b_files"] if f not in r["after"])
        ok = (
            r["b"].done == 1
            and r["a_running_after_b"]
            and r["rc"] == (130 if ending == "sigterm" else 0)
            and kept
            and (r["rerun"].skipped, r["rerun"].done) == (1, 0)
        )
        what = "is SIGTERMed" if ending == "sigterm" else "finishes"
        rows.append(
            _row(
                f"duplicate attempt A {what} after B finished the task",
                "B's files untouched (bytes and inodes); rerun skips",
                f"A exit {r['rc']}; B's {len(r['b_files'])} files "
                f"{'untouched' if kept else 'CHANGED'}; rerun skipped {r['rerun'].skipped}",
                str(lost),
                ok,
            )
        )
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ("fault", "expected", "observed", "lost")
    heads = ("fault", "expected", "observed", "outputs lost")
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in zip(cols, heads, strict=True)]
    line = " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    print(f"| {line} | ok |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|----|")
    for r in rows:
        cells = " | ".join(r[c].ljust(w) for c, w in zip(cols, widths, strict=True))
        print(f"| {cells} | {'✓' if r['ok'] else '✗'}  |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fault-table-") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with embedded_postgres(root / "pg", db_name="datacube", durable=False) as server:
            env = server.datacube_env("datacube")
            init_index(env)
            archive = generate_archive(ArchiveSpec.tiny(), root / "source-archive")
            bench = make_bench(root / "bench", archive, env)
            counter = itertools.count()

            def make_env():
                name = f"fresh{next(counter)}"
                server.create_database(name, exist_ok=True)
                fresh = server.datacube_env(name)
                init_index(fresh)
                return fresh

            setup = time.monotonic() - t0
            rows, times = [], {}
            for name, fn in (
                ("unreadable inputs", lambda: unreadable_rows(bench, make_env)),
                ("no clear observations", lambda: [no_clear_row(bench)]),
                ("sigterm", lambda: [sigterm_row(bench)]),
                ("bad configs", lambda: bad_config_rows(bench, root / "bad")),
                ("version change", lambda: [version_row(bench)]),
                ("delivered twice", lambda: [twice_row(bench)]),
                ("outlived by a duplicate", lambda: outlived_rows(bench)),
            ):
                t1 = time.monotonic()
                rows += fn()
                times[name] = time.monotonic() - t1
    print_table(rows)
    print(
        f"\nset-up (PostgreSQL, archive, index, save-tasks) {setup:.1f} s; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
