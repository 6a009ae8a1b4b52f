"""A short chaos soak in the suite (fixed seed, small world): a real SQS fleet of
``odc-ndvi run --from-sqs`` runners on moto, S3 through the fault gate, a seeded schedule
of SIGKILL/SIGTERM, S3 503s and dropped connections on reads and writes and a late runner;
then the documented staging sweep and every invariant (tests/helpers/chaos.py).

The long soak (hundreds of faults, a table) is ``benchmarks/soak.py``, same engine."""

from __future__ import annotations

import pytest

from tests.helpers.chaos import copy_logs, make_world, soak

pytestmark = [pytest.mark.servers, pytest.mark.slow]

SEED = 23


def test_a_fleet_under_a_seeded_fault_schedule_loses_nothing(
    moto_server, s3_gate, datacube_env, tmp_path
):
    world = make_world(tmp_path / "world", datacube_env, moto_server, tiles=2)
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
    assert result.injected["sigkill"] + result.injected["sigterm"] >= 1, result.table()
    assert result.injected["late-runner"] == 1
    reads = result.injected["s3-read-503"] + result.injected["s3-read-drop"]
    writes = result.injected["s3-write-503"] + result.injected["s3-write-drop"]
    assert reads >= 1 and writes >= 1, result.table()
    assert sorted(result.commits.values()) == [1] * len(world.healthy)
