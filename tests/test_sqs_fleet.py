"""SQS fleets on a real endpoint (moto server on loopback): no task lost, none done twice.

Runners are real ``odc-ndvi run --from-sqs`` child processes (local dask, one task at a
time), each seasonal reduction slowed by ``ODC_NDVI_TEST_DELAY`` seconds so that signals
land mid-task and tasks outlast their leases. The archive is the tiny USGS C2 one over 4
tiles, so the seasonal task db holds 16 tasks; one scene's mask band is truncated, so the
tasks that read it fail (and must end in the dead-letter queue, not circulate or vanish).

What every test counts is taken from the runners' own log lines: ``Submitting <task>``
(a computation started) and ``Finished <task>`` (its STAC item written).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from odc_ndvi_plugin.dev.synthetic import ArchiveSpec
from tests.conftest import CFG_DIR
from tests.fixtures.archives import add_and_index
from tests.helpers.fleet import (
    SLOW_RUNNER,
    poisoned_archive,
    queued_tasks,
    seasonal_tasks,
    task_message,
)
from tests.helpers.lines import LineReader, wait_until

pytestmark = pytest.mark.servers

SEASONAL_RUN = CFG_DIR / "run-usgs-c2-seasonal.yaml"
SEASONAL_TASKS = CFG_DIR / "save-tasks-usgs-c2-seasonal.yaml"

_SUBMITTED = re.compile(r"Submitting (\S+) \(")
_FINISHED = re.compile(r"Finished (\S+)$")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, datacube_env_module):
    """16 seasonal tasks (4 tiles x 4 seasons) of a tiny archive with one broken scene;
    ``failing``: the tasks that read that scene."""
    root = tmp_path_factory.mktemp("fleet")
    spec = ArchiveSpec.tiny(tiles=(4, 1))
    archive, victim_id = poisoned_archive(spec, root / "archive")
    add_and_index(archive, datacube_env_module)
    db, tasks = seasonal_tasks(
        datacube_env_module.environ(), spec, SEASONAL_TASKS, root / "tasks" / "seasonal.db"
    )
    failing = {loc for loc, ids in tasks.items() if victim_id in ids}
    assert len(tasks) == 16 and 0 < len(failing) < 16, (len(tasks), failing)
    return {"root": root, "db": db, "tasks": set(tasks), "failing": failing}


def _runner(
    config: Path, location: str, queue_url: str, *, delay: float, **lease: float
) -> tuple[subprocess.Popen, LineReader]:
    """An ``odc-ndvi run --from-sqs`` child (1 thread, one task at a time) with the shipped
    seasonal run config and ``lease`` settings; returns it and its stderr lines."""
    doc = yaml.safe_load(SEASONAL_RUN.read_text())
    config.write_text(yaml.safe_dump({**doc, **lease}))
    env = {**os.environ, "ODC_NDVI_TEST_DELAY": str(delay)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUNNER, "run", "-v", "--config", str(config)]
        + ["--location", location, "--from-sqs", queue_url, "--threads", "1"],
        env=env,
        cwd=config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, LineReader(proc.stderr)


def _matches(reader: LineReader, pattern: re.Pattern[str]) -> list[str]:
    return [m.group(1) for line in list(reader.lines) if (m := pattern.search(line.strip()))]


def _finish(*procs: subprocess.Popen, timeout: float) -> None:
    """Wait for every child; kill any still running after ``timeout`` s (then fail)."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _queue_depth(moto, url: str) -> tuple[int, int]:
    attrs = moto.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def _stac_tasks(moto, bucket: str, prefix: str) -> list[str]:
    """Task locations of every STAC item under ``prefix`` (and no staged file left)."""
    s3, keys = moto.client("s3"), []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert not [k for k in keys if "/.staging/" in k], keys
    return ["/".join(k.split("/")[-4:-1]) for k in keys if k.endswith(".stac-item.json")]


