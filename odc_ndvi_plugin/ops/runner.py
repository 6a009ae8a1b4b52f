"""One task runner for local dask, dask-gateway clusters and SQS queues.

``NDVITaskRunner`` is odc-stats' ``TaskRunner`` (same run config file, task db, task
selection, output naming, COG/STAC sink) with three changes that production needs:

* failures are contained per task: a task whose graph cannot be built or whose
  computation fails is reported (with the dataset/file named by the error) and the run
  goes on; odc-stats aborts the whole run at the first unreadable input;
* several tasks are kept in flight (``max_in_flight``) so a large cluster is not idle
  between tiles; SQS leases of running tasks are extended, a message is deleted only
  after the task's outputs are complete and released (made visible) on failure;
* a task's files are staged and then committed together, the STAC item last
  (``AtomicCOGSink``), so a file under its final name is always whole, the STAC item
  means "done", and a failed or duplicate attempt never removes another one's outputs.

The runner schedules tasks on the dask client it is given (:meth:`NDVITaskRunner.attach`);
setting a run up (local cluster, S3 access, output probe, queue, preflight checks) is
:mod:`.session`'s (:func:`~odc_ndvi_plugin.ops.session.execute`).

Besides: a task whose STAC item exists is skipped only if every file its ``.sha1`` and
STAC item list is there (``verify``: and matches its digest); an incomplete one is
computed again (or, with ``incomplete="report"``, only reported). A task that fails for a
transient reason (:mod:`~odc_ndvi_plugin._transient`) is submitted again, up to
``retries`` times, before it counts as failed. Whoever watches the run (progress, the run
report) gets :class:`~odc_ndvi_plugin.ops.report.RunEvents`, the one channel for them.

Interruption (Ctrl-C/SIGTERM) cancels what is in flight, releases its SQS messages and
removes its staged files; a rerun then does exactly the missing tasks.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
from distributed import Client, Future, wait
from odc.stats.model import Task, TaskResult, TaskRunnerConfig
from odc.stats.proc import TaskRunner

from .._transient import retry_reason
from ..item import persist_with_item_properties
from ..load import SKIPPED_INPUTS
from .report import RunEvents, RunSummary, TaskOutcome, outcome_of
from .runconfig import load_run_config
from .signals import interrupts_deferred
from .sink import AtomicCOGSink
from .sqs import END, SqsTaskSource, lease
from .taskdb import check_task_db

__all__ = [
    "DEFAULT_RETRIES",
    "INCOMPLETE_POLICIES",
    "AtomicCOGSink",
    "NDVITaskRunner",
    "RunSummary",
    "load_run_config",
]

_log = logging.getLogger(__name__)

#: attempts made again after a transient failure, before a task counts as failed
DEFAULT_RETRIES = 2
#: what happens to a task with a STAC item whose files are not all there: ``redo``
#: computes it again, ``report`` only reports it (status ``incomplete``, exit status 1)
INCOMPLETE_POLICIES = ("redo", "report")


@dataclass
class _Running:
    task: Task
    future: Future
    started: float
    attempt: str | None = None
    #: SQS refused to extend the message's lease once (another runner has it, or it was
    #: deleted): renewing again every poll would only repeat the warning
    lease_lost: bool = False
    #: attempts so far (1 = the first); the first one's start, for the task's seconds
    attempts: int = 1
    first_started: float = 0.0
    #: why the task is computed again although it has a STAC item (incomplete outputs)
    redo: str = ""


class NDVITaskRunner(TaskRunner):
    """odc-stats' TaskRunner with per-task failure containment and tasks in flight."""

    def __init__(
        self,
        cfg: TaskRunnerConfig,
        *,
        from_sqs: str = "",
        max_in_flight: int = 1,
        resolution: tuple[float, float] | None = None,
        idle_timeout: float | None = None,
        retries: int = DEFAULT_RETRIES,
        verify: bool = False,
        incomplete: str = "redo",
        events: RunEvents | None = None,
    ):
        if incomplete not in INCOMPLETE_POLICIES:
            raise ValueError(f"incomplete must be one of {', '.join(INCOMPLETE_POLICIES)}")
        if from_sqs and incomplete == "report":
            # a task only reported would leave its message to circulate until the DLQ
            raise ValueError("incomplete='report' cannot be used with SQS runs")
        if not from_sqs and cfg.filedb:
            check_task_db(cfg.filedb)  # before LMDB maps it: a truncated db is a SIGBUS
        super().__init__(cfg, resolution=resolution, from_sqs=from_sqs)
        self.retries = max(0, int(retries))
        self.verify = verify
        self.incomplete = incomplete
        self._events = events
        self._source: _IterSource | SqsTaskSource | None = None
        self._apply_eodatasets3 = False
        #: SQS: how long an empty queue with messages in flight elsewhere is waited on
        #: (None: the lease plus a minute, see :class:`~odc_ndvi_plugin.ops.sqs.SqsTaskSource`)
        self.idle_timeout = idle_timeout
        self.sink = AtomicCOGSink(
            cog_opts=cfg.cog_opts, acl=cfg.s3_acl, public=cfg.s3_public, overwrite=cfg.overwrite
        )
        self._client: Client | None = None
        if from_sqs:
            self._close_task_db_before_reopen()
        self.max_in_flight = max(1, int(max_in_flight))
        self.summary = RunSummary()
        #: the task just handed to the scheduler, until it is among those running
        self._submitted: _Running | None = None

    def _close_task_db_before_reopen(self) -> None:
        """odc-stats opens the message's task db for every SQS message while the previous
        one is still open; lmdb refuses a second open of a file in one process ("already
        open in this process"), so from the second message on every task would fail."""
        rdr = self.rdr
        init_from_sqs = rdr.init_from_sqs

        def reopen(local_db_path: str) -> None:
            _close_task_db(rdr)
            check_task_db(local_db_path)  # a message's db, downloaded: checked like a local one
            init_from_sqs(local_db_path)

        rdr.init_from_sqs = reopen

    # -- dask ------------------------------------------------------------------------
    def attach(self, client: Client) -> None:
        """The client the tasks run on, set up by the session (:mod:`.session`: a local
        cluster, or a gateway cluster's client with its workers prepared)."""
        self._client = client

    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError(
                "NDVITaskRunner runs tasks on the client it is given: "
                "odc_ndvi_plugin.ops.session.execute sets one up"
            )
        return self._client

    def close(self) -> None:
        """The task db closed (else the next run in this process cannot open it); the
        client's futures of this run released (the session closes a client it made)."""
        _close_task_db(self.rdr)
        if self._client is not None:
            _wait_for_releases(self._client)
        self._client = None

    def __del__(self):  # odc-stats' __del__ would start a cluster just to close it
        pass

    # -- one task ----------------------------------------------------------------------
    def _graph(self, task: Task, apply_eodatasets3: bool, *, replace: bool = False) -> Any:
        """The task's graph; ``replace``: its commit replaces an existing STAC item (as
        with ``overwrite``: an incomplete task computed again)."""
        proc, cfg = self.proc, self._cfg
        ds = proc.reduce(
            proc.input_data(
                task.datasets,
                task.geobox,
                transform_code=proc.transform_code,
                area_of_interest=proc.area_of_interest,
            )
        )
        # persist before the sink: it encodes each band as its own graph, so without
        # this every output band re-runs the whole load (measured 7x slower: benchmarks/)
        ds = persist_with_item_properties(self.client(), ds)
        aux = None
        if "rgba" in cfg.cog_opts.get("overrides", {}):
            rgba = proc.rgba(ds)
            if rgba is not None:
                aux = xr.Dataset({"rgba": rgba})
        self.sink.attempt = uuid.uuid4().hex
        self.sink.overwrite = cfg.overwrite or replace
        return self.sink.dump(task, proc, ds, aux, apply_eodatasets3)

    def _record(self, result: TaskResult) -> TaskResult:
        s = self.summary
        outcome = outcome_of(result)
        if outcome.status == "incomplete":
            s.incomplete.append((result.task.location, outcome.note))
        elif result.skipped:
            s.skipped += 1
        elif result:
            s.done += 1
        else:
            s.failed += 1
            s.errors.append((result.task.location, str(result.error)))
        if self._events is not None:
            self._events.task_finished(result, s)
        return result

    def _outcome(self, running: _Running, status: str, **kw: Any) -> TaskOutcome:
        return TaskOutcome(
            status,
            seconds=time.monotonic() - running.first_started,
            datasets=len(running.task.datasets),
            attempts=running.attempts,
            **kw,
        )

    def _finish(self, running: _Running) -> TaskResult | _Running:
        """The result of a finished future, or the next attempt at the task when it
        failed for a transient reason and has retries left."""
        task, tk = running.task, running.task.source
        failure: BaseException | None = None
        try:
            rr = running.future.result()
            error = None if rr.error is None else f"failed to write {rr.path}"
            path = rr.path
        except Exception as err:  # noqa: BLE001 - contained per task by design
            error, path, rr, failure = f"{type(err).__name__}: {err}", "", None, err
        finally:
            # the client keeps a failed future's exception, whose traceback now holds this
            # frame and so the future itself: never released, its (deterministic) erred
            # input keys stay on the scheduler and a retry of the task with this client
            # fails at once with the old error, without reading its inputs again
            running.future.release()
        if error is None:
            _log.info("Finished %s", task.location)
            lease(tk, "done")
            notes = []
            if getattr(rr, "kept_other", False):
                notes.append("kept the other attempt's files")
                self.summary.kept_other.append(task.location)
            if running.redo:
                notes.append(f"was incomplete: {running.redo}")
                self.summary.redone.append((task.location, running.redo))
            props = getattr(rr, "properties", None) or {}
            bad = tuple(props.get(SKIPPED_INPUTS) or ())
            if bad:
                notes.append(f"{len(bad)} input(s) that cannot be decoded skipped")
                self.summary.bad_inputs.append((task.location, bad))
                for item in bad:
                    _log.warning("Task %s: skipped %s", task.location, item["reason"])
            outcome = self._outcome(
                running,
                "done",
                bytes_written=getattr(rr, "bytes_written", None),
                note="; ".join(notes),
                skipped_inputs=bad,
            )
            return TaskResult(task, path, meta=outcome)
        self.sink.remove_staged(task, running.attempt)
        reason = retry_reason(failure) if failure is not None else None
        if reason is not None and running.attempts <= self.retries:
            _log.warning(
                "Task %s failed (%s: %s); attempt %d of %d",
                task.location,
                reason,
                error,
                running.attempts + 1,
                self.retries + 1,
            )
            self.summary.retried += 1
            return self._submit(
                task,
                attempts=running.attempts + 1,
                first_started=running.first_started,
                redo=running.redo,
            )
        _log.log(self._failure_level, "Task %s failed: %s", task.location, error)
        lease(tk, "cancel")
        if running.attempts > 1:
            error = f"{error} (after {running.attempts} attempts)"
        return TaskResult(task, error=error, meta=self._outcome(running, "failed"))

    def _fail_early(self, task: Task, err: Exception) -> TaskResult:
        error = f"{type(err).__name__}: {err}"
        _log.log(self._failure_level, "Task %s failed before computing: %s", task.location, error)
        lease(task.source, "cancel")
        outcome = TaskOutcome("failed", datasets=len(task.datasets), attempts=1)
        return TaskResult(task, error=error, meta=outcome)

    @property
    def _failure_level(self) -> int:
        """A failed task is an error in the log, unless a watcher (the CLI's progress)
        reports it: then its one line is the watcher's and the log's record is detail."""
        return logging.INFO if self._events is not None else logging.ERROR

    def _cancel_all(self, running: list[_Running]) -> None:
        for r in running:
            r.future.cancel()
            lease(r.task.source, "cancel")
        for r in running:
            self.sink.remove_staged(r.task, r.attempt)

    def _renew_lease(self, r: _Running) -> None:
        """Extend a running task's SQS lease when it is about to lapse (once lost: no more)."""
        if r.lease_lost:
            return
        cfg = self._cfg
        if not lease(
            r.task.source, "extend_if_needed", cfg.job_queue_max_lease, cfg.renew_safety_margin
        ):
            r.lease_lost = True
            _log.warning(
                "Task %s: its SQS lease is lost; computing on (the commit keeps any finished "
                "outputs of another runner)",
                r.task.location,
            )

    def _poll(self, running: list[_Running]) -> Iterator[TaskResult]:
        """Wait for at least one task (or a poll interval); yield finished ones."""
        cfg = self._cfg
        # as_current: distributed.wait() uses the *default* client, and a gateway
        # client is not one (set_as_default=False) -> "No clients found".
        # TimeoutError: wait() raises it when nothing finished within the interval,
        # which is the normal case for tasks longer than future_poll_interval.
        try:
            with self.client().as_current():
                wait(
                    [r.future for r in running],
                    timeout=cfg.future_poll_interval,
                    return_when="FIRST_COMPLETED",
                )
        except TimeoutError:
            pass
        now = time.monotonic()
        for r in list(running):
            if r.future.done():
                running.remove(r)
                finished = self._finish(r)
                if isinstance(finished, _Running):  # the next attempt, computing
                    running.append(finished)
                    self._submitted = None
                else:
                    yield finished
            elif cfg.max_processing_time > 0 and now - r.started > cfg.max_processing_time:
                running.remove(r)
                r.future.cancel()
                self.sink.remove_staged(r.task, r.attempt)
                lease(r.task.source, "cancel")
                yield TaskResult(
                    r.task,
                    error=f"cancelled after max_processing_time={cfg.max_processing_time}s",
                    meta=self._outcome(r, "failed"),
                )
            else:
                self._renew_lease(r)
        self._beat()
        if self._events is not None:
            self._events.tick(self.summary)

    def _beat(self) -> None:
        """The liveness file (``heartbeat_filepath``, odc-stats' format: the UTC time)
        written again: while tasks compute (every poll) and while the runner waits for or
        takes tasks, so a Kubernetes probe of its age sees a live runner, never a half
        written file (a temporary file renamed over it)."""
        path = self._cfg.heartbeat_filepath
        if not path:
            return
        import datetime as dt

        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(stamp, encoding="utf-8")
            os.replace(tmp, target)
        except OSError as err:  # a probe then restarts the pod: say why
            _log.warning("Cannot write the heartbeat file %s: %s", path, err)

    def run(
        self,
        tasks: list[str] | None = None,
        sqs: Any = None,
        ds_filters: str | None = None,
        apply_eodatasets3: bool | None = False,
    ) -> Iterator[TaskResult]:
        """odc-stats' ``run``; from SQS, messages are received only when a slot is free
        (:class:`~odc_ndvi_plugin.ops.sqs.SqsTaskSource`), never held while waiting for one."""
        if sqs is None:
            return super().run(
                tasks=tasks, ds_filters=ds_filters, apply_eodatasets3=apply_eodatasets3
            )
        cfg = self._cfg
        _log.info("Processing from SQS: %s, lease %s s", sqs, cfg.job_queue_max_lease)
        source = SqsTaskSource(
            sqs,
            self.rdr,
            lease_seconds=cfg.job_queue_max_lease,
            ds_filters=ds_filters,
            idle_timeout=self.idle_timeout,
            poll_seconds=cfg.future_poll_interval,
            on_failure=self._record_failure,
        )
        return self._schedule(source, bool(apply_eodatasets3))

    def _run(self, tasks: Iterable[Task], apply_eodatasets3) -> Iterator[TaskResult]:
        return self._schedule(_IterSource(tasks), bool(apply_eodatasets3))

    def _record_failure(self, location: str, error: str) -> None:
        """An SQS message that names no usable task (e.g. its task db is corrupt)."""
        self.summary.failed += 1
        self.summary.errors.append((location, error))
        if self._events is not None:
            self._events.task_finished(_MessageFailure(_Named(location), error), self.summary)

    def queue_depth(self) -> tuple[int, int] | None:
        """SQS runs: the queue's (visible, in flight) message counts; None otherwise or
        when they cannot be read."""
        if not isinstance(self._source, SqsTaskSource):
            return None
        try:
            depth = self._source.depth()
        except Exception as err:  # noqa: BLE001 - only for the progress total
            _log.info("SQS queue depth cannot be read: %s", err)
            return None
        return depth.visible, depth.in_flight

    def planned(self, tasks: list[str] | None = None) -> list[str]:
        """Locations of the tasks a task-db run of ``tasks`` (ids, indices or slices as
        ``odc-stats run``; empty = all) will do, in order, without loading them."""
        from odc.stats.model import DateTimeRange

        from .._compat import parse_all_tasks

        tiles = parse_all_tasks(list(tasks), self.rdr.all_tiles) if tasks else self.rdr.all_tiles
        return [
            Task(self.product, (x, y), None, DateTimeRange(period), ()).location
            for period, x, y in tiles
        ]

    def _schedule(self, source: _IterSource | SqsTaskSource, apply_eodatasets3: bool):
        """Keep up to ``max_in_flight`` tasks computing. The next task is taken from
        ``source`` only when a slot is free: an SQS message is received only then, so no
        message is ever held without its lease being renewed or released."""
        self.client()
        self._source = source
        self._apply_eodatasets3 = apply_eodatasets3
        running: list[_Running] = []
        try:
            while True:
                while len(running) >= self.max_in_flight:
                    yield from self._poll_and_record(running)
                self._beat()  # also while waiting for an SQS message
                task = source.receive(busy=bool(running))
                if task is END:
                    break
                if task is None:  # nothing to take now: look after what runs, ask again
                    if running:
                        yield from self._poll_and_record(running)
                    continue
                started = self._start(task)
                source.handed_over()
                if isinstance(started, TaskResult):
                    yield self._record(started)
                    continue
                running.append(started)
                self._submitted = None
                self.summary.in_flight = len(running)
                # leases are otherwise renewed only while polling: receiving the next
                # message and building its graph can outlast a short lease
                for r in running:
                    self._renew_lease(r)
            while running:
                yield from self._poll_and_record(running)
        except BaseException as err:
            if self._submitted is not None and self._submitted not in running:
                running.append(self._submitted)  # submitted, not yet taken into account
            # an error (e.g. the queue gone) is said by the caller; only a signal interrupts
            why = (
                f"Stopping on {type(err).__name__}" if isinstance(err, Exception) else "Interrupted"
            )
            _log.warning("%s: cancelling %d task(s) in flight", why, len(running))
            source.release_held()
            self._cancel_all(running)
            running.clear()
            raise
        finally:
            self.summary.in_flight = len(running)

    def _poll_and_record(self, running: list[_Running]) -> Iterator[TaskResult]:
        for result in self._poll(running):
            self.summary.in_flight = len(running)
            yield self._record(result)

    def _start(self, task: Task) -> _Running | TaskResult:
        """Submit ``task``; a finished (skipped) task, an incomplete one only reported or
        one whose outputs cannot be checked or graph built comes back as its result, its
        message done or released."""
        redo = ""
        problem = task_period_problem(self.proc, task.time_range.short)
        if problem is not None:
            return self._fail_early(task, ValueError(f"task {task.location}: {problem}"))
        if not self._cfg.overwrite:
            try:
                audit = self.sink.audit(task, verify=self.verify)
            except Exception as err:  # noqa: BLE001 - contained per task by design
                return self._fail_early(task, RuntimeError(f"cannot check its outputs: {err}"))
            if audit.complete:
                _log.info("Skipped %s (STAC item exists, outputs complete)", task.location)
                lease(task.source, "done")
                return TaskResult(task, self.sink.uri(task), skipped=True)
            if audit.state == "incomplete" and self.incomplete == "report":
                _log.warning(
                    "Task %s is incomplete: %s (reported, not computed again)",
                    task.location,
                    audit.problem,
                )
                outcome = TaskOutcome("incomplete", note=audit.problem)
                return TaskResult(task, self.sink.uri(task), skipped=True, meta=outcome)
            if audit.state == "incomplete":
                _log.warning(
                    "Task %s has a STAC item but is incomplete (%s): computing it again",
                    task.location,
                    audit.problem,
                )
                redo = audit.problem
        return self._submit(task, attempts=1, first_started=time.monotonic(), redo=redo)

    def _submit(
        self, task: Task, *, attempts: int, first_started: float, redo: str
    ) -> _Running | TaskResult:
        """Build ``task``'s graph and start computing it (attempt number ``attempts``)."""
        try:
            graph = self._graph(task, self._apply_eodatasets3, replace=bool(redo))
        except Exception as err:  # noqa: BLE001 - contained per task by design
            return self._fail_early(task, err)
        now = time.monotonic()
        # an interrupt while the graph is handed to the scheduler waits until the task
        # is known (else its computation would go on, unseen by the cancellation); once
        # "Submitting" is logged, an interrupt cancels it
        with interrupts_deferred():
            started = _Running(
                task,
                self.client().compute(graph),
                now,
                self.sink.attempt,
                attempts=attempts,
                first_started=first_started,
                redo=redo,
            )
            self._submitted = started
            _log.info("Submitting %s (%d datasets)", task.location, len(task.datasets))
            if self._events is not None:
                self._events.task_started(task.location, len(task.datasets), attempts)
        return started

    def dry_run_states(
        self, tasks: list[str], ds_filters: str | None = None
    ) -> Iterator[tuple[Task, str, str]]:
        """``(task, state, line)`` per task: ``state`` is ``new``, ``skip``, ``recompute``
        (``overwrite``) or ``incomplete``; ``line`` is odc-stats' dry-run line with the
        state: ``(new)``, ``(skip)``, ``(recompute)`` or ``(incomplete: <problem>;
        recompute|report only)``."""
        overwrite = self._cfg.overwrite
        action = "recompute" if self.incomplete == "redo" else "report only"
        for task in self.tasks(tasks, ds_filters=ds_filters):
            uri = self.sink.uri(task)
            audit = self.sink.audit(task, verify=self.verify)
            if audit.state == "missing":
                state, flag = "new", "new"
            elif overwrite:
                state, flag = "recompute", "recompute"
            elif audit.complete:
                state, flag = "skip", "skip"
            else:
                state, flag = "incomplete", f"incomplete: {audit.problem}; {action}"
            ndays = len({ds.center_time.date() for ds in task.datasets})
            line = f"{task.location} days={ndays:03} ds={len(task.datasets):04} {uri} ({flag})"
            yield task, state, line

    def dry_run(
        self,
        tasks: list[str],
        check_exists: bool = True,
        ds_filters: str | None = None,
    ) -> Iterator[TaskResult]:
        """odc-stats' dry run (``meta``: the line of :meth:`dry_run_states`)."""
        for task, state, line in self.dry_run_states(tasks, ds_filters):
            yield TaskResult(task, self.sink.uri(task), skipped=state == "skip", meta=line)


