"""One task runner for local dask, dask-gateway clusters and SQS queues.

``NDVITaskRunner`` is odc-stats' ``TaskRunner`` (same run config file, task db, task
selection, output naming, COG/STAC sink) with three changes that production needs:

* failures are contained per task: a task whose graph cannot be built or whose
  computation fails is reported (with the dataset/file named by the error) and the run
  goes on; odc-stats aborts the whole run at the first unreadable input;
* several tasks are kept in flight (``max_in_flight``) so a large cluster is not idle
  between tiles; SQS leases of running tasks are extended, a message is deleted only
  after the task's outputs are complete and released (made visible) on failure;
* the dask client comes from outside (a gateway cluster) or is a loopback-only
  ``LocalCluster``; a task's files are staged and then committed together, the STAC item
  last (``AtomicCOGSink``), so a file under its final name is always whole, the STAC item
  means "done", and a failed or duplicate attempt never removes another one's outputs.

Interruption (Ctrl-C/SIGTERM) cancels what is in flight, releases its SQS messages and
removes its staged files; a rerun then does exactly the missing tasks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dask
import xarray as xr
from distributed import Client, Future, wait
from odc.stats.io import S3COGSink, WriteResult
from odc.stats.model import Task, TaskResult, TaskRunnerConfig
from odc.stats.proc import TaskRunner

from .sqs import END, SqsTaskSource, lease

__all__ = [
    "STALE_STAGING_SECONDS",
    "AtomicCOGSink",
    "NDVITaskRunner",
    "RunSummary",
    "load_run_config",
    "sigterm_as_interrupt",
    "sweep_stale_staging",
]

_log = logging.getLogger(__name__)

#: keys of an odc-stats run config that TaskRunnerConfig takes
RUN_CONFIG_KEYS = (
    "product",
    "filedb",
    "plugin",
    "threads",
    "memory_limit",
    "output_location",
    "s3_acl",
    "overwrite",
    "max_processing_time",
    "heartbeat_filepath",
    "plugin_config",
    "cog_opts",
    "aws_unsigned",
    "job_queue_max_lease",
    "renew_safety_margin",
    "future_poll_interval",
)
#: keys odc-stats' CLI reads from the same file beside TaskRunnerConfig
CLI_ONLY_KEYS = ("dataset_filters", "apply_eodatasets3")


def load_run_config(
    config: dict[str, Any], **overrides: Any
) -> tuple[TaskRunnerConfig, dict[str, Any]]:
    """Validate an odc-stats run config mapping; unknown keys are an error naming the key.

    Returns the TaskRunnerConfig and the CLI-only extras (dataset_filters, apply_eodatasets3).
    """
    unknown = sorted(set(config) - set(RUN_CONFIG_KEYS) - set(CLI_ONLY_KEYS))
    if unknown:
        raise ValueError(
            f"run config: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(RUN_CONFIG_KEYS + CLI_ONLY_KEYS)}"
        )
    merged = {k: v for k, v in config.items() if k in RUN_CONFIG_KEYS}
    merged.update({k: v for k, v in overrides.items() if v is not None and v != ""})
    if not merged.get("plugin"):
        raise ValueError("run config: 'plugin' is required (e.g. odc_ndvi_plugin.NDVISeasonal)")
    if not merged.get("output_location"):
        raise ValueError(
            "run config: 'output_location' is required (file:///path or s3://bucket/prefix)"
        )
    scheme = urlparse(str(merged["output_location"])).scheme
    if scheme not in ("file", "s3"):
        raise ValueError(
            f"run config: output_location {merged['output_location']!r} must start with file:// or s3://"
        )
    filedb = str(merged.get("filedb") or "")
    if filedb and "://" not in filedb and not Path(filedb).exists():
        raise ValueError(f"task db {filedb!r} does not exist (make it with odc-stats save-tasks)")
    extras = {k: config[k] for k in CLI_ONLY_KEYS if k in config}
    return TaskRunnerConfig(**merged), extras


#: folder (under the product's location) where attempts stage their files before commit
STAGING_DIR = ".staging"

#: attempts whose staged files were removed: a staged write of such an attempt still
#: running in a worker thread (dask cannot stop a running task) removes its own file, and
#: its commit does nothing. Per process; across processes the missing staged files make a
#: late commit fail before its STAC item, which is what marks a task done.
_CANCELLED_ATTEMPTS: set[str] = set()
_CANCEL_LOCK = threading.Lock()


def _cancelled(attempt: str | None) -> bool:
    return attempt is not None and attempt in _CANCELLED_ATTEMPTS


def _split_s3(url: str) -> tuple[str, str]:
    u = urlparse(url)
    return u.netloc, u.path.lstrip("/")


def _worker_s3() -> Any:
    """The boto3 client odc-stats' S3ClientPlugin puts on every worker."""
    from distributed import get_worker

    return get_worker().s3_client.s3_client


