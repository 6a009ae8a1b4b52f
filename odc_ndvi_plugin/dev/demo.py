"""The main job, composed from the rooms (no logic of its own):

embedded (or configured) datacube index -> synthetic Landsat region -> indexed ->
``odc-stats save-tasks`` (the real CLI) -> our odc-stats TaskRunner with the shipped run
config -> COGs + STAC items -> a PNG quicklook of the four seasons per tile.

Everything lives under one work directory; rerunning skips what is already there.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import rasterio
import yaml

from .._shipped import cfg_dir
from ..errors import DatacubeUnavailable, NDVIPluginError
from ..ops.logs import quiet_libraries
from ..ops.report import RunSummary
from ..ops.runconfig import load_run_config
from ..ops.session import execute

if TYPE_CHECKING:
    from .index import DatacubeEnv
    from .synthetic import Archive

__all__ = ["CFG_DIR", "DemoReport", "run_demo", "save_tasks", "save_year_tasks", "year_window"]

#: the repository's cfg/ folder (the package is installed editable by scripts/bootstrap)
CFG_DIR = cfg_dir()

#: save-tasks' INFO log records (library set-up chatter): its progress lines are prints
_INFO_LOG_LINE = re.compile(r"^\[[^]]*\] \{[^}]*\} INFO - ")
#: save-tasks' lines that say what it found and wrote (the rest - query timings, digests,
#: dots - is passed on with -v only)
_SAVE_TASKS_RESULT = re.compile(r"^(Total of |Saving tasks|Writing summary|\.\.writing to )")

_RUN_CONFIG = {"usgs_c2": "run-usgs-c2-year.yaml", "dea_ard": "run-dea-ard-year.yaml"}
_SAVE_TASKS_CONFIG = {
    "usgs_c2": "save-tasks-usgs-c2-year.yaml",
    "dea_ard": "save-tasks-dea-ard-year.yaml",
}


@dataclass
class DemoReport:
    """What the demo did and where its files are."""

    workdir: Path
    region: str
    summary: RunSummary
    outputs: Path
    quicklooks: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"Region: {self.region}",
            f"Tasks: {self.summary.line()}",
            f"Outputs (COGs + STAC items): {self.outputs}",
            *(f"Quicklook: {q}" for q in self.quicklooks),
            "Timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
        ]
        lines += [f"FAILED {loc}: {err}" for loc, err in self.summary.errors]
        return "\n".join(lines)


def save_tasks(
    env: dict[str, str],
    *,
    config: Path,
    grid: str,
    temporal_range: str,
    output: Path,
    on_line: Callable[[str], None] | None = None,
) -> Path:
    """Run the real ``odc-stats save-tasks`` CLI (skipped if the task db exists);
    ``on_line`` gets its output lines as they come (it reports no total of its own)."""
    if output.exists():
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "odc.stats",
        "save-tasks",
        "--config",
        str(config),
        "--grid",
        grid,
        "--temporal-range",
        temporal_range,
        str(output),
    ]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None and line.strip():
                on_line(line.rstrip())
    returncode = proc.wait()
    if returncode != 0 or not output.exists():
        output.unlink(missing_ok=True)
        raise RuntimeError(f"odc-stats save-tasks failed ({returncode}):\n{''.join(lines)}")
    return output


def year_window(start: dt.date) -> str:
    """odc-stats temporal range of the 12 months starting with ``start``'s month."""
    return f"{start.year}-{start.month:02d}--P12M"


def save_year_tasks(
    env: DatacubeEnv,
    archive: Archive,
    output: Path,
    *,
    config: Path,
    on_line: Callable[[str], None] | None = None,
) -> tuple[Path, str]:
    """``odc-stats save-tasks`` for an archive's 12-month window on its tiling grid."""
    window = year_window(archive.spec.start)
    db = save_tasks(
        env.environ(),
        config=config,
        grid=archive.spec.gridspec,
        temporal_range=window,
        output=output,
        on_line=on_line,
    )
    return db, window


def _quicklook(task_dir: Path, png: Path, title: str) -> Path:
    from ..preview import quicklook_png

    panels = []
    for season in ("djf", "mam", "jja", "son"):
        (cog,) = task_dir.glob(f"*_ndvi_mean_{season}.tif")
        with rasterio.open(cog) as src:
            panels.append((season.upper(), src.read(1)))
    return quicklook_png(panels, png, title=title)


def _save_tasks_line(line: str, progress: Callable[[str], None], verbose: bool) -> None:
    if _INFO_LOG_LINE.match(line):
        return
    if verbose or _SAVE_TASKS_RESULT.match(line.strip()):
        progress(f"      {line}")