@dataclass(frozen=True)
class _Named:
    location: str


@dataclass(frozen=True)
class _MessageFailure:
    """A failure that is no task's (shaped like odc-stats' ``TaskResult`` for watchers)."""

    task: _Named
    error: str
    skipped: bool = False
    meta: TaskOutcome = TaskOutcome("failed")

    def __bool__(self) -> bool:
        return False


class _IterSource:
    """Tasks of a task db (or any iterable) in the scheduler's ``receive`` protocol."""

    held = None

    def __init__(self, tasks: Iterable[Task]):
        self._tasks = iter(tasks)

    def receive(self, *, busy: bool) -> Any:
        return next(self._tasks, END)

    def handed_over(self) -> None:
        pass

    def release_held(self) -> None:
        pass


async def _nothing() -> None:
    return None


def _wait_for_releases(client: Client) -> None:
    """``Future.release()`` only queues the release on the client's event loop: run one
    no-op there after them, so that when a run with an outside (gateway) client returns,
    the client holds none of its futures (its next run starts clean)."""
    try:
        client.sync(_nothing)
    except Exception as err:  # noqa: BLE001 - a client that is gone holds nothing
        _log.debug("client gone while waiting for releases: %s", err)


def _close_task_db(rdr: Any) -> None:
    cache = getattr(rdr, "_dscache", None)
    if hasattr(cache, "close"):  # a DatasetCache (a str placeholder before any SQS message)
        cache.close()


def task_period_problem(proc: Any, period: str) -> str | None:
    """What the plugin says about a task's period (climatology/anomaly modes need whole
    blocks / one season; odc-stats does not hand the plugin the period, so the runner asks)."""
    check = getattr(proc, "period_problem", None)
    return None if check is None else check(period)
