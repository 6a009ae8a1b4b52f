"""Where a run is, and what it did: progress with a total, and the run report.

* :class:`RunSummary` counts a run's tasks (the runner keeps it; the CLI prints it).
* :class:`TaskProgress` shows done / total, skipped, failed, rate and ETA: a tqdm bar on
  a terminal, and one plain line per finished task otherwise (Kubernetes logs)::

      [3/8 38%, done=2 skipped=1 failed=0 in_flight=1, 2.1 tasks/min, ETA 0:02:23] x+768/y-2113/2020-03--P3M done in 28.4 s

* :class:`RunReport` is the machine-readable record of a run (``odc-ndvi run --report``):
  per task its location, status (``done``, ``skipped``, ``failed``, ``incomplete``,
  ``not done``), seconds, datasets read, bytes written, attempts and error (redacted);
  totals; the config digest and the plugin and odc-stats versions. It is written
  atomically (temporary file + rename) every :data:`REPORT_EVERY_SECONDS` while the run
  goes on and at its end, also when the run is interrupted (tasks in flight are then
  ``not done``).

Nothing here imports dask or odc-stats: the runner reports to a :class:`RunEvents`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from .._redact import redact_text, secret_values_from_environ

__all__ = [
    "REPORT_EVERY_SECONDS",
    "STATUSES",
    "AllEvents",
    "ProgressLines",
    "RunEvents",
    "RunObserver",
    "RunReport",
    "RunSummary",
    "TaskOutcome",
    "TaskProgress",
    "config_digest",
    "outcome_of",
]

#: a task's status in the report (``incomplete``: outputs found incomplete and, as asked
#: with ``--incomplete report``, only reported; ``not done``: not started, or in flight
#: when the run ended)
STATUSES = ("done", "skipped", "failed", "incomplete", "not done")
#: the report file is rewritten at most this often while a run goes on
REPORT_EVERY_SECONDS = 30.0
#: the queue depth (SQS runs' total) is asked for at most this often
QUEUE_DEPTH_EVERY_SECONDS = 15.0


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one task (``TaskResult.meta`` of the runner's results)."""

    status: str
    seconds: float | None = None
    datasets: int | None = None
    bytes_written: int | None = None
    attempts: int = 0
    #: e.g. "kept the other attempt's files", "was incomplete (...): computed again"
    note: str = ""
    #: inputs left out (``on_bad_input: skip``): ``{id, file, band, reason}`` each
    skipped_inputs: tuple[dict[str, str], ...] = ()


def outcome_of(result: Any) -> TaskOutcome:
    """The outcome of a runner result (odc-stats' ``TaskResult``)."""
    if isinstance(result.meta, TaskOutcome):
        return result.meta
    if result.skipped:
        return TaskOutcome("skipped")
    return TaskOutcome("done" if result else "failed")


