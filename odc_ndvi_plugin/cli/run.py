"""``odc-ndvi run``: its options in one frozen :class:`RunOptions` (conflict rules in the
pure :meth:`RunOptions.problems`), then the run itself (ops/: runner, report, gateway)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import click

from .._extras import require
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    one_line_errors,
    plugin_of,
    read_yaml,
    redacted,
    setup_logging,
    verbose_option,
)

__all__ = ["RunOptions", "run_command"]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What ``odc-ndvi run`` was asked to do (its command line, as given)."""

    #: the odc-stats run config: a YAML file, a URL or inline YAML (None: only options)
    config_path: str | None = None
    #: the task db from ``odc-stats save-tasks`` ("" with ``from_sqs``)
    filedb: str = ""
    #: the tasks to run (ids, indices or slices as odc-stats run); empty: all
    tasks: tuple[str, ...] = ()
    #: output location overriding the run config's (file:///path or s3://bucket/prefix)
    location: str | None = None
    #: take tasks from this SQS queue (name or URL) instead of ``filedb``
    from_sqs: str = ""
    #: run on a dask-gateway cluster described by this YAML file
    gateway_config: str | None = None
    #: the gateway's address for ``gateway_config`` (default: its own ``address``)
    gateway_address: str | None = None
    #: tasks computed at once (default 1 local, 2 x workers on a gateway)
    max_in_flight: int | None = None
    #: local dask threads (default: the container's CPU limit; else all cores)
    threads: int | None = None
    #: local dask memory limit, e.g. 4GiB (default: the container's memory limit)
    memory_limit: str | None = None
    #: recompute tasks whose outputs exist (None: the run config's ``overwrite``)
    overwrite: bool | None = None
    #: cancel a task after this many seconds
    max_processing_time: int | None = None
    #: ``from_sqs``: seconds to wait on an empty queue whose messages are in flight elsewhere
    idle_timeout: float | None = None
    #: attempts made again after a transient failure (None: the runner's default)
    retries: int | None = None
    #: before skipping a task, check its files against their .sha1 digests
    verify: bool = False
    #: a task with a STAC item but missing files: ``redo`` it, or only ``report`` it
    incomplete: str | None = None
    #: write a JSON record of the run here
    report_path: str | None = None
    #: list the tasks and the state of their outputs, compute nothing
    dryrun: bool = False
    # -- odc-stats run's options, with its meaning (the run config keys they override)
    #: the plugin (``plugin``)
    plugin: str | None = None
    #: YAML (file, URL or inline) merged into ``plugin_config``
    plugin_config: str | None = None
    #: YAML (file, URL or inline) replacing ``cog_opts``
    cog_config: str | None = None
    #: ``plugin_config.resampling``
    resampling: str | None = None
    #: output resolution ("30" or "-30,30"), compatible with the task db's grid
    resolution: str | None = None
    #: liveness file written while the run goes (``heartbeat_filepath``)
    heartbeat_filepath: str | None = None
    #: JSON dataset filters, '|' = or (the config's ``dataset_filters``)
    dataset_filters: str | None = None
    #: outputs readable by anyone (``s3_acl: public-read``); None: the config's
    public: bool | None = None
    #: metadata written with eodatasets3 (the config's ``apply_eodatasets3``)
    apply_eodatasets3: bool = False

    def problems(self) -> list[str]:
        """Every conflict between the options, as the one line a user reads (none: [])."""
        found = []

        def refuse(condition: Any, message: str) -> None:
            if condition:
                found.append(message)

        refuse(self.from_sqs and self.tasks, "give either TASKS or --from-sqs, not both")
        refuse(
            self.idle_timeout is not None and not self.from_sqs,
            "--idle-timeout applies to --from-sqs runs only",
        )
        refuse(
            not self.from_sqs and not self.filedb,
            "FILEDB (the task db from save-tasks) is required unless --from-sqs",
        )
        refuse(
            self.gateway_address and not self.gateway_config,
            "--gateway ADDRESS needs --gateway-config (the cluster to create there); without "
            "it the run would use local dask",
        )
        refuse(
            self.gateway_config and (self.threads is not None or self.memory_limit),
            "--threads and --memory-limit size local dask; a gateway cluster's workers are "
            "sized by cluster_options in --gateway-config",
        )
        refuse(
            self.from_sqs and self.incomplete == "report",
            "--incomplete report cannot be used with --from-sqs: the task's message would "
            "go back to the queue again and again",
        )
        refuse(
            self.overwrite and (self.verify or self.incomplete),
            "--verify and --incomplete decide which tasks to skip; --overwrite skips none",
        )
        if self.dryrun:
            refuse(
                self.from_sqs,
                "--dryrun lists the tasks of a task db; an SQS queue's tasks cannot be "
                "listed without taking them (give FILEDB instead of --from-sqs)",
            )
            ignored = {
                "--gateway-config": self.gateway_config,
                "--max-in-flight": self.max_in_flight,
                "--threads": self.threads,
                "--memory-limit": self.memory_limit,
                "--max-processing-time": self.max_processing_time,
                "--retries": self.retries,
                "--report": self.report_path,
            }
            given = [flag for flag, value in ignored.items() if value is not None]
            refuse(given, f"--dryrun computes nothing: {', '.join(given)} would be ignored")
        return found


