"""What SQS fleet tests and the chaos soak share: the slowed ``odc-ndvi`` a runner child
runs, task locations, message bodies as odc-stats writes them, and reading a
(dead-letter) queue's tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "SLOW_RUNNER",
    "poisoned_archive",
    "queued_tasks",
    "seasonal_tasks",
    "task_location",
    "task_message",
]

#: ``python -c SLOW_RUNNER ARGS``: ``odc-ndvi ARGS`` whose every seasonal reduction sleeps
#: ODC_NDVI_TEST_DELAY seconds first (so that signals land mid-task, tasks outlast leases)
SLOW_RUNNER = """
import os, time
import odc_ndvi_plugin.reduce._kernels as stats
_finish = stats._finish_group  # looked up at call time by both reductions
def _slow(*args, **kwargs):
    time.sleep(float(os.environ.get("ODC_NDVI_TEST_DELAY", "0")))
    return _finish(*args, **kwargs)
stats._finish_group = _slow
from odc_ndvi_plugin.cli import main
main(prog_name="odc-ndvi")
"""


def task_location(tidx: tuple[str, int, int]) -> str:
    """A task's location (odc-stats' ``Task.location`` with the shipped region code format,
    which is also its folder under the output location)."""
    period, x, y = tidx
    return f"x{x:+04d}/y{y:+05d}/{period}"


def task_message(location: str, db: Path) -> str:
    """A message body as odc-stats' publish-tasks writes it, for one task location."""
    from odc.stats.tasks import render_sqs

    x, y, period = location.split("/")
    return json.dumps(render_sqs((period, int(x[1:]), int(y[1:])), str(db)))


def queued_tasks(moto: Any, url: str, *, rounds: int = 10) -> list[str]:
    """Task locations of the messages in a (dead-letter) queue, read without deleting
    (each stays invisible for a minute)."""
    from odc.stats.tasks import parse_sqs

    sqs, out = moto.client("sqs"), []
    for _ in range(rounds):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        for msg in got.get("Messages", []):
            out.append(task_location(parse_sqs(msg["Body"])[0]))
        if not got.get("Messages"):
            break
    return out


def poisoned_archive(spec: Any, root: Path) -> tuple[Any, str]:
    """A synthetic archive of ``spec`` under ``root`` whose first April scene has its mask
    band truncated (every task reading it fails); returns it and that dataset's id."""
    import yaml

    from odc_ndvi_plugin.dev.synthetic import generate_archive

    archive = generate_archive(spec, root)
    victim = next(s for s in archive.scenes if s.solar_date.month == 4)
    qa = victim.dataset_yaml.with_name(victim.name + "_QA_PIXEL.TIF")
    qa.write_bytes(qa.read_bytes()[:300])  # truncated: every task reading it fails
    return archive, str(yaml.safe_load(victim.dataset_yaml.read_text())["id"])


def seasonal_tasks(
    dc_environ: dict[str, str], spec: Any, config: Path, output: Path
) -> tuple[Path, dict[str, frozenset[str]]]:
    """``odc-stats save-tasks`` of ``config`` over 2019-12--P12M on the archive's grid;
    returns the task db and each task's location -> dataset ids."""
    from odc.stats.tasks import TaskReader

    from odc_ndvi_plugin.dev.demo import save_tasks

    db = save_tasks(
        dc_environ,
        config=config,
        grid=spec.gridspec,
        temporal_range="2019-12--P12M",
        output=output,
    )
    reader = TaskReader(str(db))
    try:
        tasks = {
            task_location(t): frozenset(str(ds.id) for ds in reader.datasets(t))
            for t in reader.all_tiles
        }
    finally:
        reader._dscache.close()  # lmdb: one open per file and process
    return db, tasks
