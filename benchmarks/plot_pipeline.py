"""Bar chart of ``bench_pipeline.py`` results: wall time and peak RSS of each case per run.

    python benchmarks/plot_pipeline.py benchmarks/results/r2_*.json --out benchmarks/pipeline.png

Each JSON file is one run (one tile size / scene CRS / revisit); the label says which.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["main", "run_label"]

CASE_COLOURS = {
    "a": "#9e9e9e",
    "b": "#2e7d32",
    "b'": "#81c784",
    "b+p": "#a5d6a7",
    "c": "#1565c0",
    "d": "#ef6c00",
}
CASE_NAMES = {
    "a": "a tutorial",
    "b": "b plugin",
    "b'": "b' plugin, odc-stats loader",
    "b+p": "b+p",
    "c": "c load floor",
    "d": "d ndvi-median",
}


def run_label(doc: dict) -> str:
    """``3200 px, EPSG:3577, 16 d`` style label of one run's parameters."""
    p = doc["params"]
    revisit = p.get("revisit_days", 16)
    scenes = "UTM" if p["crs"] != "EPSG:3577" else "aligned"
    obs = {32: " x0.5 obs", 8: " x2 obs"}.get(revisit, "")
    return f"{p['tile_px']} px {scenes}{obs}"


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="bench_pipeline JSON files")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--cases", default="a,b,c,d", help="cases to show (a,b,c,d)")
    args = ap.parse_args(argv)

    runs = [json.loads(p.read_text()) for p in args.results]
    runs.sort(
        key=lambda d: (
            d["params"]["crs"] != "EPSG:3577",
            d["params"]["tile_px"],
            -d["params"].get("revisit_days", 16),
        )
    )
    cases = [c for c in args.cases.split(",") if any(c in r["results"] for r in runs)]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(cases)
    for i, case in enumerate(cases):
        xs = [j + (i - (len(cases) - 1) / 2) * width for j in range(len(runs))]
        wall = [r["results"].get(case, {}).get("wall_s", 0.0) for r in runs]
        rss = [r["results"].get(case, {}).get("peak_rss_bytes", 0) / 2**20 for r in runs]
        style = {"width": width, "color": CASE_COLOURS[case], "label": CASE_NAMES[case]}
        ax_t.bar(xs, wall, **style)
        ax_m.bar(xs, rss, **style)
    labels = [run_label(r) for r in runs]
    for ax, title in (
        (ax_t, "work wall time, s (2 threads)"),
        (ax_m, "peak RSS of the process, MiB"),
    ):
        ax.set_xticks(range(len(runs)), labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    ax_t.legend(fontsize=8)
    when = max(r["utc"] for r in runs)
    fig.suptitle(
        "bench_pipeline: one tile-year of synthetic USGS C2, 2 dask threads; "
        f"each group's cases ran back to back ({when[:16]} UTC)"
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
