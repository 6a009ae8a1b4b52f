"""Climatology once, anomaly for a season, and the anomaly's mosaic: the two-step flow on
a synthetic multi-year region, through the same tools as production.

    python examples/anomaly_mosaic.py [WORKDIR]        # default /tmp/odc-ndvi-anomaly

1. a synthetic USGS C2 region of 2 x 2 odc-stats tiles of 256 px, Landsat every 16 days
   from December 2012 to February 2021, with a drought in DJF 2020/21 over a rectangle
   that straddles all four tiles (surface NDVI lowered by 0.25);
2. indexed in an embedded datacube (PostgreSQL under WORKDIR);
3. the climatology: ``odc-stats save-tasks --frequency all --temporal-range 2012-12--P8Y``
   with the shipped climatology config, run by our runner (4 tasks, 8 years each);
4. the anomaly of DJF 2020/21: ``save-tasks --frequency seasonal --temporal-range
   2020-12--P3M`` with the shipped anomaly config, ``baseline:`` = the climatology's
   location, ``min_baseline_years: 5``;
5. ``odc-ndvi mosaic`` of ``ndvi_std_anomaly``, ``ndvi_anomaly`` and ``baseline_years``:
   PNGs under WORKDIR/mosaics.

Rerunning skips what exists (archive, index, task dbs, finished tasks). Takes a few
minutes on 2 cores (most of it generating 190 scenes and running 8-year tasks).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import yaml

from odc_ndvi_plugin.dev.demo import CFG_DIR, save_tasks
from odc_ndvi_plugin.dev.index import add_products, index_datasets, init_index, open_index
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from odc_ndvi_plugin.mosaic import write_mosaics
from odc_ndvi_plugin.ops.runner import load_run_config
from odc_ndvi_plugin.ops.session import execute

CLIMATOLOGY = "2012-12--P8Y"  # Dec 2012 .. Nov 2020: 8 blocks, DJF first
SEASON = "2020-12--P3M"  # DJF 2020/21, after the baseline
#: (first day, last day, row0, col0, row1, col1, NDVI lowered by): rows/cols of the region
DROUGHT = (dt.date(2020, 12, 1), dt.date(2021, 2, 28), 150, 120, 360, 400, 0.25)
MIN_BASELINE_YEARS = 5
BANDS = ("ndvi_std_anomaly", "ndvi_anomaly", "baseline_years")


def _step(text: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)


def run(workdir: Path) -> list[Path]:
    t0 = time.monotonic()
    workdir = workdir.resolve()
    spec = ArchiveSpec.for_tiles(
        tiles=(2, 2),
        tile_px=256,
        start=dt.date(2012, 12, 3),
        end=dt.date(2021, 2, 28),
        revisit_days=16,
        n_paths=1,
        rows_per_path=1,
        cloudiness=0.25,
        droughts=(DROUGHT,),
    )
    _step(
        f"[1/5] synthetic archive: {len(spec.dates)} dates, {spec.width_px}x{spec.height_px} px", t0
    )
    archive = generate_archive(spec, workdir / "archive")
    with open_index(workdir) as env:
        _step("[2/5] datacube index", t0)
        init_index(env)
        add_products(env, [archive.product_definition])
        index_datasets(env, archive.dataset_paths)
        dbs = {}
        for mode, window in (("climatology", CLIMATOLOGY), ("anomaly", SEASON)):
            dbs[mode] = save_tasks(
                env.environ(),
                config=CFG_DIR / f"save-tasks-usgs-c2-{mode}.yaml",
                grid=spec.gridspec,
                temporal_range=window,
                output=workdir / "tasks" / f"{mode}_{window}.db",
            )
    locations = {mode: f"file://{workdir / 'out' / mode}" for mode in dbs}
    for step, mode in ((3, "climatology"), (4, "anomaly")):
        _step(f"[{step}/5] {mode} run", t0)
        doc = yaml.safe_load((CFG_DIR / f"run-usgs-c2-{mode}.yaml").read_text())
        if mode == "anomaly":
            doc["plugin_config"].update(
                baseline=locations["climatology"], min_baseline_years=MIN_BASELINE_YEARS
            )
        cfg, _ = load_run_config(doc, filedb=str(dbs[mode]), output_location=locations[mode])
        summary = execute(cfg, max_in_flight=2)
        if summary.failed:
            raise SystemExit(f"{mode}: {summary.line()}\n" + "\n".join(map(str, summary.errors)))
        print(f"      {summary.line()}")
    _step("[5/5] odc-ndvi mosaic", t0)
    pngs = []
    for band in BANDS:
        pngs += write_mosaics(locations["anomaly"], workdir / "mosaics", band=band)
    pngs += write_mosaics(locations["climatology"], workdir / "mosaics", band="ndvi_std")
    for png in pngs:
        print(f"      {png}")
    return pngs


if __name__ == "__main__":
    run(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/odc-ndvi-anomaly"))
