"""A short chaos soak in the suite (fixed seed, small world): a real SQS fleet of
``odc-ndvi run --from-sqs`` runners on moto, S3 through the fault gate, a seeded schedule
of SIGKILL/SIGTERM, S3 503s and dropped connections on reads and writes and a late runner;
then the documented staging sweep and every invariant (tests/helpers/chaos.py).

The long soak (hundreds of faults, a table) is ``benchmarks/soak.py``, same engine. Also
here, on the same world: what the long soak found, an S3 write that keeps failing past
boto3's own retries costs an attempt, not the task."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import yaml

from odc_ndvi_plugin._transient import retry_reason
from odc_ndvi_plugin.ops import commit
from odc_ndvi_plugin.ops.commit import TransientWriteError
from tests.helpers.chaos import SEASONAL_RUN, copy_logs, make_world, soak, world_environ
from tests.helpers.fleet import SLOW_RUNNER

pytestmark = [pytest.mark.servers, pytest.mark.slow]

SEED = 23


@pytest.fixture(scope="module")
def world(moto_server, datacube_env_module, tmp_path_factory):
    """8 seasonal tasks (2 tiles), 2 of them poisoned, inputs on moto S3."""
    return make_world(tmp_path_factory.mktemp("chaos"), datacube_env_module, moto_server, tiles=2)


def test_a_fleet_under_a_seeded_fault_schedule_loses_nothing(world, moto_server, s3_gate, tmp_path):
    result = soak(
        world,
        moto_server,
        s3_gate,
        tmp_path / "soak",
        seed=SEED,
        faults=10,
        runners=3,
        mean_gap=2.5,
        lease=6,
        task_delay=0.3,
        timeout=300,
    )
    if result.problems():
        copy_logs(result, tmp_path / "logs")
    assert not result.problems(), result.table()
    # the schedule met the fleet: signals landed on runners at work, the gate failed
    # requests both ways, and every healthy task was committed exactly once
    kills = ("sigkill", "sigkill-writing", "sigterm")
    assert sum(result.injected[k] for k in kills) >= 1, result.table()
    assert result.injected["late-runner"] == 1
    reads = result.injected["s3-read-503"] + result.injected["s3-read-drop"]
    writes = result.injected["s3-write-503"] + result.injected["s3-write-drop"]
    assert reads >= 1 and writes >= 1, result.table()
    assert sorted(result.commits.values()) == [1] * len(world.healthy)


def test_an_s3_write_failing_past_boto3s_retries_is_tried_again_not_failed(
    world, moto_server, s3_gate, tmp_path
):
    """Five 503s in a row on staged PUTs exhaust boto3's five attempts at one file: the
    task's attempt fails with TransientWriteError and the runner computes it again
    (it used to fail the task: ``OSError: Failed to write``, one more SQS receive)."""
    task = sorted(world.healthy)[0]
    config = tmp_path / "run.yaml"
    doc = yaml.safe_load(SEASONAL_RUN.read_text())
    config.write_text(yaml.safe_dump({**doc, "aws_unsigned": False}))  # a private bucket
    s3_gate.clear()
    s3_gate.fail("retry/.staging/", 5, "503", methods=("PUT",))
    proc = subprocess.run(
        [sys.executable, "-c", SLOW_RUNNER, "run", "-v", "--config", str(config)]
        + ["--threads", "1", "--location", f"s3://{world.bucket}/retry", str(world.db)]
        + [task.replace("+", "")],  # odc-stats' task id: x768/y-2113/2019-12--P3M
        env=world_environ(world, moto_server, s3_gate),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    failed = [r for r in s3_gate.requests if r.fault == "503"]
    s3_gate.clear()
    assert len(failed) == 5, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TransientWriteError" in proc.stderr and "attempt 2 of 3" in proc.stderr
    items = moto_server.client("s3").list_objects_v2(Bucket=world.bucket, Prefix=f"retry/{task}/")
    names = [o["Key"].rsplit("/", 1)[-1] for o in items.get("Contents", [])]
    assert sum(n.endswith(".stac-item.json") for n in names) == 1, names


class _Refusing:
    def __init__(self, error: Exception):
        self.error = error

    def put_object(self, **_):
        raise self.error


@pytest.mark.parametrize(
    "code, status, transient",
    [("SlowDown", 503, True), ("InternalError", 500, True), ("AccessDenied", 403, False)],
)
def test_which_s3_write_failures_are_transient(monkeypatch, code, status, transient):
    from botocore.exceptions import ClientError

    answer = {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {}}
    answer["ResponseMetadata"]["HTTPStatusCode"] = status
    monkeypatch.setattr(commit, "_worker_s3", lambda: _Refusing(ClientError(answer, "PutObject")))
    args = (b"x", "s3://b/.staging/a/t.tif.part", "s3://b/t.tif")
    if not transient:
        assert commit.stage_output(*args).error == "Failed Write"
        return
    with pytest.raises(TransientWriteError) as got:
        commit.stage_output(*args)
    assert "cannot write s3://b/t.tif" in str(got.value) and code in str(got.value)
    assert retry_reason(got.value) is not None
    back = pickle.loads(pickle.dumps(got.value))  # as it travels from a worker
    assert type(back) is TransientWriteError and str(back) == str(got.value)


def test_a_dropped_connection_on_a_write_is_transient(monkeypatch):
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    for error in (
        ConnectionClosedError(endpoint_url="x"),
        EndpointConnectionError(endpoint_url="x"),
    ):
        monkeypatch.setattr(commit, "_worker_s3", lambda e=error: _Refusing(e))
        with pytest.raises(TransientWriteError):
            commit.stage_output(b"x", "s3://b/.staging/a/t.tif.part", "s3://b/t.tif")
