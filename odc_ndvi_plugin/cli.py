"""``odc-ndvi``: thin click commands over the rooms (runner, demo, synthetic, product).

Every problem ends as ONE line on stderr, ``Error: <what, where, what would be valid>``,
with exit status :data:`EXIT_USAGE` (2) for a wrong command line or configuration,
:data:`EXIT_FAILED` (1) when the work failed (a task, a task db that is corrupt, a gateway
that refuses) and :data:`EXIT_INTERRUPTED` (130) after Ctrl-C or SIGTERM; ``-v`` prints
the traceback before it. Commands import the runner, odc-stats and dask only when they run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from ._extras import require
from ._startup import skip_unused_imports

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(click.ClickException):
    """A one-line error with its exit status (``ClickException`` exits 1 only)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def _redacted(text: str) -> str:
    from ._redact import redact_text, secret_values_from_environ

    return redact_text(text, secret_values_from_environ())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _synth_command() -> click.Command:
    from .dev.synthetic import synth_command

    return synth_command


class _OneLineErrors(click.Group):
    """The command group: usage errors, config errors and failures as one line each.

    Commands defined in ``dev/`` are imported when they are asked for (by name, or for
    ``--help``), not when the CLI starts: ``odc-ndvi run`` never imports the demo tooling.
    """

    lazy_commands: dict[str, Any] = {"synth": _synth_command}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            return self.lazy_commands[cmd_name]()
        return super().get_command(ctx, cmd_name)

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as err:
            message = err.format_message()
            ctx = getattr(err, "ctx", None)
            if isinstance(err, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            click.echo(f"Error: {_one_line(_redacted(message))}", err=True)
            sys.exit(err.exit_code)
        except click.Abort as err:
            interrupted = isinstance(err.__context__, KeyboardInterrupt)
            click.echo("interrupted" if interrupted else "Aborted.", err=True)
            sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


@contextlib.contextmanager
def _errors(verbose: bool) -> Iterator[None]:
    """Exceptions of a command as one-line :class:`CommandError` s (``verbose``: after
    the traceback): configuration errors exit 2, everything else 1."""
    from ._validate import ConfigError

    try:
        yield
    except (click.ClickException, KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - every error becomes one line
        if verbose:
            click.echo(_redacted(traceback.format_exc()).rstrip(), err=True)
        if isinstance(err, ConfigError):
            raise CommandError(str(err), EXIT_USAGE) from err
        # errors raised with a message for users; others get their type and a hint
        known = (ValueError, TimeoutError, PermissionError, ConnectionError, LookupError)
        if isinstance(err, known + (RuntimeError,)) and str(err):
            text = str(err)
        else:
            text = f"{type(err).__name__}: {err}" + ("" if verbose else " (-v: traceback)")
        raise CommandError(text, EXIT_FAILED) from err


def _read_yaml(path: str, what: str) -> dict[str, Any]:
    from ._validate import ConfigError

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{what} {path!r}", f"cannot read it: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path!r}", f"not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {path!r}", "must be a YAML mapping of keys to values")
    return doc


def _setup_logging(verbose: bool) -> None:
    from ._redact import RedactingFilter

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="odc-ndvi-plugin")
def main() -> None:
    """Cloud-masked seasonal NDVI statistics with odc-stats."""
    skip_unused_imports()  # before odc-stats/eodatasets3 pull jsonschema in (see _startup)


def _plugin_of(cfg: Any, config_path: str) -> Any:
    """The run config's plugin instance; a name that resolves to nothing or a
    ``plugin_config`` it refuses is a configuration error naming the key."""
    from odc.stats.plugins import resolve

    from ._validate import ConfigError

    try:
        make = resolve(cfg.plugin)
    except (ValueError, ImportError) as err:
        raise ConfigError(
            f"run config {config_path!r}: plugin",
            f"{cfg.plugin!r} cannot be resolved ({err}); use ndvi-seasonal or "
            f"odc_ndvi_plugin.NDVISeasonal",
        ) from err
    try:
        return make(**cfg.plugin_config)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"run config {config_path!r}", str(err)) from err


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise click.UsageError(message)