def test_a_sigtermed_runner_loses_no_task_and_the_fleet_drains_the_queue(
    fleet, moto_env, s3_bucket, sqs_queue_factory, tmp_path
):
    """16 tasks published with odc-stats' publish-tasks; runners A and B drain them, A gets
    SIGTERM in the middle of its second task, C starts after A has exited. Every healthy
    task ends with exactly one finished computation and one STAC item, the failing ones in
    the dead-letter queue, and the queue is empty when the last runner exits.

    The lease (60 s) outlasts the whole run: a message that A had received but neither
    worked on nor released would stay invisible until every runner had gone."""
    from odc.stats._cli_publish_tasks import publish_tasks

    queue = sqs_queue_factory(max_receive_count=2, visibility_timeout=60)
    publish_tasks(str(fleet["db"]), "", None, False, queue.name)
    location = f"s3://{s3_bucket}/fleet"
    lease = {"job_queue_max_lease": 60, "renew_safety_margin": 10, "future_poll_interval": 0.5}
    a, a_err = _runner(tmp_path / "a.yaml", location, queue.url, delay=1.5, **lease)
    b, b_err = _runner(tmp_path / "b.yaml", location, queue.url, delay=1.5, **lease)
    c = None
    try:
        assert wait_until(lambda: len(_matches(a_err, _SUBMITTED)) >= 2, 180), a_err.text()
        a.send_signal(signal.SIGTERM)
        a.wait(timeout=60)
        assert a.returncode == 130, a_err.text()[-3000:]
        c, c_err = _runner(tmp_path / "c.yaml", location, queue.url, delay=1.5, **lease)
        _finish(b, c, timeout=300)
        depth_at_exit = _queue_depth(moto_env, queue.url)
    finally:
        _finish(*(p for p in (a, b, c) if p is not None), timeout=5)

    texts = "\n".join(r.text() for r in (a_err, b_err, c_err))
    assert depth_at_exit == (0, 0), texts[-4000:]
    healthy = fleet["tasks"] - fleet["failing"]
    # one finished computation and one STAC item per healthy task; A's interrupted task
    # was computed again (by B or C), from scratch
    finished = Counter(_matches(a_err, _FINISHED) + _matches(b_err, _FINISHED))
    finished.update(_matches(c_err, _FINISHED))
    assert finished == Counter(healthy), texts[-4000:]
    assert sorted(_stac_tasks(moto_env, s3_bucket, "fleet/")) == sorted(healthy)
    assert sorted(queued_tasks(moto_env, queue.dlq_url)) == sorted(fleet["failing"])
    assert "another attempt finished this task" not in texts
    # a runner that met a failing task exits 1 (the message was released, not lost)
    for proc, err in ((b, b_err), (c, c_err)):
        assert proc.returncode == (1 if re.search(r"Task \S+ failed", err.text()) else 0)


def test_tasks_longer_than_their_lease_keep_it_and_are_computed_once(
    fleet, moto_env, s3_bucket, sqs_queue_factory, tmp_path
):
    """Two tasks that each take 5x the visibility timeout (4 s lease, ~20 s tasks). Runner A
    takes the first; runner B starts once A is computing (by then any message A had
    received without working on it would have lapsed). Leases are renewed, no message is
    delivered to a second runner, each task is computed once, none reaches the DLQ."""
    queue = sqs_queue_factory(max_receive_count=2, visibility_timeout=4)
    healthy = sorted(fleet["tasks"] - fleet["failing"])[:2]
    for task in healthy:
        moto_env.client("sqs").send_message(
            QueueUrl=queue.url, MessageBody=task_message(task, fleet["db"])
        )
    location = f"s3://{s3_bucket}/long"
    lease = {"job_queue_max_lease": 4, "renew_safety_margin": 2, "future_poll_interval": 0.5}
    a, a_err = _runner(tmp_path / "a.yaml", location, queue.url, delay=20, **lease)
    b = None
    try:
        assert wait_until(lambda: _matches(a_err, _SUBMITTED), 120), a_err.text()
        b, b_err = _runner(tmp_path / "b.yaml", location, queue.url, delay=20, **lease)
        _finish(a, b, timeout=300)
    finally:
        _finish(*(p for p in (a, b) if p is not None), timeout=5)
    texts = a_err.text() + b_err.text()
    assert a.returncode == b.returncode == 0, texts[-4000:]
    submitted = Counter(_matches(a_err, _SUBMITTED) + _matches(b_err, _SUBMITTED))
    assert submitted == Counter(healthy), texts[-4000:]
    assert "lease is lost" not in texts
    assert _queue_depth(moto_env, queue.url) == (0, 0)
    assert _queue_depth(moto_env, queue.dlq_url) == (0, 0)
    assert sorted(_stac_tasks(moto_env, s3_bucket, "long/")) == healthy