@dataclass
class RunSummary:
    """Counts and failures of one run (printed at the end, also as progress)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    in_flight: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: (location, problem) of tasks found incomplete and only reported
    incomplete: list[tuple[str, str]] = field(default_factory=list)
    #: (location, problem) of tasks found incomplete and computed again
    redone: list[tuple[str, str]] = field(default_factory=list)
    #: tasks whose commit found another attempt's finished outputs (kept, ours dropped)
    kept_other: list[str] = field(default_factory=list)
    #: attempts made again after a transient failure
    retried: int = 0
    #: (location, inputs left out) of tasks done without inputs that could not be
    #: decoded (``on_bad_input: skip``)
    bad_inputs: list[tuple[str, tuple[dict[str, str], ...]]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.done + self.skipped + self.failed + len(self.incomplete)

    def line(self) -> str:
        text = (
            f"done {self.done}, skipped {self.skipped}, failed {self.failed}, "
            f"in flight {self.in_flight}"
        )
        if self.incomplete:
            text += f", incomplete {len(self.incomplete)} (reported, not redone)"
        return text

    def notes(self) -> list[str]:
        """Lines that say what else happened (after :meth:`line`)."""
        out = []
        if self.kept_other:
            out.append(
                f"kept the other attempt's files for {len(self.kept_other)} task(s) that "
                f"another runner finished first: {', '.join(self.kept_other)}"
            )
        out += [f"recomputed {loc}: it was incomplete ({why})" for loc, why in self.redone]
        out += [f"incomplete {loc}: {why}" for loc, why in self.incomplete]
        if self.retried:
            out.append(f"{self.retried} attempt(s) made again after a transient failure")
        for loc, inputs in self.bad_inputs:
            listed = ", ".join(f"{i['id']} ({i['file']})" for i in inputs)
            out.append(f"skipped {len(inputs)} input(s) that cannot be decoded in {loc}: {listed}")
        return out

    @property
    def skipped_inputs(self) -> int:
        """Inputs left out of done tasks (``on_bad_input: skip``)."""
        return sum(len(inputs) for _, inputs in self.bad_inputs)


class RunEvents(Protocol):
    """What the runner tells whoever watches a run."""

    def task_started(self, location: str, datasets: int, attempt: int) -> None: ...

    def task_finished(self, result: Any, summary: RunSummary) -> None: ...

    def tick(self, summary: RunSummary) -> None: ...


class AllEvents:
    """Several watchers of a run as one :class:`RunEvents` (``None`` entries are left out):
    the runner tells one channel, whoever listens is on it."""

    def __init__(self, *watchers: RunEvents | None):
        self.watchers = [w for w in watchers if w is not None]

    def task_started(self, location: str, datasets: int, attempt: int) -> None:
        for w in self.watchers:
            w.task_started(location, datasets, attempt)

    def task_finished(self, result: Any, summary: RunSummary) -> None:
        for w in self.watchers:
            w.task_finished(result, summary)

    def tick(self, summary: RunSummary) -> None:
        for w in self.watchers:
            w.tick(summary)


# -------------------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _what(location: str, outcome: TaskOutcome, error: str | None) -> str:
    if outcome.status == "done":
        text = f"{location} done"
        if outcome.seconds is not None:
            text += f" in {outcome.seconds:.1f} s"
    elif outcome.status == "skipped":
        text = f"{location} skipped (outputs complete)"
    elif outcome.status == "incomplete":
        text = f"{location} INCOMPLETE"
    else:
        text = f"{location} FAILED: {error}"
    return f"{text} ({outcome.note})" if outcome.note else text


class TaskProgress:
    """done / total, skipped, failed, rate and ETA of a run's tasks.

    ``bar``: a tqdm bar (default: when ``stream`` is a terminal); else one plain line per
    finished task. ``total`` may be unknown (None) and change (SQS: :meth:`set_total`).
    The rate and ETA count computed tasks only (done and failed): skipped ones take no
    time and would make the estimate meaningless on a rerun.
    """

    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        bar: bool | None = None,
        label: str = "tasks",
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.bar = _isatty(self.stream) if bar is None else bar
        self.total = total
        self.started = time.monotonic()
        self._tqdm: Any = None
        if self.bar:
            from tqdm import tqdm

            self._tqdm = tqdm(
                total=total,
                desc=label,
                unit="task",
                file=self.stream,
                dynamic_ncols=True,
                smoothing=0.05,
            )

    def set_total(self, total: int | None) -> None:
        if total == self.total:
            return
        self.total = total
        if self._tqdm is not None:
            self._tqdm.total = total
            self._tqdm.refresh()

    def _computed(self, summary: RunSummary) -> int:
        return summary.done + summary.failed

    def rate_and_eta(self, summary: RunSummary) -> tuple[float | None, float | None]:
        """Tasks per minute and seconds left (None while unknown)."""
        elapsed = time.monotonic() - self.started
        computed = self._computed(summary)
        if not computed or elapsed <= 0:
            return None, None
        per_second = computed / elapsed
        if self.total is None:
            return per_second * 60, None
        left = max(0, self.total - summary.processed)
        return per_second * 60, left / per_second

    def status(self, summary: RunSummary) -> str:
        """``[3/8 38%, done=2 skipped=1 failed=0 in_flight=1, 2.1 tasks/min, ETA 0:02:23]``"""
        n = summary.processed
        if self.total:
            where = f"{n}/{self.total} {math.floor(100 * n / self.total)}%"
        else:
            where = f"{n}/?"
        rate, eta = self.rate_and_eta(summary)
        speed = f"{rate:.1f} tasks/min" if rate is not None else "rate ?"
        left = f"ETA {_clock(eta)}" if eta is not None else "ETA ?"
        counts = (
            f"done={summary.done} skipped={summary.skipped} failed={summary.failed} "
            f"in_flight={summary.in_flight}"
        )
        if summary.incomplete:
            counts += f" incomplete={len(summary.incomplete)}"
        return f"[{where}, {counts}, {speed}, {left}]"

    def line(self, result: Any, summary: RunSummary) -> str:
        """The plain line for one finished task."""
        outcome = outcome_of(result)
        return f"{self.status(summary)} {_what(result.task.location, outcome, result.error)}"

    def task_finished(self, result: Any, summary: RunSummary) -> None:
        if self._tqdm is None:
            print(self.line(result, summary), file=self.stream, flush=True)
            return
        outcome = outcome_of(result)
        self._postfix(summary, refresh=False)  # shown by update(), with the new count
        self._tqdm.update(1)
        if outcome.status in ("failed", "incomplete") or outcome.note:
            self._tqdm.write(_what(result.task.location, outcome, result.error), file=self.stream)

    def _postfix(self, summary: RunSummary, *, refresh: bool = True) -> None:
        text = (
            f"done {summary.done}, skipped {summary.skipped}, failed {summary.failed}, "
            f"in flight {summary.in_flight}"
        )
        if summary.incomplete:
            text += f", incomplete {len(summary.incomplete)}"
        self._tqdm.set_postfix_str(text, refresh=refresh)

    def tick(self, summary: RunSummary) -> None:
        if self._tqdm is not None:
            self._postfix(summary)

    def message(self, text: str) -> None:
        """A line that does not break the bar."""
        if self._tqdm is not None:
            self._tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


def _isatty(stream: Any) -> bool:
    """A terminal that can show a bar: a tty with a width (a pseudo-terminal without a
    size, as some log collectors allocate, would show tqdm's bar as nothing at all)."""
    try:
        if not stream.isatty():
            return False
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):
        return False