def run_demo(
    workdir: Path,
    *,
    size: str = "demo",
    flavour: str = "usgs_c2",
    overwrite: bool = False,
    index_driver: str = "postgres",
    progress: Callable[[str], None] = print,
    verbose: bool = False,
) -> DemoReport:
    """Run the whole production path into ``workdir``; see the module docstring.

    ``progress`` gets the step lines; the archive, index and run steps also show their
    progress with a total (a bar on a terminal, plain lines otherwise: ops/report.py) and
    save-tasks' result lines are passed on. ``verbose``: all of save-tasks' output, and
    dask's INFO log records (otherwise held back below WARNING for the run). ``index_driver``:
    datacube's driver for the workdir's own index (``postgres`` or ``postgis``; a configured
    datacube says its own)."""
    from ..ops.report import RunObserver, StepProgress, TaskProgress
    from .index import add_products, index_datasets, init_index, open_index
    from .synthetic import ArchiveSpec, generate_archive

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    spec = (
        ArchiveSpec.demo(flavour=flavour) if size == "demo" else ArchiveSpec.tiny(flavour=flavour)
    )
    region = (
        f"{spec.width_px}x{spec.height_px} px of {spec.resolution} m ({len(spec.tiles())} tiles of "
        f"{spec.tile_px}^2), {len(spec.dates)} dates {spec.start}..{spec.end}, {spec.product}"
    )
    with open_index(workdir, index_driver=index_driver) as dcenv:
        # the index first: an unreachable or broken datacube fails before any work
        try:
            init_index(dcenv)
        except NDVIPluginError:
            raise  # already one line of ours (e.g. the database cannot be reached)
        except Exception as err:  # noqa: BLE001 - sqlalchemy/psycopg2 errors vary
            reason = getattr(err, "orig", None) or err
            raise DatacubeUnavailable(
                f"datacube index {dcenv.display_url} cannot be used: {type(reason).__name__}: "
                f"{str(reason).strip().splitlines()[0]}"
            ) from err

        progress(f"[1/5] synthetic archive: {region}")
        t0 = time.monotonic()

        scenes: list[StepProgress] = []  # made at the first scene, which tells the total

        def gen_progress(done: int, total: int, message: str) -> None:
            if not scenes:
                scenes.append(StepProgress("scenes", total))
            scenes[0].update(done, message)

        try:
            archive = generate_archive(spec, workdir / "archive" / flavour, progress=gen_progress)
        finally:
            for bar in scenes:
                bar.close()
        timings["archive"] = time.monotonic() - t0

        progress("[2/5] datacube index: product, datasets")
        t0 = time.monotonic()
        add_products(dcenv, [archive.product_definition])
        datasets = StepProgress("datasets", len(archive.dataset_paths))
        try:
            index_datasets(
                dcenv, archive.dataset_paths, progress=lambda done, _total: datasets.update(done)
            )
        finally:
            datasets.close()
        timings["index"] = time.monotonic() - t0

        progress("[3/5] odc-stats save-tasks")
        t0 = time.monotonic()
        db, window = save_year_tasks(
            dcenv,
            archive,
            workdir / "tasks" / f"{spec.product}_{year_window(spec.start)}.db",
            config=CFG_DIR / _SAVE_TASKS_CONFIG[flavour],
            on_line=lambda line: _save_tasks_line(line, progress, verbose),
        )
        timings["save-tasks"] = time.monotonic() - t0

    progress("[4/5] odc-stats TaskRunner with our plugin")
    t0 = time.monotonic()
    outputs = workdir / "out"
    run_cfg = yaml.safe_load((CFG_DIR / _RUN_CONFIG[flavour]).read_text())
    cfg, _ = load_run_config(
        run_cfg,
        filedb=str(db),
        output_location=f"file://{outputs}/{{product}}/{{version}}",
        overwrite=overwrite or None,
    )
    tasks = TaskProgress(None)
    observer = RunObserver(tasks)
    quiet = quiet_libraries(verbose)
    try:
        with quiet:
            summary = execute(
                cfg,
                events=observer,
                on_runner=lambda runner: tasks.set_total(len(runner.planned())),
                max_in_flight=2,
            )
    finally:
        tasks.close()
    timings["run"] = time.monotonic() - t0

    progress("[5/5] quicklooks")
    quicklooks = []
    for stac in sorted(outputs.rglob("*.stac-item.json")):
        task_dir = stac.parent
        png = workdir / "quicklooks" / f"{stac.name.replace('.stac-item.json', '')}.png"
        if not png.exists() or png.stat().st_mtime < stac.stat().st_mtime:
            _quicklook(
                task_dir,
                png,
                title=f"{cfg.product.get('name', '')} {task_dir.relative_to(outputs)}: mean NDVI",
            )
        quicklooks.append(png)
    return DemoReport(workdir, region, summary, outputs, quicklooks, timings)