def test_a_killed_holders_task_is_picked_up_when_its_lease_lapses(
    fleet, moto_env, s3_bucket, sqs_queue_factory, tmp_path
):
    """Runner A takes the only message and is SIGKILLed mid-task (no release). Runner B,
    started meanwhile, finds the queue empty but a message in flight: it waits (saying so)
    instead of exiting, takes the message when A's lease lapses and finishes it."""
    queue = sqs_queue_factory(max_receive_count=3, visibility_timeout=8)
    task = sorted(fleet["tasks"] - fleet["failing"])[0]
    moto_env.client("sqs").send_message(
        QueueUrl=queue.url, MessageBody=task_message(task, fleet["db"])
    )
    location = f"s3://{s3_bucket}/killed"
    lease = {"job_queue_max_lease": 8, "renew_safety_margin": 3, "future_poll_interval": 0.5}
    a, a_err = _runner(tmp_path / "a.yaml", location, queue.url, delay=60, **lease)
    b = None
    try:
        assert wait_until(lambda: _matches(a_err, _SUBMITTED), 120), a_err.text()
        b, b_err = _runner(tmp_path / "b.yaml", location, queue.url, delay=0, **lease)
        assert b_err.wait_for("in flight elsewhere: waiting", 120), b_err.lines[-20:]
        a.kill()
        _finish(b, timeout=180)
    finally:
        _finish(*(p for p in (a, b) if p is not None), timeout=5)
    assert b.returncode == 0, b_err.text()[-3000:]
    assert _matches(b_err, _FINISHED) == [task]
    assert _queue_depth(moto_env, queue.url) == (0, 0)
    assert _stac_tasks(moto_env, s3_bucket, "killed/") == [task]


def test_without_a_dead_letter_queue_a_failing_task_does_not_circulate_for_ever(
    fleet, moto_env, s3_bucket, tmp_path, caplog
):
    """A queue with no redrive policy: the failing task's message comes back after every
    failure; the runner tries it MAX_RECEIVES_PER_RUN times, then releases it and stops
    (the message stays in the queue, visible, for an operator to look at)."""
    from odc_ndvi_plugin.ops.runconfig import load_run_config
    from odc_ndvi_plugin.ops.session import execute
    from odc_ndvi_plugin.ops.sqs import MAX_RECEIVES_PER_RUN

    sqs = moto_env.client("sqs")
    url = sqs.create_queue(QueueName=f"no-dlq-{os.getpid()}-{time.monotonic_ns()}")["QueueUrl"]
    try:
        task = sorted(fleet["failing"])[0]
        sqs.send_message(QueueUrl=url, MessageBody=task_message(task, fleet["db"]))
        cfg, _ = load_run_config(
            yaml.safe_load(SEASONAL_RUN.read_text()),
            output_location=f"s3://{s3_bucket}/nodlq",
            threads=1,
            job_queue_max_lease=30,
            future_poll_interval=0.5,
        )
        summary = execute(cfg, from_sqs=url)
        assert (summary.done, summary.failed) == (0, MAX_RECEIVES_PER_RUN), summary.errors
        assert "has no dead-letter queue" in caplog.text
        assert "takes no more work" in caplog.text
        assert _queue_depth(moto_env, url) == (1, 0)
    finally:
        sqs.delete_queue(QueueUrl=url)