@main.command("run")
@click.option("--config", "config_path", required=True, help="odc-stats run config (YAML file).")
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
@click.option("-v", "--verbose", is_flag=True, help="Log progress details; tracebacks on errors.")
@click.argument("filedb", required=False, default="")
@click.argument("tasks", nargs=-1)
def run_command(
    config_path: str,
    location: str | None,
    from_sqs: str,
    gateway_config: str | None,
    gateway_address: str | None,
    max_in_flight: int | None,
    threads: int | None,
    memory_limit: str | None,
    overwrite: bool | None,
    max_processing_time: int | None,
    idle_timeout: float | None,
    retries: int | None,
    verify: bool,
    incomplete: str | None,
    report_path: str | None,
    dryrun: bool,
    verbose: bool,
    filedb: str,
    tasks: tuple[str, ...],
) -> None:
    """Run tasks (all, or TASKS: ids, indices or slices as odc-stats run) from FILEDB or SQS."""
    from .ops.logs import quiet_libraries
    from .ops.signals import interrupts_raise

    # Ctrl-C and SIGTERM from the first moment: a gateway cluster being created or
    # waiting for workers is shut down, and the report says what was done
    with interrupts_raise():
        _setup_logging(verbose)
        _refuse(bool(from_sqs and tasks), "give either TASKS or --from-sqs, not both")
        _refuse(
            idle_timeout is not None and not from_sqs,
            "--idle-timeout applies to --from-sqs runs only",
        )
        _refuse(
            not from_sqs and not filedb,
            "FILEDB (the task db from save-tasks) is required unless --from-sqs",
        )
        _refuse(
            bool(gateway_address and not gateway_config),
            "--gateway ADDRESS needs --gateway-config (the cluster to create there); without "
            "it the run would use local dask",
        )
        _refuse(
            bool(gateway_config and (threads is not None or memory_limit)),
            "--threads and --memory-limit size local dask; a gateway cluster's workers are "
            "sized by cluster_options in --gateway-config",
        )
        _refuse(
            from_sqs and incomplete == "report",
            "--incomplete report cannot be used with --from-sqs: the task's message would "
            "go back to the queue again and again",
        )
        _refuse(
            bool(overwrite and (verify or incomplete)),
            "--verify and --incomplete decide which tasks to skip; --overwrite skips none",
        )
        if dryrun:
            _refuse(
                bool(from_sqs),
                "--dryrun lists the tasks of a task db; an SQS queue's tasks cannot be "
                "listed without taking them (give FILEDB instead of --from-sqs)",
            )
            ignored = {
                "--gateway-config": gateway_config,
                "--max-in-flight": max_in_flight,
                "--threads": threads,
                "--memory-limit": memory_limit,
                "--max-processing-time": max_processing_time,
                "--retries": retries,
                "--report": report_path,
            }
            given = [flag for flag, value in ignored.items() if value is not None]
            _refuse(bool(given), f"--dryrun computes nothing: {', '.join(given)} would be ignored")
        try:
            with _errors(verbose), quiet_libraries(verbose):
                _run(
                    config_path=config_path,
                    location=location,
                    from_sqs=from_sqs,
                    gateway_config=gateway_config,
                    gateway_address=gateway_address,
                    max_in_flight=max_in_flight,
                    threads=threads,
                    memory_limit=memory_limit,
                    overwrite=overwrite,
                    max_processing_time=max_processing_time,
                    idle_timeout=idle_timeout,
                    retries=retries,
                    verify=verify,
                    incomplete=incomplete or "redo",
                    report_path=report_path,
                    dryrun=dryrun,
                    filedb=filedb,
                    tasks=list(tasks),
                )
        except KeyboardInterrupt:
            click.echo(
                "interrupted: tasks in flight were cancelled; rerun to finish the rest",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)


