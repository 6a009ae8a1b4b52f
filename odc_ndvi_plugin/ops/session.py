"""Setting up a run, around the runner (:mod:`.runner` only schedules tasks).

:func:`execute` is one run: the runner for the task db or queue, the checks that fail the
whole run before any task (:func:`preflight`: the output probe, the first input's bands),
the dask client (a loopback-only local cluster sized by :func:`local_dask_size`, or the
caller's, e.g. a gateway cluster's) with S3 access set up the ecosystem's way, the SQS
queue resolved, and the tasks run to the end; whoever watches gets the run's events on
one channel (:class:`~odc_ndvi_plugin.ops.report.RunEvents`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

from distributed import Client
from odc.stats.model import TaskRunnerConfig

from .._memory import MemoryHygiene
from ..errors import ConfigError, OutputLocationError, S3AccessError
from ..storage import is_s3, is_store_url, sqs_resource, store_for
from .commit import sweep_stale_staging
from .limits import DaskSizing
from .report import AllEvents, ProgressLines, RunEvents, RunSummary
from .runner import DEFAULT_RETRIES, NDVITaskRunner, task_period_problem
from .signals import interrupts_raise

__all__ = [
    "check_credentials",
    "check_output_location",
    "execute",
    "first_dataset",
    "local_dask_size",
    "preflight",
    "prepare_outside_client",
    "sqs_queue",
    "start_local_dask",
]

_log = logging.getLogger(__name__)


# -- the dask client -------------------------------------------------------------------
def local_dask_size(cfg: TaskRunnerConfig) -> DaskSizing:
    """Threads and memory of the run's local dask worker: the run config's ``threads`` /
    ``memory_limit`` when given, else the container's limits (cgroup v2 or v1), else the
    host's (:mod:`.limits`)."""
    from dask.utils import parse_bytes

    from .limits import host_resources, read_cgroup_limits, size_local_dask  # noqa: I001

    return size_local_dask(
        read_cgroup_limits(),
        host_resources(),
        threads=cfg.threads,
        memory_limit=parse_bytes(cfg.memory_limit) if cfg.memory_limit else None,
    )


def start_local_dask(runner: NDVITaskRunner) -> Client:
    """A loopback-only local cluster (odc-stats' default binds its dashboard on 0.0.0.0)
    sized by :func:`local_dask_size`, its worker set up to read and write S3."""
    from distributed import LocalCluster
    from odc.stats.proc import S3ClientPlugin

    size = local_dask_size(runner._cfg)
    _log.info("Local dask size: %s", size.describe())
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=size.threads,
        processes=False,
        memory_limit=size.memory_limit,
        dashboard_address="127.0.0.1:0",
    )
    client = Client(cluster)
    try:
        if _needs_s3(runner):
            for c in (None, client):
                _configure_s3(runner, c)
        client.register_plugin(S3ClientPlugin())
        client.register_plugin(MemoryHygiene())
    except BaseException:
        _close_local_dask(client)  # nobody else holds it yet
        raise
    _log.info("Started local dask on 127.0.0.1 with %d threads", size.threads)
    return client


def _close_local_dask(client: Client) -> None:
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def prepare_outside_client(runner: NDVITaskRunner, client: Client) -> None:
    """An outside (gateway) client's workers set up once: odc-stats' S3 writer uses
    ``worker.s3_client``, which only S3ClientPlugin sets; S3 reads configured."""
    from odc.stats.proc import S3ClientPlugin

    client.register_plugin(MemoryHygiene())
    if is_s3(runner.product.location):
        client.register_plugin(S3ClientPlugin(), name="odc-stats-s3-client")
    if _inputs_maybe_on_s3(runner):
        _configure_s3(runner, client)  # the gateway's workers read the inputs


def _configure_s3(runner: NDVITaskRunner, client: Client | None) -> None:
    """S3 reads the ecosystem's way (datacube's configure_s3_access, as odc-stats does):
    unsigned or with the credentials found here, handed to ``client``'s workers;
    requester pays when the plugin config asks for it."""
    from datacube.utils.aws import configure_s3_access

    if not runner._cfg.aws_unsigned:
        check_credentials(_s3_location(runner))
    try:
        configure_s3_access(
            aws_unsigned=runner._cfg.aws_unsigned,
            requester_pays=bool(
                getattr(getattr(runner.proc, "config", None), "requester_pays", False)
            ),
            cloud_defaults=True,
            client=client,
        )
    except ValueError as err:  # datacube: "Couldn't get credentials"
        raise S3AccessError(
            f"S3 access cannot be set up: {err} (give AWS credentials, or aws_unsigned: true "
            "in the run config for public buckets)"
        ) from err


def _s3_location(runner: NDVITaskRunner) -> str:
    """What on S3 the run reads or writes (for messages): the first input, else the output."""
    ds = first_dataset(runner.rdr) if runner.rdr is not None else None
    uris = [str(u) for u in (ds.uris if ds is not None else ())]
    return next((u for u in uris if is_s3(u)), runner.product.location)


def check_credentials(location: str) -> None:
    """Fail in seconds, naming ``location`` and where credentials were looked for, when
    there are none (datacube's own lookup tries 10 times with growing sleeps: ~36 s,
    then "Couldn't get credentials" naming nothing). One look-up through botocore's
    chain, the instance metadata service asked once with a 1 s timeout."""
    import botocore.session

    from .._redact import redact_url

    session = botocore.session.Session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    if session.get_credentials() is not None:
        return
    resolver = session.get_component("credential_provider")
    tried = [getattr(p, "METHOD", type(p).__name__) for p in resolver.providers]
    raise S3AccessError(
        f"S3 access for {redact_url(location)}: no AWS credentials found (looked in: "
        f"{', '.join(tried)}); give credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE, a web identity token...) or set aws_unsigned: true in the run "
        "config for public buckets"
    )


