"""The commit protocol: a task's files are staged, then committed together, STAC item last.

Stores (:mod:`odc_ndvi_plugin.storage`: ``file://`` and ``s3://`` backends of one
``Store`` protocol) know a few operations; :func:`_commit_files` is the one commit rule
over them. Staged writes and
the commit run as dask tasks (:func:`stage_output`, :func:`commit_staged`);
:func:`discard_attempt` drops a failed attempt's staged files; :func:`sweep_stale_staging`
removes what killed processes left under ``.staging/`` (local folders and S3 prefixes);
:func:`audit_outputs` checks that a task with a STAC item really has every file its
``.sha1`` and STAC item list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from odc.stats.io import WriteResult

from .._redact import redact_url
from ..storage import Store, is_store_url, path_or_url, store_for

__all__ = [
    "STAGING_DIR",
    "STALE_STAGING_SECONDS",
    "CommitResult",
    "TransientWriteError",
    "OutputAudit",
    "Store",
    "audit_outputs",
    "commit_staged",
    "discard_attempt",
    "driver_store",
    "stage_output",
    "staging_url",
    "sweep_stale_staging",
]


class CommitResult(NamedTuple):
    """What a task's commit did: odc-stats' ``WriteResult`` fields (``path``, ``sha1``,
    ``error``) and what the run summary and report need besides."""

    path: str
    sha1: str
    error: str | None
    #: the STAC item was there already (another attempt finished the task): its files
    #: were kept and ours dropped
    kept_other: bool = False
    #: bytes this commit put under final names (staged files and the STAC item)
    bytes_written: int = 0
    #: the committed STAC item's ``properties`` (e.g. ``odc_ndvi:skipped_inputs``)
    properties: dict | None = None


_log = logging.getLogger(__name__)


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


def _worker_s3() -> Any:
    """The boto3 client odc-stats' S3ClientPlugin puts on every worker."""
    from distributed import get_worker

    return get_worker().s3_client.s3_client


def _worker_store(url: str, put_args: dict[str, str] | None) -> Store:
    """The store of ``url`` on a worker (S3: the worker's boto3 client)."""
    return store_for(url, s3_factory=_worker_s3, put_args=put_args)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf8") if isinstance(data, str) else data


class TransientWriteError(ConnectionError):
    """An output could not be written to S3 for a reason that may be gone a moment later
    (an HTTP 5xx or throttling answer, a dropped or timed-out connection) after boto3's own
    retries: the runner computes the task again (``--retries``) instead of failing it and
    spending one of its SQS message's receives. Carries the cause's text only (picklable
    on its own, as every error a worker raises)."""


#: S3 error codes worth another attempt (besides any HTTP 5xx answer)
_TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
)


def _transient_write(err: Exception) -> bool:
    """Whether a failed S3 write deserves another attempt (see :class:`TransientWriteError`);
    by class name, as botocore's connection errors have no common base of their own."""
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & {"ConnectionError", "HTTPClientError", "ReadTimeoutError", "TimeoutError"}:
        return True
    response = getattr(err, "response", None)
    if names & {"ClientError"} and isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = response.get("Error", {}).get("Code", "")
        return int(status) >= 500 or code in _TRANSIENT_S3_CODES
    return False


def _as_transient(err: Exception, what: str) -> TransientWriteError | None:
    if not _transient_write(err):
        return None
    return TransientWriteError(f"{what}: {type(err).__name__}: {err}")