def _run(
    *,
    config_path: str,
    location: str | None,
    from_sqs: str,
    gateway_config: str | None,
    gateway_address: str | None,
    max_in_flight: int | None,
    threads: int | None,
    memory_limit: str | None,
    overwrite: bool | None,
    max_processing_time: int | None,
    idle_timeout: float | None,
    retries: int | None,
    verify: bool,
    incomplete: str,
    report_path: str | None,
    dryrun: bool,
    filedb: str,
    tasks: list[str],
) -> None:
    from .ops.report import RunObserver, RunReport, RunSummary, TaskProgress
    from .ops.runner import DEFAULT_RETRIES, NDVITaskRunner, execute, load_run_config
    from .ops.taskdb import check_task_db

    cfg, extras = load_run_config(
        _read_yaml(config_path, "run config"),
        filedb=filedb,
        output_location=location,
        threads=threads,
        memory_limit=memory_limit,
        overwrite=overwrite,
        max_processing_time=max_processing_time,
    )
    _plugin_of(cfg, config_path)  # a bad plugin_config fails here, before any work
    gateway_cfg = None
    if gateway_config:
        require("ops", "odc-ndvi run --gateway-config")
        from .ops.gateway import GatewayClusterConfig

        gateway_cfg = GatewayClusterConfig.from_yaml(gateway_config)
    if cfg.filedb:
        check_task_db(cfg.filedb)  # before a gateway cluster is paid for
    dataset_filters = extras.get("dataset_filters")
    retry_count = DEFAULT_RETRIES if retries is None else retries
    if dryrun:
        _dry_run(NDVITaskRunner(cfg, verify=verify, incomplete=incomplete), tasks, dataset_filters)
        return

    progress = TaskProgress(None)
    report = None
    if report_path:
        report = RunReport(report_path, _report_header(cfg, config_path, from_sqs, retry_count))
        try:
            report.write(RunSummary(), "running")  # a report that cannot be written fails now
        except OSError as err:
            raise click.UsageError(f"--report {report_path}: cannot write it: {err}") from err
    observer = RunObserver(progress, report)

    def on_runner(runner: NDVITaskRunner) -> None:
        if from_sqs:
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
        from_sqs=from_sqs,
        dataset_filters=dataset_filters,
        apply_eodatasets3=bool(extras.get("apply_eodatasets3", False)),
        idle_timeout=idle_timeout,
        retries=retry_count,
        verify=verify,
        incomplete=incomplete,
        events=observer,
        on_runner=on_runner,
    )
    state = "aborted"
    try:
        if gateway_cfg is not None:
            from .ops.gateway import open_gateway_cluster

            progress.message(
                f"Opening a dask-gateway cluster (connect: {gateway_cfg.connect}; waiting up "
                f"to {gateway_cfg.wait_timeout:g} s for {gateway_cfg.expected_workers} worker(s))"
            )
            with open_gateway_cluster(gateway_cfg, address=gateway_address) as (_cluster, client):
                workers = max(1, len(client.scheduler_info().get("workers", {})))
                summary = execute(
                    cfg, client=client, max_in_flight=max_in_flight or 2 * workers, **kwargs
                )
        else:
            summary = execute(cfg, max_in_flight=max_in_flight or 1, **kwargs)
        state = "finished"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        observer.close(state)
    click.echo(f"Tasks: {summary.line()}")
    for note in summary.notes():
        click.echo(f"  {note}")
    for location_, error in summary.errors:
        click.echo(f"  failed {location_}: {error}", err=True)
    if report_path:
        click.echo(f"Report: {report_path}")
    if summary.failed or summary.incomplete:
        sys.exit(EXIT_FAILED)


