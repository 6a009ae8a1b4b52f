"""Issue 15B and issue 14's retries: "done" means every file is there, broken state says
so, duplicate attempts are reported, transient failures are retried and deterministic
ones are not.

Runs go through the CLI in-process (click's CliRunner) or as child processes on a
private copy of the tiny USGS archive with the seasonal task db (tests/test_reliability's
bench). References are the files of an earlier run of the same task (COGs are
deterministic: tests/test_reliability checks that) and the files on disk.
"""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from odc_ndvi_plugin._transient import retry_reason
from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.load import InputReadError
from tests.helpers.lines import LineReader
from tests.helpers.ops_bench import (
    PERIODS,
    SEASONAL_RUN,
    files_in,
    make_bench,
    slow_cli,
    task_dir,
)
from tests.test_reliability import band_file, restored, seasonal_config


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_archive, datacube_env_module):
    root = tmp_path_factory.mktemp("done-means-done")
    return make_bench(root, tiny_archive("usgs_c2"), datacube_env_module)


def _run(bench, out, *args: str, tasks=()):
    threads = [] if "--dryrun" in args else ["--threads", "2"]  # a dry run refuses it
    return CliRunner().invoke(
        main,
        ["run", "--config", str(SEASONAL_RUN), "--location", out.as_uri(), *threads]
        + list(args)
        + [str(bench.db), *tasks],
    )


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in files_in(folder) if p.suffix == ".tif"}


# -- a finished task whose files are not all there ----------------------------------------------


@pytest.mark.integration
def test_a_deleted_cog_of_a_finished_task_is_found_and_computed_again(bench, tmp_path):
    tile, period = bench.tiles[0], PERIODS[0]
    task = bench.task_id(tile, period)
    out = tmp_path / "out"
    first = _run(bench, out, tasks=[task])
    assert first.exit_code == 0, first.output
    folder = task_dir(out, tile, period)
    original = _snapshot(folder)
    victim = next(p for p in folder.glob("*_ndvi_mean.tif"))
    victim.unlink()

    dry = _run(bench, out, "--dryrun", tasks=[task])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.strip().endswith(f"(incomplete: {victim.name} missing; recompute)")
    assert dry.stderr.strip().splitlines()[-1] == "1 task(s): 1 incomplete"

    reported = _run(bench, out, "--incomplete", "report", tasks=[task])
    assert reported.exit_code == 1, reported.output
    assert reported.stdout.splitlines()[0] == (
        "Tasks: done 0, skipped 0, failed 0, in flight 0, incomplete 1 (reported, not redone)"
    )
    assert not victim.exists()  # only reported

    again = _run(bench, out, "--report", str(tmp_path / "r.json"), tasks=[task])
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == "Tasks: done 1, skipped 0, failed 0, in flight 0"
    assert f"it was incomplete ({victim.name} missing)" in again.stdout
    assert _snapshot(folder) == original  # the same files, byte for byte
    (entry,) = json.loads((tmp_path / "r.json").read_text())["tasks"]
    assert entry["status"] == "done" and entry["note"] == f"was incomplete: {victim.name} missing"