@click.command("run")
@click.option(
    "--config",
    "config_path",
    help="odc-stats run config: a YAML file, a URL (s3://, https://) or inline YAML.",
)
@click.option("--location", help="Output location: file:///path or s3://bucket/prefix.")
@click.option("--from-sqs", default="", help="Take tasks from this SQS queue (name or URL).")
@click.option("--gateway-config", help="Run on a dask-gateway cluster described by this YAML file.")
@click.option(
    "--gateway",
    "gateway_address",
    help="Gateway address for --gateway-config (default: its `address`, dask config or "
    "DASK_GATEWAY__ADDRESS).",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks computed at once (default 1 local, 2 x workers on a gateway).",
)
@click.option(
    "--threads",
    type=int,
    help="Local dask threads (default: the container's CPU limit, cgroup v2 or v1; else all "
    "cores). -v logs the choice and where it came from.",
)
@click.option(
    "--memory-limit",
    help="Local dask memory limit, e.g. 4GiB (default: the container's memory limit; else "
    "the host's memory less 1 GiB).",
)
@click.option(
    "--overwrite", is_flag=True, default=None, help="Recompute tasks whose outputs exist."
)
@click.option("--max-processing-time", type=int, help="Cancel a task after this many seconds.")
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    help="--from-sqs: seconds to wait on an empty queue whose messages are still in flight "
    "elsewhere (default: the lease + 60 s, so a dead runner's task is picked up).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Attempts made again after a transient failure (a worker lost, an input read that "
    "timed out or got an HTTP 5xx) before a task counts as failed [default: 2].",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Before skipping a task, check its files against its .sha1 digests (reads them all).",
)
@click.option(
    "--incomplete",
    type=click.Choice(["redo", "report"]),
    default=None,
    help="A task with a STAC item whose files are not all there: compute it again (redo, "
    "the default) or only report it (exit status 1).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Write a JSON record of the run here (per task: status, seconds, datasets, bytes, "
    "error), also when it is interrupted.",
)
@click.option("--dryrun", is_flag=True, help="List the tasks and the state of their outputs.")
@click.option("--plugin", help="The stats plugin (run config key plugin).")
@click.option(
    "--plugin-config",
    help="YAML (file, URL or inline, e.g. '{min_clear: 2}') merged into plugin_config.",
)
@click.option("--cog-config", help="YAML (file, URL or inline) replacing cog_opts.")
@click.option("--resampling", help="Input resampling (plugin_config.resampling), e.g. nearest.")
@click.option(
    "--resolution", help="Output resolution, e.g. 30 or -30,30 (compatible with the grid)."
)
@click.option(
    "--heartbeat-filepath",
    help="Liveness file, its UTC time rewritten while the run goes (for Kubernetes probes).",
)
@click.option(
    "--dataset-filters",
    help="""Datasets to use: JSON of properties, '|' = or (e.g. '{"landsat:wrs_path": 90}').""",
)
@click.option(
    "--public/--no-public",
    default=None,
    help="Outputs readable by anyone (s3_acl: public-read) [default: the config's].",
)
@click.option(
    "--apply_eodatasets3",
    is_flag=True,
    help="Write the metadata with eodatasets3 (default: PySTAC, as odc-stats).",
)
@verbose_option
@click.argument("filedb", required=False, default="")
@click.argument("tasks", nargs=-1)
@one_line_errors
def run_command(verbose: bool, **params: Any) -> None:
    """Run tasks (all, or TASKS: ids, indices or slices as odc-stats run) from FILEDB or SQS."""
    from ..ops.logs import quiet_libraries
    from ..ops.signals import interrupts_raise

    options = RunOptions(**{**params, "tasks": tuple(params["tasks"])})
    # Ctrl-C and SIGTERM from the first moment: a gateway cluster being created or
    # waiting for workers is shut down, and the report says what was done
    with interrupts_raise():
        setup_logging(verbose)
        for problem in options.problems():
            raise click.UsageError(problem)
        try:
            with quiet_libraries(verbose):
                _run(options)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: tasks in flight were cancelled; rerun to finish the rest",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)