def _report_header(cfg: Any, config_path: str, from_sqs: str, retries: int) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from ._version import __version__
    from .ops.report import config_digest

    try:
        odc_stats = version("odc-stats")
    except PackageNotFoundError:
        odc_stats = "unknown"
    return {
        "command": [_redacted(a) for a in ["odc-ndvi", *sys.argv[1:]]],
        "config": {"path": config_path, "digest": config_digest(cfg)},
        "plugin": cfg.plugin,
        "product": {k: cfg.product.get(k) for k in ("name", "version")},
        "output_location": _redacted(cfg.output_location),
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


def _config_and_plugin(config_path: str) -> tuple[dict[str, Any], Any, Any]:
    """The run config file's mapping, the validated run config and its plugin instance."""
    from .ops.runner import load_run_config

    doc = _read_yaml(config_path, "run config")
    cfg, _ = load_run_config(doc)
    return doc, cfg, _plugin_of(cfg, config_path)


@main.command("check-config")
@click.argument("config_path")
@click.option(
    "--product",
    "products",
    multiple=True,
    help="Also check the band names against this input product in the configured datacube "
    "(repeatable; default: the file's input_products, when a datacube is reachable).",
)
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks on errors.")
def check_config_command(config_path: str, products: tuple[str, ...], verbose: bool) -> None:
    """Validate a run config and its plugin_config without running anything."""
    with _errors(verbose):
        doc, cfg, plugin = _config_and_plugin(config_path)
        names = list(products) or _split_products(doc)
        if names:
            _check_products(plugin, names, required=bool(products))
        else:  # a run config names no input product: say what was not checked
            click.echo(
                "note: band names not checked against an input product "
                "(give --product NAME with a configured datacube)",
                err=True,
            )
    click.echo(f"ok: {cfg.plugin} -> bands {', '.join(plugin.measurements)}")


def _split_products(doc: dict[str, Any]) -> list[str]:
    """Product names of a drop-in config's ``input_products`` (odc-stats' ``a-b`` union
    and ``a+b`` fusion syntax; ODC product names have no ``-`` or ``+``)."""
    import re

    return [p for p in re.split(r"[-+]", str(doc.get("input_products") or "")) if p]


def _check_products(plugin: Any, names: list[str], *, required: bool) -> None:
    """The plugin's bands, flags and scaling against each product's definition in the
    configured datacube; without one, a note (or, for --product, an error)."""
    from ._redact import redact_text

    try:
        from datacube import Datacube

        dc = Datacube(app="odc-ndvi-check-config")
        found = {name: dc.index.products.get_by_name(name) for name in names}
    except Exception as err:  # noqa: BLE001 - any connection/config failure
        reason = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        if required:
            raise RuntimeError(f"cannot check products {', '.join(names)}: {reason}") from err
        click.echo(f"note: band names not checked against a datacube ({reason})", err=True)
        return
    from ._validate import ConfigError

    for name, product in found.items():
        if product is None:
            raise ConfigError("input_products", f"{name!r} is not in the datacube")
        try:
            plugin.validate_product(product)
        except ValueError as err:
            raise ConfigError("", str(err)) from err
    click.echo(f"checked against the datacube: {', '.join(names)}")


@main.command("product-definition")
@click.argument("config_path")
@click.option(
    "--grid",
    help="The save-tasks grid (au-30, africa-30, 'epsg:3577;30;512'...) for the definition's "
    "load section (default: the config's own grid key, if it has one).",
)
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks on errors.")
def product_definition_command(config_path: str, grid: str | None, verbose: bool) -> None:
    """Print the output product definition (eo3 YAML) for a run config."""
    from ._validate import ConfigError
    from .plugin import NDVISeasonal
    from .product import dump_product_definition, output_product_definition

    with _errors(verbose):
        doc, cfg, plugin = _config_and_plugin(config_path)
        if not isinstance(plugin, NDVISeasonal):
            raise ConfigError(
                f"run config {config_path!r}: plugin",
                f"{cfg.plugin!r} is not odc_ndvi_plugin.NDVISeasonal; product-definition "
                f"describes the outputs of this plugin only",
            )
        grid = grid or doc.get("grid")
        text = dump_product_definition(output_product_definition(plugin, cfg.product, grid=grid))
    click.echo(text, nl=False)


@main.command("demo")
@click.option(
    "--workdir", default=".work/demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--size", type=click.Choice(["demo", "tiny"]), default="demo", show_default=True)
@click.option(
    "--flavour", type=click.Choice(["usgs_c2", "dea_ard"]), default="usgs_c2", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Recompute tasks whose outputs exist.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details; tracebacks on errors.")
def demo_command(workdir: str, size: str, flavour: str, overwrite: bool, verbose: bool) -> None:
    """The main job, from scratch: index, archive, save-tasks, run, quicklooks."""
    from .ops.signals import interrupts_raise

    with interrupts_raise():
        _setup_logging(verbose)
        try:
            with _errors(verbose):
                require("demo", "odc-ndvi demo")
                from .dev.demo import run_demo

                report = run_demo(
                    Path(workdir),
                    size=size,
                    flavour=flavour,
                    overwrite=overwrite,
                    progress=click.echo,
                    verbose=verbose,
                )
        except KeyboardInterrupt:
            click.echo("interrupted; rerun to finish (finished tasks are skipped)", err=True)
            sys.exit(EXIT_INTERRUPTED)
    click.echo(report.text())
    if report.summary.failed:
        sys.exit(EXIT_FAILED)


@main.command("mosaic")
@click.argument("location")
@click.option(
    "--out",
    "out_dir",
    default="mosaics",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the PNGs.",
)
@click.option(
    "--band",
    default="ndvi_mean",
    show_default=True,
    help="Band, or stem of the seasonal bands (ndvi_mean -> ndvi_mean_djf, ...); "
    "ndvi_anomaly and ndvi_std_anomaly draw on a diverging ramp centred on 0.",
)
@click.option(
    "--max-px",
    type=click.IntRange(min=16),
    default=2048,
    show_default=True,
    help="Longest side of a mosaic; tiles are read from the COG overview that fits.",
)
def mosaic_command(location: str, out_dir: str, band: str, max_px: int) -> None:
    """One PNG per season of a run's outputs at LOCATION (path, file:// or s3://), all
    tiles stitched."""
    with _errors(False):
        require("plot", "odc-ndvi mosaic")
    from .mosaic import write_mosaics

    try:
        written = write_mosaics(
            location, Path(out_dir), band=band, max_px=max_px, progress=click.echo
        )
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{len(written)} mosaic(s) in {out_dir}")


@main.command("init-config")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace files that exist (default: keep them).")
def init_config_command(directory: str, overwrite: bool) -> None:
    """Write the shipped configs into DIRECTORY to start from: run and save-tasks configs,
    drop-in examples for DEA, DE Africa and USGS C2, product definitions, the gateway
    cluster options and the Kubernetes Jobs."""
    from ._shipped import init_config

    written, kept = init_config(Path(directory), overwrite=overwrite)
    click.echo(f"{len(written)} file(s) written to {directory}")
    if kept:
        click.echo(f"{len(kept)} existing file(s) kept (--overwrite replaces them)")