def _write_local(data: bytes, path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf8") if isinstance(data, str) else data


# plain module functions (wrapped in dask.delayed where the graph is built, not decorated):
# distributed pickles them by reference, so a worker in this process sees this process'
# cancel registry and lock (a decorated function is pickled by value, lock and all, and fails)
def _stage(
    data: bytes | str,
    staged: str,
    final: str,
    with_deps: Any = None,
    attempt: str | None = None,
    put_args: dict[str, str] | None = None,
) -> WriteResult:
    """Write one output under its staging name; the result names its final path (the
    .sha1 file lists final names)."""
    data = _as_bytes(data)
    digest = hashlib.sha1(data).hexdigest()
    final_path = urlparse(final).path if final.startswith("file://") else final
    try:
        if staged.startswith("s3://"):
            bucket, key = _split_s3(staged)
            _worker_s3().put_object(Bucket=bucket, Key=key, Body=data, **(put_args or {}))
        else:
            _write_local(data, urlparse(staged).path)
            with _CANCEL_LOCK:
                if _cancelled(attempt):
                    Path(urlparse(staged).path).unlink(missing_ok=True)
                    return WriteResult(final_path, digest, "Cancelled")
    except Exception:  # noqa: BLE001 - reported as a failed write of this task
        _log.exception("failed to write %s", final)
        return WriteResult(final_path, digest, "Failed Write")
    return WriteResult(final_path, digest, None)


def _commit(
    data: bytes | str,
    url: str,
    staged: list[tuple[str, str]],
    with_deps: Any = None,
    attempt: str | None = None,
    overwrite: bool = False,
    put_args: dict[str, str] | None = None,
) -> WriteResult:
    """Move a task's staged files to their final names, then write its STAC item (``url``)
    last (:func:`_commit_files`). Runs only after every staged write succeeded
    (``with_deps``)."""
    data = _as_bytes(data)
    digest = hashlib.sha1(data).hexdigest()
    try:
        if url.startswith("s3://"):
            _commit_files(
                _S3Store(_worker_s3(), put_args or {}), data, url, staged, overwrite=overwrite
            )
            return WriteResult(url, digest, None)
        path = urlparse(url).path
        with _CANCEL_LOCK:  # cleanup (remove_staged) waits for a commit under way
            if _cancelled(attempt):
                return WriteResult(path, digest, "Cancelled")
            _commit_files(_LocalStore(), data, url, staged, overwrite=overwrite)
        return WriteResult(path, digest, None)
    except Exception:  # noqa: BLE001 - reported as a failed write of this task
        _log.exception("failed to commit %s", url)
        return WriteResult(url, digest, "Failed Write")


def _commit_files(
    store: _LocalStore | _S3Store,
    data: bytes,
    item: str,
    staged: list[tuple[str, str]],
    *,
    overwrite: bool,
) -> None:
    """The commit rule, one place for every store. An existing STAC item (``item``) means
    another attempt (a redelivered SQS message) finished the task meanwhile: without
    ``overwrite`` its files are kept and ours dropped. With ``overwrite`` the old item goes
    first, so a commit cut short leaves a task that is visibly not done (no STAC item)
    rather than old metadata over new files. Nothing here deletes a file under a final name
    that another attempt needs."""
    if store.exists(item) and not overwrite:
        _log.info("%s exists (another attempt finished this task): keeping its files", item)
        for src, _ in staged:
            store.remove(src)
        return
    store.remove(item)
    for src, dst in staged:
        store.move(src, dst)
    store.put(data, item)


class _LocalStore:
    """``file://`` URLs: renames within one file system."""

    @staticmethod
    def exists(url: str) -> bool:
        return Path(urlparse(url).path).exists()

    @staticmethod
    def remove(url: str) -> None:
        Path(urlparse(url).path).unlink(missing_ok=True)

    @staticmethod
    def move(src: str, dst: str) -> None:
        target = Path(urlparse(dst).path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(urlparse(src).path, target)

    @staticmethod
    def put(data: bytes, url: str) -> None:
        """Whole or not at all: a temp name beside the target, then a rename."""
        target = Path(urlparse(url).path)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            _write_local(data, str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class _S3Store:
    """``s3://`` URLs with a worker's boto3 client; a move is a server-side copy + delete."""

    def __init__(self, s3: Any, put_args: dict[str, str]):
        self.s3 = s3
        self.put_args = put_args

    def exists(self, url: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(url)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def remove(self, url: str) -> None:
        bucket, key = _split_s3(url)
        self.s3.delete_object(Bucket=bucket, Key=key)

    def move(self, src: str, dst: str) -> None:
        (sb, sk), (db, dk) = _split_s3(src), _split_s3(dst)
        acl = {"ACL": self.put_args["ACL"]} if "ACL" in self.put_args else {}
        self.s3.copy_object(Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk}, **acl)
        self.s3.delete_object(Bucket=sb, Key=sk)

    def put(self, data: bytes, url: str) -> None:
        bucket, key = _split_s3(url)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, **self.put_args)


class AtomicCOGSink(S3COGSink):
    """odc-stats' sink, writing each task as one commit.

    Every file of a task is first written under ``<location>/.staging/<attempt>/`` (name +
    ``.part``); when all are written, one commit moves them to their final names and
    writes the STAC item last. A reader never sees a partial file under a final name, a
    failed or cancelled attempt only leaves (and its cleanup only removes) staged files,
    and a duplicate attempt never deletes what another one finished. On S3, orphans of
    killed workers are kept out of the product's tree: expire them with a lifecycle rule
    on the ``.staging/`` prefix."""

    #: token of the task attempt whose graph ``dump`` is building (set by the runner)
    attempt: str | None = None

    def __init__(self, *args: Any, overwrite: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.overwrite = overwrite
        self._location = ""
        self._commit_url = ""
        self._staged: list[tuple[str, str]] = []

    def staging_url(self, location: str, attempt: str) -> str:
        return f"{location.rstrip('/')}/{STAGING_DIR}/{attempt}"

    def _staged_name(self, url: str) -> str:
        root = self._location.rstrip("/") + "/"
        rel = url[len(root) :] if url.startswith(root) else url.rsplit("/", 1)[-1]
        return f"{self.staging_url(self._location, str(self.attempt))}/{rel}.part"

    def dump(
        self, task: Task, proc: Any, ds: xr.Dataset, aux: Any = None, apply_eodatasets3: Any = False
    ):
        self._location = task.product.location
        self._commit_url = task.metadata_path("absolute", ext=self._stac_meta_ext)
        self._staged = []
        try:
            return super().dump(task, proc, ds, aux, apply_eodatasets3)
        finally:
            self._staged = []

    def _put_args(self, content_type: str | None) -> dict[str, str]:
        kw = {}
        if content_type is not None:
            kw["ContentType"] = content_type
        if self._acl is not None:
            kw["ACL"] = self._acl
        return kw

    def _write_blob(self, data, url: str, ContentType: str | None = None, with_deps=None):  # noqa: N803
        scheme = urlparse(url).scheme
        if scheme not in ("file", "s3"):
            raise ValueError(f"output_location: cannot write to {url!r} (file:// or s3:// only)")
        put_args = self._put_args(ContentType) if scheme == "s3" else None
        if url == self._commit_url:
            return dask.delayed(_commit, name="commit-task", pure=False)(
                data,
                url,
                list(self._staged),
                with_deps=with_deps,
                attempt=self.attempt,
                overwrite=self.overwrite,
                put_args=put_args,
            )
        staged = self._staged_name(url)
        self._staged.append((staged, url))
        return dask.delayed(_stage, name="stage-output", pure=False)(
            data, staged, url, with_deps=with_deps, attempt=self.attempt, put_args=put_args
        )

    def _ds_to_cog(self, ds: xr.Dataset, paths: dict[str, str]) -> list[Any]:
        """odc-stats calls odc-geo's ``to_cog`` on the lazy band right away, which computes
        the band while the graph is being built, in the calling process (with a gateway
        client, which is not the default client: on the local threaded scheduler) and
        one task after the other; delayed, the workers compute and encode it."""
        from odc.geo.cog import to_cog

        out = []
        for band, dv in ds.data_vars.items():
            url = paths.get(str(band))
            if url is None:
                raise ValueError(f"No path for band: '{band}'")
            cog = dask.delayed(to_cog, pure=True)(dv, **self.cog_opts(str(band)))
            out.append(self._write_blob(cog, url, ContentType="image/tiff"))
        return out

    def remove_staged(self, task: Task, attempt: str | None) -> None:
        """Best-effort removal of what a failed/cancelled attempt staged; its staged writes
        and commit still running in this process will not land afterwards. Files under
        final names are never touched (they may be another attempt's finished task)."""
        if attempt is None:
            return
        with _CANCEL_LOCK:
            _CANCELLED_ATTEMPTS.add(attempt)
            url = self.staging_url(task.product.location, attempt)
            parsed = urlparse(url)
            try:
                if parsed.scheme == "file":
                    shutil.rmtree(parsed.path, ignore_errors=True)
                    _remove_empty_dir(Path(parsed.path).parent)
                elif parsed.scheme == "s3":
                    _delete_s3_prefix(url + "/")
            except Exception:  # noqa: BLE001 - cleanup must not mask the real failure
                _log.warning("could not remove staged files under %s", url)


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (another attempt is staging) or gone


def _delete_s3_prefix(prefix_url: str) -> None:
    import boto3

    bucket, prefix = _split_s3(prefix_url)
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])


@dataclass
class RunSummary:
    """Counts and failures of one run (printed at the end, also as progress)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    in_flight: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return f"done {self.done}, skipped {self.skipped}, failed {self.failed}, in flight {self.in_flight}"


@dataclass
class _Running:
    task: Task
    future: Future
    started: float
    attempt: str | None = None
    #: SQS refused to extend the message's lease once (another runner has it, or it was
    #: deleted): renewing again every poll would only repeat the warning
    lease_lost: bool = False


class NDVITaskRunner(TaskRunner):
    """odc-stats' TaskRunner with per-task failure containment and tasks in flight."""

    def __init__(
        self,
        cfg: TaskRunnerConfig,
        *,
        client: Client | None = None,
        from_sqs: str = "",
        max_in_flight: int = 1,
        resolution: tuple[float, float] | None = None,
        on_result: Callable[[TaskResult, RunSummary], None] | None = None,
        idle_timeout: float | None = None,
    ):
        super().__init__(cfg, resolution=resolution, from_sqs=from_sqs)
        #: SQS: how long an empty queue with messages in flight elsewhere is waited on
        #: (None: the lease plus a minute, see :class:`~odc_ndvi_plugin.sqs.SqsTaskSource`)
        self.idle_timeout = idle_timeout
        self.sink = AtomicCOGSink(
            cog_opts=cfg.cog_opts, acl=cfg.s3_acl, public=cfg.s3_public, overwrite=cfg.overwrite
        )
        self._client = client
        self._owns_client = client is None
        self._workers_ready = False
        if from_sqs:
            self._close_task_db_before_reopen()
        self.max_in_flight = max(1, int(max_in_flight))
        self.summary = RunSummary()
        self._on_result = on_result

    def _close_task_db_before_reopen(self) -> None:
        """odc-stats opens the message's task db for every SQS message while the previous
        one is still open; lmdb refuses a second open of a file in one process ("already
        open in this process"), so from the second message on every task would fail."""
        rdr = self.rdr
        init_from_sqs = rdr.init_from_sqs

        def reopen(local_db_path: str) -> None:
            _close_task_db(rdr)
            init_from_sqs(local_db_path)

        rdr.init_from_sqs = reopen

    # -- dask ------------------------------------------------------------------------
    def _init_dask(self) -> Client:
        """Loopback-only local cluster (odc-stats' default binds its dashboard on 0.0.0.0)."""
        from datacube.utils.rio import configure_s3_access
        from distributed import LocalCluster
        from odc.stats.proc import S3ClientPlugin, get_max_cpu, get_max_mem

        cfg = self._cfg
        nthreads = (
            cfg.threads if cfg.threads > 0 else max(1, get_max_cpu() or 0, os.cpu_count() or 1)
        )
        memory_limit: str | int = cfg.memory_limit or max(get_max_mem() - (1 << 30), 1 << 30)
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=nthreads,
            processes=False,
            memory_limit=memory_limit,
            dashboard_address="127.0.0.1:0",
        )
        client = Client(cluster)
        if self._needs_s3():
            for c in (None, client):
                configure_s3_access(aws_unsigned=cfg.aws_unsigned, cloud_defaults=True, client=c)
        client.register_plugin(S3ClientPlugin())
        _log.info("Started local dask on 127.0.0.1 with %d threads", nthreads)
        return client

    def client(self) -> Client:
        """The run's client; an outside (gateway) client gets the worker set-up once:
        odc-stats' S3 writer uses ``worker.s3_client``, which only S3ClientPlugin sets."""
        if self._client is None:
            self._client = self._init_dask()
        elif not self._owns_client and not self._workers_ready:
            from odc.stats.proc import S3ClientPlugin

            if self.product.location.startswith("s3://"):
                self._client.register_plugin(S3ClientPlugin(), name="odc-stats-s3-client")
            self._workers_ready = True
        return self._client

    def _needs_s3(self) -> bool:
        """S3 set-up only when something is on S3: it probes for credentials (slowly) and
        changes GDAL's process-wide settings (unsigned requests break signed ones)."""
        if self.product.location.startswith("s3://"):
            return True
        if self._inputs_maybe_on_s3():
            return True
        return not self._cfg.aws_unsigned and any(
            k in os.environ
            for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
        )

    def _inputs_maybe_on_s3(self) -> bool:
        """Inputs of the first task are on S3 (unknown before the first SQS message: yes)."""
        tiles = self.rdr.all_tiles if self.rdr is not None else []
        if not tiles:
            return True
        return any(
            str(uri).startswith("s3://")
            for ds in self.rdr.datasets(tiles[0])[:1]
            for uri in ds.uris
        )

    def close(self) -> None:
        _close_task_db(self.rdr)  # else the next run in this process cannot open it
        if self._client is not None and self._owns_client:
            cluster = getattr(self._client, "cluster", None)
            self._client.close()
            if cluster is not None:
                cluster.close()
        self._client = None

    def __del__(self):  # odc-stats' __del__ would start a cluster just to close it
        pass

    # -- one task ----------------------------------------------------------------------
    def _graph(self, task: Task, apply_eodatasets3: bool) -> Any:
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
        ds = self.client().persist(ds)
        aux = None
        if "rgba" in cfg.cog_opts.get("overrides", {}):
            rgba = proc.rgba(ds)
            if rgba is not None:
                aux = xr.Dataset({"rgba": rgba})
        self.sink.attempt = uuid.uuid4().hex
        return self.sink.dump(task, proc, ds, aux, apply_eodatasets3)

    def _record(self, result: TaskResult) -> TaskResult:
        s = self.summary
        if result.skipped:
            s.skipped += 1
        elif result:
            s.done += 1
        else:
            s.failed += 1
            s.errors.append((result.task.location, str(result.error)))
        if self._on_result is not None:
            self._on_result(result, s)
        return result

    def _finish(self, running: _Running) -> TaskResult:
        task, tk = running.task, running.task.source
        try:
            rr: WriteResult = running.future.result()
            error = None if rr.error is None else f"failed to write {rr.path}"
            path = rr.path
        except Exception as err:  # noqa: BLE001 - contained per task by design
            error, path = f"{type(err).__name__}: {err}", ""
        finally:
            # the client keeps a failed future's exception, whose traceback now holds this
            # frame and so the future itself: never released, its (deterministic) erred
            # input keys stay on the scheduler and a retry of the task with this client
            # fails at once with the old error, without reading its inputs again
            running.future.release()
        if error is None:
            _log.info("Finished %s", task.location)
            lease(tk, "done")
            return TaskResult(task, path)
        _log.error("Task %s failed: %s", task.location, error)
        self.sink.remove_staged(task, running.attempt)
        lease(tk, "cancel")
        return TaskResult(task, error=error)

    def _fail_early(self, task: Task, err: Exception) -> TaskResult:
        error = f"{type(err).__name__}: {err}"
        _log.error("Task %s failed before computing: %s", task.location, error)
        lease(task.source, "cancel")
        return TaskResult(task, error=error)

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
                yield self._finish(r)
            elif cfg.max_processing_time > 0 and now - r.started > cfg.max_processing_time:
                running.remove(r)
                r.future.cancel()
                self.sink.remove_staged(r.task, r.attempt)
                lease(r.task.source, "cancel")
                yield TaskResult(
                    r.task, error=f"cancelled after max_processing_time={cfg.max_processing_time}s"
                )
            else:
                self._renew_lease(r)
        if cfg.heartbeat_filepath is not None:
            self._register_heartbeat(cfg.heartbeat_filepath)

    def run(
        self,
        tasks: list[str] | None = None,
        sqs: Any = None,
        ds_filters: str | None = None,
        apply_eodatasets3: bool | None = False,
    ) -> Iterator[TaskResult]:
        """odc-stats' ``run``; from SQS, messages are received only when a slot is free
        (:class:`~odc_ndvi_plugin.sqs.SqsTaskSource`), never held while waiting for one."""
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
        self.summary.failed += 1
        self.summary.errors.append((location, error))

    def _schedule(self, source: _IterSource | SqsTaskSource, apply_eodatasets3: bool):
        """Keep up to ``max_in_flight`` tasks computing. The next task is taken from
        ``source`` only when a slot is free: an SQS message is received only then, so no
        message is ever held without its lease being renewed or released."""
        client = self.client()
        running: list[_Running] = []
        try:
            while True:
                while len(running) >= self.max_in_flight:
                    yield from self._poll_and_record(running)
                task = source.receive(busy=bool(running))
                if task is END:
                    break
                if task is None:  # nothing to take now: look after what runs, ask again
                    if running:
                        yield from self._poll_and_record(running)
                    continue
                started = self._start(task, client, apply_eodatasets3)
                source.handed_over()
                if isinstance(started, TaskResult):
                    yield self._record(started)
                    continue
                running.append(started)
                self.summary.in_flight = len(running)
                # leases are otherwise renewed only while polling: receiving the next
                # message and building its graph can outlast a short lease
                for r in running:
                    self._renew_lease(r)
            while running:
                yield from self._poll_and_record(running)
        except BaseException:
            _log.warning("Interrupted: cancelling %d task(s) in flight", len(running))
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

    def _start(self, task: Task, client: Client, apply_eodatasets3: bool) -> _Running | TaskResult:
        """Submit ``task``; a finished (skipped) task or one whose graph cannot be built
        comes back as its result, its message done or released."""
        if not self._cfg.overwrite and self.sink.exists(task):
            _log.info("Skipped %s (STAC item exists)", task.location)
            lease(task.source, "done")
            return TaskResult(task, self.sink.uri(task), skipped=True)
        try:
            graph = self._graph(task, apply_eodatasets3)
        except Exception as err:  # noqa: BLE001 - contained per task by design
            return self._fail_early(task, err)
        _log.info("Submitting %s (%d datasets)", task.location, len(task.datasets))
        return _Running(task, client.compute(graph), time.monotonic(), self.sink.attempt)


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