@pytest.mark.integration
def test_verify_finds_a_changed_cog_that_the_cheap_check_cannot(bench, tmp_path):
    tile, period = bench.tiles[1], PERIODS[1]
    task = bench.task_id(tile, period)
    out = tmp_path / "out"
    assert _run(bench, out, tasks=[task]).exit_code == 0
    folder = task_dir(out, tile, period)
    original = _snapshot(folder)
    victim = next(folder.glob("*_clear_count.tif"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    victim.write_bytes(bytes(data))

    cheap = _run(bench, out, tasks=[task])
    assert cheap.stdout.splitlines()[0] == "Tasks: done 0, skipped 1, failed 0, in flight 0"
    dry = _run(bench, out, "--dryrun", "--verify", tasks=[task])
    assert dry.stdout.strip().endswith(
        f"(incomplete: {victim.name} does not match its .sha1; recompute)"
    ), dry.stdout
    verified = _run(bench, out, "--verify", tasks=[task])
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[0] == "Tasks: done 1, skipped 0, failed 0, in flight 0"
    assert _snapshot(folder) == original


@pytest.mark.integration
def test_a_successful_run_leaves_no_staging_folders(bench, tmp_path):
    """Issue 15B: an empty ``.staging/<attempt>/x/y/period`` tree was left after every task."""
    out = tmp_path / "out"
    tasks = [bench.task_id(bench.tiles[0], p) for p in PERIODS[1:3]]
    result = _run(bench, out, "--max-in-flight", "2", tasks=tasks)
    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.stac-item.json"))) == 2
    assert not (out / ".staging").exists(), sorted(map(str, (out / ".staging").rglob("*")))


@pytest.mark.integration
def test_the_second_of_two_runners_says_it_kept_the_other_attempts_files(bench, tmp_path):
    """Two runners on one task at once: A (a child process, its reduction held by a gate)
    has submitted the task when B (in-process) computes and commits it; then A goes on.
    A's commit finds B's STAC item, keeps B's files and -- new -- says so."""
    from odc_ndvi_plugin.ops.session import execute

    tile, period = bench.tiles[1], PERIODS[3]
    task = bench.task_id(tile, period)
    out = tmp_path / "out"
    gate = tmp_path / "gate"
    report = tmp_path / "a.json"
    proc = slow_cli(
        bench, SEASONAL_RUN, out, "-v", "--report", str(report), str(bench.db), task,
        delay=0.0, gate=gate,
    )  # fmt: skip
    err = LineReader(proc.stderr)
    try:
        assert err.wait_for("Submitting", 120), err.text()[-3000:]
        b = execute(seasonal_config(bench, out, threads=1), tasks=[task])
        b_files = {p: p.read_bytes() for p in files_in(out)}
        gate.touch()
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b.done == 1
    assert proc.returncode == 0, err.text()[-3000:]
    assert stdout.splitlines()[0] == "Tasks: done 1, skipped 0, failed 0, in flight 0"
    location = f"x{tile[0]:+04d}/y{tile[1]:+05d}/{period}"
    assert (
        f"  kept the other attempt's files for 1 task(s) that another runner finished first: "
        f"{location}"
    ) in stdout.splitlines()
    (entry,) = json.loads(report.read_text())["tasks"]
    assert entry["note"] == "kept the other attempt's files"
    assert {p: p.read_bytes() for p in files_in(out)} == b_files  # B's files, untouched


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, retried",
    [
        (KilledWorker("load-abc", "tcp://127.0.0.1:1", 3), True),
        (CommClosedError("in <TCP (closed)>: Stream is closed"), True),
        (TimeoutError("timed out"), True),
        (InputReadError("dataset d (p): failed reading /x.tif: CURL error: Operation timed out after 30000 milliseconds"), True),
        (InputReadError("dataset d (p): cannot read s3://b/x.tif: HTTP response code: 503"), True),
        (InputReadError("dataset d (p): failed reading /x.tif: TIFFReadEncodedTile() failed."), False),
        (InputReadError("dataset d (p): cannot read s3://b/x.tif: HTTP response code: 404"), False),
        (FileNotFoundError("/x.tif"), False),
        (ValueError("plugin_config.x"), False),
    ],
    ids=["killed-worker", "comm-closed", "timeout", "read-timeout", "http-503", "decode", "http-404", "missing", "value"],
)  # fmt: skip
def test_which_failures_are_retried(error, retried):
    assert (retry_reason(error) is not None) is retried


class _FlakyReads:
    """The first ``failures`` window reads raise what GDAL raises on a read timeout."""

    def __init__(self, real, failures: int):
        self.real, self.left, self.lock = real, failures, threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            fail, self.left = self.left > 0, self.left - 1
        if fail:
            raise OSError("CURL error: Operation timed out after 30000 milliseconds")
        return self.real(*args, **kwargs)


@pytest.mark.integration
@pytest.mark.parametrize("retries, done", [(None, True), ("0", False)], ids=["default", "none"])
def test_a_read_timeout_is_retried(bench, tmp_path, monkeypatch, retries, done):
    import odc_ndvi_plugin.load._rio as rio

    monkeypatch.setattr(rio, "_read_window", _FlakyReads(rio._read_window, failures=1))
    tile, period = bench.tiles[0], PERIODS[2]
    out = tmp_path / "out"
    args = ["--report", str(tmp_path / "r.json")] + (["--retries", retries] if retries else [])
    result = _run(bench, out, *args, tasks=[bench.task_id(tile, period)])
    (entry,) = json.loads((tmp_path / "r.json").read_text())["tasks"]
    if done:
        assert result.exit_code == 0, result.output
        assert entry["status"] == "done" and entry["attempts"] == 2
        assert "1 attempt(s) made again after a transient failure" in result.stdout
        assert len(list(task_dir(out, tile, period).glob("*.stac-item.json"))) == 1
    else:
        assert result.exit_code == 1, result.output
        assert entry["status"] == "failed" and entry["attempts"] == 1
        assert "Operation timed out" in entry["error"]
        assert files_in(task_dir(out, tile, period)) == []


@pytest.mark.integration
def test_a_corrupt_input_is_not_retried(bench, tmp_path):
    tile, period = bench.tiles[0], PERIODS[1]
    victim = band_file(bench.scenes((3,))[0], "red")  # as tests/test_reliability's fault
    out = tmp_path / "out"
    with restored(victim):
        victim.write_bytes(victim.read_bytes()[:300])
        result = _run(
            bench, out, "--retries", "3", "--report", str(tmp_path / "r.json"),
            tasks=[bench.task_id(tile, period)],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    (entry,) = json.loads((tmp_path / "r.json").read_text())["tasks"]
    assert entry["status"] == "failed" and entry["attempts"] == 1
    assert victim.name in entry["error"] and "attempts" not in entry["error"]
    assert "made again" not in result.stdout