def _run(options: RunOptions) -> None:
    from ..ops.report import RunObserver, RunReport, RunSummary, TaskProgress
    from ..ops.runconfig import load_run_config
    from ..ops.runner import DEFAULT_RETRIES, NDVITaskRunner
    from ..ops.session import execute
    from ..ops.taskdb import check_task_db

    o = options
    tasks = list(o.tasks)
    incomplete = o.incomplete or "redo"
    cfg, extras = load_run_config(
        _config_with_options(o),
        filedb=o.filedb,
        output_location=o.location,
        threads=o.threads,
        memory_limit=o.memory_limit,
        overwrite=o.overwrite,
        max_processing_time=o.max_processing_time,
        plugin=o.plugin,
        s3_acl="public-read" if o.public else None,
        heartbeat_filepath=o.heartbeat_filepath,
    )
    plugin_of(cfg, o.config_path or "--plugin")  # a bad plugin_config fails here
    gateway_cfg = None
    if o.gateway_config:
        require("ops", "odc-ndvi run --gateway-config")
        from ..ops.gateway import GatewayClusterConfig

        gateway_cfg = GatewayClusterConfig.from_yaml(o.gateway_config)
    if cfg.filedb:
        check_task_db(cfg.filedb)  # before a gateway cluster is paid for
    dataset_filters = _dataset_filters(o, extras)
    resolution = _resolution(o.resolution)
    retry_count = DEFAULT_RETRIES if o.retries is None else o.retries
    if o.dryrun:
        runner = NDVITaskRunner(cfg, verify=o.verify, incomplete=incomplete, resolution=resolution)
        _dry_run(runner, tasks, dataset_filters)
        return

    progress = TaskProgress(None)
    report = None
    if o.report_path:
        header = _report_header(cfg, o.config_path, o.from_sqs, retry_count)
        report = RunReport(o.report_path, header)
        try:
            report.write(RunSummary(), "running")  # a report that cannot be written fails now
        except OSError as err:
            raise click.UsageError(f"--report {o.report_path}: cannot write it: {err}") from err
    observer = RunObserver(progress, report)

    def on_runner(runner: NDVITaskRunner) -> None:
        if o.from_sqs:
            observer.queue_depth = runner.queue_depth
            return
        try:
            planned = runner.planned(tasks)
        except ValueError as err:
            raise click.UsageError(f"TASKS: {err}") from err
        progress.set_total(len(planned))
        if report is not None:
            report.plan(planned)

    kwargs: dict[str, Any] = dict(
        tasks=tasks,
        from_sqs=o.from_sqs,
        dataset_filters=dataset_filters,
        apply_eodatasets3=o.apply_eodatasets3 or bool(extras.get("apply_eodatasets3", False)),
        resolution=resolution,
        idle_timeout=o.idle_timeout,
        retries=retry_count,
        verify=o.verify,
        incomplete=incomplete,
        events=observer,
        on_runner=on_runner,
    )
    state = "aborted"
    try:
        if gateway_cfg is not None:
            from ..ops.gateway import open_gateway_cluster

            progress.message(
                f"Opening a dask-gateway cluster (connect: {gateway_cfg.connect}; waiting up "
                f"to {gateway_cfg.wait_timeout:g} s for {gateway_cfg.expected_workers} worker(s))"
            )
            with open_gateway_cluster(gateway_cfg, address=o.gateway_address) as (_, client):
                workers = max(1, len(client.scheduler_info().get("workers", {})))
                summary = execute(
                    cfg, client=client, max_in_flight=o.max_in_flight or 2 * workers, **kwargs
                )
        else:
            summary = execute(cfg, max_in_flight=o.max_in_flight or 1, **kwargs)
        state = "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        observer.close(state)
    click.echo(f"Tasks: {summary.line()}")
    for note in summary.notes():
        click.echo(f"  {note}")
    for location, error in summary.errors:
        click.echo(f"  failed {location}: {error}", err=True)
    if o.report_path:
        click.echo(f"Report: {o.report_path}")
    if summary.failed or summary.incomplete:
        sys.exit(EXIT_FAILED)