def _close_task_db(rdr: Any) -> None:
    cache = getattr(rdr, "_dscache", None)
    if hasattr(cache, "close"):  # a DatasetCache (a str placeholder before any SQS message)
        cache.close()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block (Kubernetes stops pods with SIGTERM)."""

    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_output_location(location: str) -> None:
    """Fail before any work if ``location`` cannot be written (names the target)."""
    parsed = urlparse(location)
    probe_name = f".odc-ndvi-write-probe-{uuid.uuid4().hex[:8]}"
    if parsed.scheme == "file":
        folder = Path(parsed.path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / probe_name
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"output_location {location!r} is not writable: {err}") from err
    elif parsed.scheme == "s3":
        import boto3

        key = f"{parsed.path.strip('/')}/{probe_name}".lstrip("/")
        try:
            s3 = boto3.client("s3")
            s3.put_object(Bucket=parsed.netloc, Key=key, Body=b"")
            s3.delete_object(Bucket=parsed.netloc, Key=key)
        except Exception as err:  # noqa: BLE001 - any failure means "cannot write there"
            raise ValueError(f"output_location {location!r} is not writable: {err}") from err


def _sqs_queue(name_or_url: str) -> Any:
    """odc-stats looks a queue up by name only; a queue URL is opened as it is."""
    if "://" not in name_or_url:
        return name_or_url
    import boto3

    return boto3.resource("sqs").Queue(name_or_url)


#: staged files older than this are orphans of killed attempts (no attempt runs that long:
#: odc-stats' max_processing_time and SQS leases are minutes to hours)
STALE_STAGING_SECONDS = 24 * 3600


def sweep_stale_staging(location: str, *, max_age: float = STALE_STAGING_SECONDS) -> list[str]:
    """Remove ``<location>/.staging/<attempt>`` folders untouched for ``max_age`` seconds
    (left by processes that were killed mid-task); local locations only (on S3 a
    lifecycle rule on the prefix does this). Returns what was removed."""
    parsed = urlparse(location)
    if parsed.scheme != "file":
        return []
    root = Path(parsed.path) / STAGING_DIR
    if not root.is_dir():
        return []
    now, removed = time.time(), []
    for attempt in root.iterdir():
        try:
            newest = max(
                (p.stat().st_mtime for p in attempt.rglob("*")), default=attempt.stat().st_mtime
            )
        except OSError:
            continue  # being removed by its own attempt
        if now - newest > max_age:
            shutil.rmtree(attempt, ignore_errors=True)
            removed.append(str(attempt))
    if removed:
        _log.warning("Removed %d stale staging folder(s) under %s", len(removed), root)
    return removed


def preflight(runner: NDVITaskRunner, *, from_sqs: str = "") -> None:
    """Checks that fail the whole run before any task: output writable, inputs readable;
    and a sweep of staged files that killed attempts left behind."""
    check_output_location(runner.product.location)
    sweep_stale_staging(runner.product.location)
    if from_sqs:
        return
    validate = getattr(runner.proc, "validate_product", None)
    tiles = runner.rdr.all_tiles
    if validate is None or not tiles:
        return
    for ds in runner.rdr.datasets(tiles[0])[:1]:
        validate(ds.product)


def execute(
    cfg: TaskRunnerConfig,
    *,
    tasks: list[str] | None = None,
    from_sqs: str = "",
    client: Client | None = None,
    max_in_flight: int = 1,
    dataset_filters: str | None = None,
    apply_eodatasets3: bool = False,
    progress: Callable[[str], None] | None = None,
    idle_timeout: float | None = None,
) -> RunSummary:
    """Run tasks from a task db (``tasks``: ids/indices/slices, empty = all) or an SQS queue."""

    def report(result: TaskResult, summary: RunSummary) -> None:
        if progress is None:
            return
        what = "skipped" if result.skipped else ("done" if result else f"FAILED: {result.error}")
        progress(f"[{summary.line()}] {result.task.location} {what}")

    runner = NDVITaskRunner(
        cfg,
        client=client,
        from_sqs=from_sqs,
        max_in_flight=max_in_flight,
        on_result=report,
        idle_timeout=idle_timeout,
    )
    try:
        preflight(runner, from_sqs=from_sqs)
        results = (
            runner.run(
                sqs=_sqs_queue(from_sqs),
                ds_filters=dataset_filters,
                apply_eodatasets3=apply_eodatasets3,
            )
            if from_sqs
            else runner.run(
                tasks=list(tasks or []),
                ds_filters=dataset_filters,
                apply_eodatasets3=apply_eodatasets3,
            )
        )
        with sigterm_as_interrupt():
            for _ in results:
                pass
    finally:
        runner.close()
    return runner.summary