# plain module functions (wrapped in dask.delayed where the graph is built, not decorated):
# distributed pickles them by reference, so a worker in this process sees this process'
# cancel registry and lock (a decorated function is pickled by value, lock and all, and fails)
def stage_output(
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
    final_path = path_or_url(final)
    try:
        store = _worker_store(staged, put_args)
        store.put(data, staged)
        with _CANCEL_LOCK:
            if _cancelled(attempt):  # its staged files were removed meanwhile: ours too
                store.remove(staged)
                return WriteResult(final_path, digest, "Cancelled")
    except Exception as err:  # noqa: BLE001 - reported as a failed write of this task
        if _cancelled(attempt):  # its staging folder was removed under the write
            return WriteResult(final_path, digest, "Cancelled")
        if (transient := _as_transient(err, f"cannot write {final}")) is not None:
            raise transient from None  # the task is tried again (not counted as written)
        _log.exception("failed to write %s", final)
        return WriteResult(final_path, digest, "Failed Write")
    return WriteResult(final_path, digest, None)


def commit_staged(
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
    props = _item_properties(data)
    path = path_or_url(url)
    try:
        store = _worker_store(url, put_args)
        # cleanup (discard_attempt) waits for a commit under way, and a commit does not
        # start on an attempt being cleaned up
        with _CANCEL_LOCK:
            if _cancelled(attempt):
                return CommitResult(path, digest, "Cancelled")
            written = _commit_files(store, data, url, staged, overwrite=overwrite)
            for src, _ in staged:  # the now empty folders this attempt staged in
                store.prune_empty(src.rsplit("/", 1)[0], _staging_root(src))
        return CommitResult(path, digest, None, written is None, written or 0, props)
    except Exception as err:  # noqa: BLE001 - reported as a failed write of this task
        if (transient := _as_transient(err, f"cannot commit {url}")) is not None:
            raise transient from None  # no STAC item yet: the task is tried again
        _log.exception("failed to commit %s", url)
        return CommitResult(url, digest, "Failed Write")


def _item_properties(item: bytes) -> dict | None:
    try:
        props = json.loads(item).get("properties")
    except (ValueError, AttributeError):
        return None
    return props if isinstance(props, dict) else None


def _staging_root(staged: str) -> str:
    """``<location>/.staging`` of a staged file's URL."""
    return staged.split(f"/{STAGING_DIR}/", 1)[0] + f"/{STAGING_DIR}"


def _commit_files(
    store: Store,
    data: bytes,
    item: str,
    staged: list[tuple[str, str]],
    *,
    overwrite: bool,
) -> int | None:
    """The commit rule, one place for every store. An existing STAC item (``item``) means
    another attempt (a redelivered SQS message, a second runner) finished the task
    meanwhile: without ``overwrite`` its files are kept and ours dropped (returns None).
    With ``overwrite`` the old item goes first, so a commit cut short leaves a task that is
    visibly not done (no STAC item) rather than old metadata over new files. Nothing here
    deletes a file under a final name that another attempt needs. Returns the bytes put
    under final names."""
    if store.exists(item) and not overwrite:
        _log.info("%s exists (another attempt finished this task): keeping its files", item)
        for src, _ in staged:
            store.remove(src)
        return None
    store.remove(item)
    written = 0
    for src, dst in staged:
        written += store.size(src)
        store.move(src, dst)
    store.put(data, item)
    return written + len(data)


def staging_url(location: str, attempt: str) -> str:
    """Where ``attempt`` stages its files under the product's ``location``."""
    return f"{location.rstrip('/')}/{STAGING_DIR}/{attempt}"


def discard_attempt(location: str, attempt: str) -> None:
    """Best-effort removal of what ``attempt`` staged under ``location``; its staged writes
    and commit still running in this process will not land afterwards. Files under final
    names are never touched (they may be another attempt's finished task)."""
    with _CANCEL_LOCK:
        _CANCELLED_ATTEMPTS.add(attempt)
        url = staging_url(location, attempt)
        try:
            store = driver_store(url)
            store.remove_tree(url)
            store.prune_empty(_staging_root(url + "/"), _staging_root(url + "/"))
        except Exception:  # noqa: BLE001 - cleanup must not mask the real failure
            _log.warning("could not remove staged files under %s", redact_url(url))


#: staged files older than this are orphans of killed attempts (no attempt runs that long:
#: odc-stats' max_processing_time and SQS leases are minutes to hours)
STALE_STAGING_SECONDS = 24 * 3600


def sweep_stale_staging(
    location: str,
    *,
    max_age: float = STALE_STAGING_SECONDS,
    dry_run: bool = False,
    now: float | None = None,
) -> list[str]:
    """Remove the ``<location>/.staging/<attempt>`` folders (or S3 prefixes) whose newest
    file is more than ``max_age`` seconds old: orphans of processes killed mid-task.

    Only staged files go: nothing under a final name, no STAC item. Give ``max_age``
    longer than any attempt lives (the longest SQS lease with its renewals, odc-stats'
    ``max_processing_time``): an attempt swept while alive only fails its own commit
    (its staged file is gone, so its STAC item is never written) and is computed again.
    ``dry_run``: only say what would go. Returns the attempts' URLs."""
    if not is_store_url(location):
        return []
    root = f"{location.rstrip('/')}/{STAGING_DIR}"
    store = driver_store(root)
    newest = store.newest_by_child(root)
    now = time.time() if now is None else now
    stale = [f"{root}/{name}" for name in sorted(newest) if now - newest[name] > max_age]
    if stale and not dry_run:
        for url in stale:
            store.remove_tree(url)
        _log.warning("Removed %d stale staging attempt(s) under %s", len(stale), redact_url(root))
    return stale


@dataclass(frozen=True)
class OutputAudit:
    """The state of a task's outputs: ``missing`` (no STAC item: not done), ``complete``
    (the STAC item and every file its ``.sha1`` and STAC item list), ``incomplete`` (a
    STAC item, but ``problem``: a listed file is missing, empty or, with ``verify``,
    does not match its ``.sha1`` digest)."""

    state: str
    problem: str = ""

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def driver_store(url: str) -> Store:
    """A store for checks made by the runner itself (not on a worker); an S3 one holds a
    new boto3 client, so keep it for the run (creating one costs ~0.4 s)."""
    return store_for(url)


def _sha1_listing(text: str) -> dict[str, str]:
    """``<digest>  <file name>`` lines of a ``.sha1`` file -> {name: digest}."""
    listed = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            listed[name] = digest
    return listed


def _asset_names(item: bytes) -> list[str]:
    """File names of a STAC item's assets in its own folder (relative hrefs)."""
    doc = json.loads(item)
    names = []
    for asset in (doc.get("assets") or {}).values():
        href = str(asset.get("href", ""))
        if href and "://" not in href and "/" not in href:
            names.append(href)
    return names


def audit_outputs(
    item_url: str, sha1_url: str, *, verify: bool = False, store: Store | None = None
) -> OutputAudit:
    """Check the outputs of a task whose STAC item is ``item_url``. Cheap: one listing of
    the task's folder and two small reads (the ``.sha1`` and the STAC item); ``verify``
    also reads every listed file and compares its SHA-1 with the ``.sha1``. ``store``: the
    :func:`driver_store` of the URL's scheme, if the caller keeps one."""
    if store is None:
        store = driver_store(item_url)
    if not store.exists(item_url):
        return OutputAudit("missing")
    folder = item_url.rsplit("/", 1)[0]
    present = store.listing(folder)
    sha1_name = sha1_url.rsplit("/", 1)[-1]
    if not present.get(sha1_name):
        return OutputAudit("incomplete", f"{sha1_name} is missing")
    listed = _sha1_listing(store.read(sha1_url).decode("utf8", "replace"))
    try:
        assets = _asset_names(store.read(item_url))
    except ValueError as err:  # json.JSONDecodeError and UnicodeDecodeError
        return OutputAudit("incomplete", f"its STAC item is not valid JSON ({err})")
    expected = list(dict.fromkeys([*listed, *assets]))
    missing = [name for name in expected if name not in present]
    empty = [name for name in expected if present.get(name) == 0]
    if missing or empty:
        problems = [f"{', '.join(missing)} missing"] if missing else []
        problems += [f"{', '.join(empty)} empty"] if empty else []
        return OutputAudit("incomplete", "; ".join(problems))
    if verify:
        changed = [
            name
            for name, digest in listed.items()
            if hashlib.sha1(store.read(f"{folder}/{name}")).hexdigest() != digest
        ]
        if changed:
            verb = "does not match its" if len(changed) == 1 else "do not match their"
            return OutputAudit("incomplete", f"{', '.join(changed)} {verb} .sha1")
    return OutputAudit("complete")