def _needs_s3(runner: NDVITaskRunner) -> bool:
    """S3 set-up only when something is on S3: it probes for credentials (slowly) and
    changes GDAL's process-wide settings (unsigned requests break signed ones)."""
    if is_s3(runner.product.location):
        return True
    if _inputs_maybe_on_s3(runner):
        return True
    return not runner._cfg.aws_unsigned and any(
        k in os.environ for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE")
    )


def _inputs_maybe_on_s3(runner: NDVITaskRunner) -> bool:
    """Inputs of the first task are on S3 (unknown before the first SQS message: yes),
    or the anomaly's baseline is (read with the same S3 settings as inputs)."""
    baseline = getattr(getattr(runner.proc, "config", None), "baseline", None) or ""
    if is_s3(baseline):
        return True
    ds = first_dataset(runner.rdr) if runner.rdr is not None else None
    if ds is None:
        return True
    return any(is_s3(str(uri)) for uri in ds.uris)


# -- checks before any task ------------------------------------------------------------
def check_output_location(location: str) -> None:
    """Fail before any work if ``location`` cannot be written (names the target): a probe
    file put and removed through the location's store."""
    if not is_store_url(location):
        return  # run configs allow these two only (checked when the config is read)
    probe = f"{location.rstrip('/')}/.odc-ndvi-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        store = store_for(probe)
        store.put(b"", probe)
        store.remove(probe)
    except Exception as err:  # noqa: BLE001 - any failure means "cannot write there"
        raise OutputLocationError(f"output_location {location!r} is not writable: {err}") from err


def preflight(runner: NDVITaskRunner, *, from_sqs: str = "") -> None:
    """Checks that fail the whole run before any task: output writable, inputs readable;
    and a sweep of staged files that killed attempts left behind."""
    check_output_location(runner.product.location)
    try:
        sweep_stale_staging(runner.product.location)
    except Exception as err:  # noqa: BLE001 - housekeeping: never a reason not to run
        _log.warning("Stale staged files could not be swept: %s", err)
    if from_sqs:
        return
    for period in sorted({tile[0] for tile in runner.rdr.all_tiles}):
        problem = task_period_problem(runner.proc, period)
        if problem is not None:
            tile = next(t for t in runner.rdr.all_tiles if t[0] == period)
            raise ConfigError(f"task {'/'.join(map(str, tile))} (period {period})", problem)
    validate = getattr(runner.proc, "validate_product", None)
    ds = first_dataset(runner.rdr)
    if validate is not None and ds is not None:
        validate(ds.product)


def first_dataset(rdr: Any) -> Any:
    """The first dataset of a task db's first tile, or None; only that one is decoded.

    ``TaskReader.datasets`` decodes every dataset of the tile, and a document can be large
    (a footprint of thousands of vertices: 38 ms each in bench_round3's UTM world, where
    two such checks cost 7 s before every run's first task)."""
    tiles = rdr.all_tiles
    if not tiles:
        return None
    with contextlib.closing(rdr.cache.stream_grid_tile(tiles[0], rdr.grid)) as stream:
        return next(stream, None)


def sqs_queue(name_or_url: str) -> Any:
    """odc-stats looks a queue up by name only; a queue URL is opened as it is."""
    if "://" not in name_or_url:
        return name_or_url
    return sqs_resource().Queue(name_or_url)


# -- one run ---------------------------------------------------------------------------
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
    retries: int = DEFAULT_RETRIES,
    verify: bool = False,
    incomplete: str = "redo",
    events: RunEvents | None = None,
    on_runner: Callable[[NDVITaskRunner], None] | None = None,
    resolution: tuple[float, float] | None = None,
) -> RunSummary:
    """Run tasks from a task db (``tasks``: ids/indices/slices, empty = all) or an SQS queue.

    ``client``: the dask client to run on (default: a local cluster, started after the
    preflight checks and closed at the end); ``progress``: one plain line per finished
    task (:class:`~odc_ndvi_plugin.ops.report.ProgressLines`); ``events``: everything else
    that watches the run; ``on_runner``: called with the runner before any task (the CLI
    plans its progress total and report with it); ``resolution``: the output resolution
    instead of the task db grid's (odc-stats' ``--resolution``: a compatible one)."""
    lines = None if progress is None else ProgressLines(progress)
    runner = NDVITaskRunner(
        cfg,
        from_sqs=from_sqs,
        max_in_flight=max_in_flight,
        idle_timeout=idle_timeout,
        retries=retries,
        verify=verify,
        incomplete=incomplete,
        events=AllEvents(events, lines),
        resolution=resolution,
    )
    local = None
    try:
        starting = getattr(runner.proc, "run_starting", None)
        if starting is not None:  # the plugin's part of a run starting (odc-stats patches)
            starting()
        if on_runner is not None:
            on_runner(runner)
        if lines is not None and not from_sqs:
            lines.set_total(len(runner.planned(list(tasks or []))))
        preflight(runner, from_sqs=from_sqs)
        if client is None:
            client = local = start_local_dask(runner)
        else:
            prepare_outside_client(runner, client)
        runner.attach(client)
        results = (
            runner.run(
                sqs=sqs_queue(from_sqs),
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
        with interrupts_raise():
            for _ in results:
                pass
    finally:
        runner.close()
        if local is not None:
            _close_local_dask(local)
    return runner.summary
