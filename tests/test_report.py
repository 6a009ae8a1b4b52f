"""Issue 14: progress with a total (plain lines when not a terminal) and ``--report``."""

from __future__ import annotations

import io
import json
import re
import signal
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from odc.stats.tasks import TaskReader

from odc_ndvi_plugin.ops.report import (
    RunObserver,
    RunReport,
    RunSummary,
    StepProgress,
    TaskOutcome,
    TaskProgress,
    config_digest,
)
from odc_ndvi_plugin.ops.runconfig import load_run_config
from tests.helpers.lines import LineReader
from tests.helpers.ops_bench import (
    PERIODS,
    SEASONAL_RUN,
    files_in,
    make_bench,
    odc_ndvi,
    slow_cli,
    task_dir,
)

#: a plain progress line: position and total, counts, rate, ETA, then the task
PLAIN = re.compile(
    r"^\[(?P<n>\d+)/(?P<total>\d+) (?P<pct>\d+)%, done=(?P<done>\d+) skipped=(?P<skipped>\d+) "
    r"failed=(?P<failed>\d+) in_flight=\d+, (?:rate \?|[\d.]+ tasks/min), "
    r"ETA (?:\?|\d+:\d\d:\d\d)\] (?P<location>\S+) (?P<what>.*)$"
)


@dataclass
class _Task:
    location: str


@dataclass
class _Result:
    task: _Task
    error: str | None = None
    skipped: bool = False
    meta: object = None

    def __bool__(self) -> bool:
        return self.error is None


def test_plain_lines_count_to_the_total_when_not_a_terminal():
    stream = io.StringIO()  # not a terminal
    progress = TaskProgress(3, stream=stream)
    summary = RunSummary()
    outcomes = [
        (_Result(_Task("x1/y1/p"), meta=TaskOutcome("done", seconds=2.0)), "done"),
        (_Result(_Task("x2/y1/p"), skipped=True), "skipped"),
        (_Result(_Task("x3/y1/p"), error="boom"), "failed"),
    ]
    for result, status in outcomes:
        setattr(summary, status, getattr(summary, status) + 1)
        progress.task_finished(result, summary)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    matches = [PLAIN.match(line) for line in lines]
    assert all(matches), lines
    assert [(m["n"], m["total"], m["pct"]) for m in matches] == [
        ("1", "3", "33"),
        ("2", "3", "66"),
        ("3", "3", "100"),
    ]
    assert matches[0]["what"] == "done in 2.0 s"
    assert matches[1]["what"] == "skipped (outputs complete)"
    assert matches[2]["what"] == "FAILED: boom"
    assert "\r" not in stream.getvalue()  # no bar redraws in a log


def test_a_terminal_gets_a_bar_with_the_total():
    stream = io.StringIO()
    progress = TaskProgress(2, stream=stream, bar=True)  # what a sized terminal gets
    summary = RunSummary(done=1)
    progress.task_finished(_Result(_Task("x1/y1/p")), summary)
    progress.close()
    text = stream.getvalue()
    assert "1/2" in text and "\r" in text and "done 1, skipped 0, failed 0" in text


def test_steps_print_a_line_every_tenth_when_not_a_terminal():
    stream = io.StringIO()
    step = StepProgress("scenes", 40, stream=stream)
    for done in range(1, 41):
        step.update(done)
    step.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "[scenes 40/40 100%]"
    assert 10 <= len(lines) <= 11
    assert all(re.match(r"^\[scenes \d+/40 \d+%(, ETA \d+:\d\d:\d\d)?\]$", line) for line in lines)


def test_sqs_total_is_the_processed_tasks_plus_the_queue_depth():
    stream = io.StringIO()
    depths = iter([(5, 2), (3, 1)])
    observer = RunObserver(TaskProgress(None, stream=stream), queue_depth=lambda: next(depths))
    summary = RunSummary(done=1)
    observer.task_finished(_Result(_Task("x1/y1/p")), summary)
    assert observer.progress.total == 1 + 5 + 2
    observer._depth_asked = float("-inf")  # the next refresh is due
    summary.done = 2
    observer.tick(summary)
    assert observer.progress.total == 2 + 3 + 1