def _yaml(text: str, what: str) -> dict[str, Any]:
    """A YAML option read as odc-stats reads it (file, URL or inline); one line if not."""
    from .._compat import yaml_option
    from ..errors import ConfigError

    if "://" not in text and "\n" not in text and ":" not in text:
        return read_yaml(text, what)  # a plain path: our messages (missing, not YAML)
    try:
        doc = yaml_option(text)
    except Exception as err:  # noqa: BLE001 - odc-stats' readers raise many kinds
        raise ConfigError(f"{what} {text!r}", f"cannot read it: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {text!r}", "must be a YAML mapping of keys to values")
    return doc


def _config_with_options(o: RunOptions) -> dict[str, Any]:
    """The run config with odc-stats run's overrides of its sub-mappings applied as
    odc-stats applies them: ``--plugin-config`` merged into ``plugin_config``,
    ``--resampling`` into it, ``--cog-config`` replacing ``cog_opts``."""
    doc = _yaml(o.config_path, "run config") if o.config_path else {}
    if o.plugin_config is not None:
        merged = dict(doc.get("plugin_config") or {})
        merged.update(_yaml(o.plugin_config, "--plugin-config"))
        doc["plugin_config"] = merged
    if o.resampling:
        doc["plugin_config"] = {**(doc.get("plugin_config") or {}), "resampling": o.resampling}
    if o.cog_config is not None:
        doc["cog_opts"] = _yaml(o.cog_config, "--cog-config")
    return doc


def _dataset_filters(o: RunOptions, extras: dict[str, Any]) -> str | None:
    """``--dataset-filters`` (checked as the config key is), else the config's."""
    if o.dataset_filters is None:
        return extras.get("dataset_filters")
    from ..ops.runconfig import check_run_config_values

    check_run_config_values({"dataset_filters": o.dataset_filters}, "command line")
    return o.dataset_filters


def _resolution(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    from .._compat import parse_resolution

    try:
        return parse_resolution(text)
    except ValueError as err:
        raise click.UsageError(f"--resolution {text!r}: {err}") from err


def _report_header(cfg: Any, config_path: str, from_sqs: str, retries: int) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from .._version import __version__
    from ..ops.report import config_digest

    try:
        odc_stats = version("odc-stats")
    except PackageNotFoundError:
        odc_stats = "unknown"
    return {
        "command": [redacted(a) for a in ["odc-ndvi", *sys.argv[1:]]],
        "config": {"path": config_path, "digest": config_digest(cfg)},
        "plugin": cfg.plugin,
        "product": {k: cfg.product.get(k) for k in ("name", "version")},
        "output_location": redacted(cfg.output_location),
        "task_source": f"sqs:{from_sqs}" if from_sqs else cfg.filedb,
        "retries": retries,
        "versions": {"odc-ndvi-plugin": __version__, "odc-stats": odc_stats},
    }


def _dry_run(runner: Any, tasks: list[str], dataset_filters: str | None) -> None:
    """One line per task (as odc-stats' dry run, with the state of its outputs), then a
    tally on stderr."""
    tally: dict[str, int] = {}
    try:
        try:
            runner.planned(tasks)  # the task selection first: a bad one is a usage error
        except ValueError as err:
            raise click.UsageError(f"TASKS: {err}") from err
        for _task, state, line in runner.dry_run_states(tasks, ds_filters=dataset_filters):
            click.echo(line)
            tally[state] = tally.get(state, 0) + 1
    finally:
        runner.close()
    counts = ", ".join(f"{n} {state}" for state, n in sorted(tally.items()))
    click.echo(f"{sum(tally.values())} task(s): {counts or 'none'}", err=True)
