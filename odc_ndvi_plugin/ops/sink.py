"""``AtomicCOGSink``: odc-stats' COG/STAC sink, each task written as one commit."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import dask
import xarray as xr
from odc.stats.io import S3COGSink
from odc.stats.model import Task

from ..cogs import delayed_ds_to_cog
from ..storage import is_store_url
from .commit import (
    OutputAudit,
    Store,
    audit_outputs,
    commit_staged,
    discard_attempt,
    driver_store,
    stage_output,
    staging_url,
)

__all__ = ["AtomicCOGSink"]

_log = logging.getLogger(__name__)


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
        #: URL scheme -> the store the runner's own checks use (one S3 client per run,
        #: not one per task audited)
        self._driver_stores: dict[str, Store] = {}

    def staging_url(self, location: str, attempt: str) -> str:
        return staging_url(location, attempt)

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
        if not is_store_url(url):
            raise ValueError(f"output_location: cannot write to {url!r} (file:// or s3:// only)")
        put_args = self._put_args(ContentType)  # S3's; a local store has no use for them
        if url == self._commit_url:
            return dask.delayed(commit_staged, name="commit-task", pure=False)(
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
        return dask.delayed(stage_output, name="stage-output", pure=False)(
            data, staged, url, with_deps=with_deps, attempt=self.attempt, put_args=put_args
        )

    def _ds_to_cog(self, ds: xr.Dataset, paths: dict[str, str]) -> list[Any]:
        """Each band encoded by a worker task (:mod:`odc_ndvi_plugin.cogs`)."""
        return delayed_ds_to_cog(self, ds, paths)

    def audit(self, task: Task, *, verify: bool = False) -> OutputAudit:
        """Whether ``task`` is done: its STAC item exists and every file its ``.sha1`` and
        STAC item list is there (with ``verify``: and matches its ``.sha1`` digest)."""
        item = self.uri(task)
        scheme = urlparse(item).scheme
        if scheme not in self._driver_stores:
            self._driver_stores[scheme] = driver_store(item)
        return audit_outputs(
            item,
            task.metadata_path("absolute", ext="sha1"),
            verify=verify,
            store=self._driver_stores[scheme],
        )

    def remove_staged(self, task: Task, attempt: str | None) -> None:
        """Best-effort removal of what a failed/cancelled attempt staged; its staged writes
        and commit still running in this process will not land afterwards. Files under
        final names are never touched (they may be another attempt's finished task)."""
        if attempt is not None:
            discard_attempt(task.product.location, attempt)