def test_report_errors_are_redacted_and_the_file_is_replaced_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-key-value")
    path = tmp_path / "run.json"
    report = RunReport(path, {"command": ["odc-ndvi", "run"]})
    report.plan(["x1/y1/p", "x2/y1/p"])
    report.task_started("x1/y1/p", 12, 1)
    failed = _Result(_Task("x1/y1/p"), error="denied for key s3cr3t-key-value")
    report.task_finished(failed, RunSummary(failed=1))
    report.write(RunSummary(failed=1), "finished")
    doc = json.loads(path.read_text())
    assert "s3cr3t-key-value" not in path.read_text()
    assert doc["tasks"][0]["error"] == "denied for key ***"
    assert (doc["totals"]["failed"], doc["totals"]["not done"]) == (1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temp file left


def test_config_digest_follows_what_decides_the_outputs():
    doc = yaml.safe_load(SEASONAL_RUN.read_text())
    a, _ = load_run_config(doc, output_location="file:///a", threads=1)
    b, _ = load_run_config(doc, output_location="file:///b", threads=2)
    c, _ = load_run_config(
        {**doc, "plugin_config": {**doc["plugin_config"], "min_clear": 2}},
        output_location="file:///a",
    )
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", config_digest(a))
    assert config_digest(a) == config_digest(b)  # where and how fast: not in the digest
    assert config_digest(a) != config_digest(c)


# -- the CLI on a real task db --------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_archive, datacube_env_module):
    root = tmp_path_factory.mktemp("report")
    return make_bench(root, tiny_archive("usgs_c2"), datacube_env_module)


@pytest.mark.integration
def test_cli_progress_in_a_pipe_and_its_report(bench, tmp_path):
    out = tmp_path / "out"
    tasks = [bench.task_id(bench.tiles[0], p) for p in PERIODS[:2]]
    report_path = tmp_path / "run.json"
    proc = odc_ndvi(
        "run", "--config", str(SEASONAL_RUN), "--location", out.as_uri(), "--threads", "2",
        "--report", str(report_path), str(bench.db), *tasks,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [m for line in proc.stderr.splitlines() if (m := PLAIN.match(line))]
    assert [(m["n"], m["total"]) for m in lines] == [("1", "2"), ("2", "2")], proc.stderr
    assert all(m["what"].startswith("done in ") for m in lines)
    assert proc.stdout.splitlines()[0] == "Tasks: done 2, skipped 0, failed 0, in flight 0"

    doc = json.loads(report_path.read_text())
    assert doc["state"] == "finished"
    assert doc["versions"] == {
        "odc-ndvi-plugin": version("odc-ndvi-plugin"),
        "odc-stats": version("odc-stats"),
    }
    assert doc["config"]["digest"].startswith("sha256:")
    assert doc["totals"]["done"] == 2 and doc["totals"]["tasks"] == 2
    reader = TaskReader(str(bench.db))
    try:
        datasets = {
            f"x{t[1]:+04d}/y{t[2]:+05d}/{t[0]}": len(reader.datasets(t)) for t in reader.all_tiles
        }
    finally:
        reader._dscache.close()
    for entry in doc["tasks"]:
        folder = out / entry["location"]
        written = sum(p.stat().st_size for p in files_in(folder))
        assert entry["status"] == "done" and entry["error"] is None
        assert entry["bytes_written"] == written  # every file of the task, STAC item included
        assert entry["datasets"] == datasets[entry["location"]]
        assert entry["attempts"] == 1 and entry["seconds"] > 0
    assert doc["totals"]["bytes_written"] == sum(p.stat().st_size for p in files_in(out))


@pytest.mark.integration
def test_an_interrupted_runs_report_lists_the_task_in_flight_as_not_done(bench, tmp_path):
    """SIGTERM while the first of two tasks computes (its reduction is held by a gate):
    the report is valid JSON, says ``interrupted``, and lists both tasks as not done,
    the first one as in flight."""
    out = tmp_path / "out"
    report_path = tmp_path / "run.json"
    tile = bench.tiles[1]
    tasks = [bench.task_id(tile, p) for p in PERIODS[2:]]
    locations = [f"x{tile[0]:+04d}/y{tile[1]:+05d}/{p}" for p in PERIODS[2:]]
    proc = slow_cli(
        bench, SEASONAL_RUN, out, "-v", "--report", str(report_path), "--max-in-flight", "1",
        str(bench.db), *tasks, delay=0.0, gate=tmp_path / "gate",
    )  # fmt: skip
    err = LineReader(proc.stderr)
    try:
        assert err.wait_for(f"Submitting {locations[0]}", 120), err.text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert err.wait_for("Interrupted: cancelling 1 task(s) in flight", 60), err.text()[-3000:]
        (tmp_path / "gate").touch()  # lets the held worker thread end
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, err.text()[-3000:]
    doc = json.loads(report_path.read_text())
    assert doc["state"] == "interrupted"
    entries = {e["location"]: e for e in doc["tasks"]}
    assert list(entries) == locations
    first, second = entries[locations[0]], entries[locations[1]]
    assert (
        first["status"] == "not done" and first["note"] == "in flight when the run was interrupted"
    )
    assert first["datasets"] and first["attempts"] == 1
    assert second["status"] == "not done" and second["note"] is None
    assert doc["totals"]["not done"] == 2 and doc["totals"]["done"] == 0
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".run.json")]
    assert files_in(task_dir(out, bench.tiles[1], PERIODS[2])) == []