class StepProgress:
    """Progress of one step with a known total (the demo's archive and index steps):
    a tqdm bar on a terminal; otherwise a plain line every 10 % (and the last one)."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, bar: bool | None = None
    ):
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self._tqdm: Any = None
        self._next_line = 0
        self._started = time.monotonic()
        if _isatty(self.stream) if bar is None else bar:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=label, file=self.stream, dynamic_ncols=True)

    def update(self, done: int, note: str = "") -> None:
        if self._tqdm is not None:
            self._tqdm.update(done - self._tqdm.n)
            return
        if done < self._next_line and done < self.total:
            return
        self._next_line = done + max(1, self.total // 10)
        elapsed = time.monotonic() - self._started
        pct = math.floor(100 * done / self.total) if self.total else 100
        eta = (self.total - done) * elapsed / done if done else None
        tail = f", ETA {_clock(eta)}" if eta is not None and done < self.total else ""
        extra = f" {note}" if note else ""
        print(
            f"[{self.label} {done}/{self.total} {pct}%{tail}]{extra}", file=self.stream, flush=True
        )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


# ---------------------------------------------------------------------------- report


def config_digest(cfg: Any) -> str:
    """``sha256:<hex>`` of what decides a run's outputs: the plugin, its config, the
    product block and the COG options (the task db and output location are reported on
    their own)."""
    doc = {key: getattr(cfg, key) for key in ("plugin", "plugin_config", "product", "cog_opts")}
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class RunReport:
    """The run report (see the module doc); ``header`` holds the run's fixed facts."""

    def __init__(self, path: str | os.PathLike[str], header: Mapping[str, Any]):
        self.path = Path(path)
        self.header = dict(header)
        self.started_at = _now()
        self._t0 = time.monotonic()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._in_flight: set[str] = set()
        self._last_write = 0.0
        self._secrets = secret_values_from_environ()

    def _entry(self, location: str) -> dict[str, Any]:
        if location not in self._tasks:
            self._tasks[location] = {
                "location": location,
                "status": "not done",
                "seconds": None,
                "datasets": None,
                "bytes_written": None,
                "attempts": 0,
                "error": None,
                "note": None,
                "skipped_inputs": [],
            }
        return self._tasks[location]

    def plan(self, locations: Iterable[str]) -> None:
        """Tasks the run will do (a task db run knows them all up front)."""
        for location in locations:
            self._entry(location)

    def task_started(self, location: str, datasets: int, attempt: int) -> None:
        entry = self._entry(location)
        entry.update(datasets=datasets, attempts=attempt)
        self._in_flight.add(location)

    def task_finished(self, result: Any, summary: RunSummary) -> None:
        location = result.task.location
        outcome = outcome_of(result)
        entry = self._entry(location)
        entry.update(
            status=outcome.status,
            seconds=None if outcome.seconds is None else round(outcome.seconds, 3),
            datasets=outcome.datasets if outcome.datasets is not None else entry["datasets"],
            bytes_written=outcome.bytes_written,
            attempts=outcome.attempts or entry["attempts"],
            error=self._redact(result.error),
            note=self._redact(outcome.note) or None,
            skipped_inputs=[
                {k: self._redact(v) for k, v in item.items()} for item in outcome.skipped_inputs
            ],
        )
        self._in_flight.discard(location)

    def _redact(self, text: str | None) -> str | None:
        return None if text is None else redact_text(text, self._secrets)

    def document(self, summary: RunSummary, state: str) -> dict[str, Any]:
        tasks = []
        for entry in self._tasks.values():
            entry = dict(entry)
            if entry["location"] in self._in_flight and entry["status"] == "not done":
                entry["note"] = f"in flight when the run was {state}"
            tasks.append(entry)
        totals: dict[str, Any] = {"tasks": len(tasks)}
        for status in STATUSES:
            totals[status] = sum(t["status"] == status for t in tasks)
        totals["retried_attempts"] = summary.retried
        totals["kept_other_attempts_files"] = len(summary.kept_other)
        totals["skipped_inputs"] = sum(len(t["skipped_inputs"]) for t in tasks)
        totals["bytes_written"] = sum(t["bytes_written"] or 0 for t in tasks)
        totals["datasets_read"] = sum(
            t["datasets"] or 0 for t in tasks if t["status"] in ("done", "failed")
        )
        return {
            "odc_ndvi_run_report": 1,
            "state": state,
            "started": self.started_at,
            "updated": _now(),
            "seconds": round(time.monotonic() - self._t0, 3),
            **self.header,
            "totals": totals,
            "tasks": tasks,
        }

    def write(self, summary: RunSummary, state: str) -> None:
        """Write the report: whole or not at all (a temporary file beside it, renamed)."""
        text = json.dumps(self.document(summary, state), indent=1, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._last_write = time.monotonic()

    def write_if_due(self, summary: RunSummary) -> None:
        if time.monotonic() - self._last_write >= REPORT_EVERY_SECONDS:
            self.write(summary, "running")


class ProgressLines:
    """A :class:`RunEvents` that hands one plain progress line per finished task to
    ``emit`` (``execute(progress=print)``)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.progress = TaskProgress(None, bar=False)

    def set_total(self, total: int | None) -> None:
        self.progress.set_total(total)

    def task_started(self, location: str, datasets: int, attempt: int) -> None:
        pass

    def task_finished(self, result: Any, summary: RunSummary) -> None:
        self.emit(self.progress.line(result, summary))

    def tick(self, summary: RunSummary) -> None:
        pass


class RunObserver:
    """The CLI's :class:`RunEvents`: progress, the report (optional) and, for SQS runs,
    the total refreshed from the queue depth (``queue_depth() -> (visible, in flight)``)."""

    def __init__(
        self,
        progress: TaskProgress,
        report: RunReport | None = None,
        queue_depth: Callable[[], tuple[int, int] | None] | None = None,
    ):
        self.progress = progress
        self.report = report
        self.queue_depth = queue_depth
        self.summary = RunSummary()
        self._depth_asked = -math.inf

    def task_started(self, location: str, datasets: int, attempt: int) -> None:
        if self.report is not None:
            self.report.task_started(location, datasets, attempt)

    def task_finished(self, result: Any, summary: RunSummary) -> None:
        self.summary = summary
        self._refresh_total(summary, force=True)
        self.progress.task_finished(result, summary)
        if self.report is not None:
            self.report.task_finished(result, summary)
            self.report.write_if_due(summary)

    def tick(self, summary: RunSummary) -> None:
        self.summary = summary
        self._refresh_total(summary)
        self.progress.tick(summary)
        if self.report is not None:
            self.report.write_if_due(summary)

    def _refresh_total(self, summary: RunSummary, *, force: bool = False) -> None:
        """SQS: total = tasks processed here + the queue's messages (visible and in
        flight, ours included); approximate, as SQS's counts are."""
        if self.queue_depth is None:
            return
        now = time.monotonic()
        if now - self._depth_asked < QUEUE_DEPTH_EVERY_SECONDS and not (
            force and self.progress.total is None
        ):
            return
        self._depth_asked = now
        depth = self.queue_depth()
        if depth is not None:
            visible, in_flight = depth
            self.progress.set_total(summary.processed + visible + in_flight)

    def close(self, state: str) -> None:
        self.progress.close()
        if self.report is not None:
            self.report.write(self.summary, state)
