"""``odc-ndvi``: thin click commands over the rooms (runner, demo, synthetic, product)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from ._startup import skip_unused_imports
from .dev.synthetic import synth_command

__all__ = ["main"]


def _read_yaml(path: str, what: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise click.BadParameter(f"cannot read {what} {path!r}: {err}") from err
    except yaml.YAMLError as err:
        raise click.BadParameter(f"{what} {path!r} is not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise click.BadParameter(f"{what} {path!r} must be a YAML mapping")
    return doc


def _setup_logging(verbose: bool) -> None:
    from .ops.secrets import RedactingFilter

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


@click.group()
@click.version_option(package_name="odc-ndvi-plugin")
def main() -> None:
    """Cloud-masked seasonal NDVI statistics with odc-stats."""
    skip_unused_imports()  # before odc-stats/eodatasets3 pull jsonschema in (see _startup)


@main.command("run")
@click.option("--config", "config_path", required=True, help="odc-stats run config (YAML file).")
@click.option("--location", help="Output location: file:///path or s3://bucket/prefix.")
@click.option("--from-sqs", default="", help="Take tasks from this SQS queue (name or URL).")
@click.option("--gateway-config", help="Run on a dask-gateway cluster described by this YAML file.")
@click.option(
    "--gateway",
    "gateway_address",
    help="Gateway address (default: dask config / DASK_GATEWAY__ADDRESS).",
)
@click.option(
    "--max-in-flight",
    type=int,
    default=None,
    help="Tasks computed at once (default 1 local, 2 x workers on a gateway).",
)
@click.option("--threads", type=int, help="Local dask threads (default: all cores).")
@click.option("--memory-limit", help="Local dask memory limit, e.g. 4GiB.")
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
@click.option("--dryrun", is_flag=True, help="List the tasks and whether their outputs exist.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
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
    dryrun: bool,
    verbose: bool,
    filedb: str,
    tasks: tuple[str, ...],
) -> None:
    """Run tasks (all, or TASKS: ids, indices or slices as odc-stats run) from FILEDB or SQS."""
    from .ops.runner import execute, load_run_config

    _setup_logging(verbose)
    if from_sqs and tasks:
        raise click.UsageError("give either TASKS or --from-sqs, not both")
    if idle_timeout is not None and not from_sqs:
        raise click.UsageError("--idle-timeout applies to --from-sqs runs only")
    if not from_sqs and not filedb:
        raise click.UsageError("FILEDB (the task db from save-tasks) is required unless --from-sqs")
    try:
        cfg, extras = load_run_config(
            _read_yaml(config_path, "run config"),
            filedb=filedb,
            output_location=location,
            threads=threads,
            memory_limit=memory_limit,
            overwrite=overwrite,
            max_processing_time=max_processing_time,
        )
        if dryrun:
            from .ops.runner import NDVITaskRunner

            runner = NDVITaskRunner(cfg)
            for result in runner.dry_run(list(tasks)):
                click.echo(result.meta)
            return

        def progress(msg: str) -> None:
            click.echo(msg, err=True)

        kwargs: dict[str, Any] = dict(
            tasks=list(tasks),
            from_sqs=from_sqs,
            dataset_filters=extras.get("dataset_filters"),
            apply_eodatasets3=bool(extras.get("apply_eodatasets3", False)),
            progress=progress,
            idle_timeout=idle_timeout,
        )
        if gateway_config:
            from .ops.gateway import GatewayClusterConfig, open_gateway_cluster

            gcfg = GatewayClusterConfig.from_yaml(gateway_config)
            with open_gateway_cluster(gcfg, address=gateway_address) as (_cluster, client):
                workers = max(1, len(client.scheduler_info().get("workers", {})))
                summary = execute(
                    cfg, client=client, max_in_flight=max_in_flight or 2 * workers, **kwargs
                )
        else:
            summary = execute(cfg, max_in_flight=max_in_flight or 1, **kwargs)
    except (ValueError, TimeoutError, PermissionError) as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        click.echo(
            "interrupted: tasks in flight were cancelled; rerun to finish the rest", err=True
        )
        sys.exit(130)
    click.echo(f"Tasks: {summary.line()}")
    for location_, error in summary.errors:
        click.echo(f"  failed {location_}: {error}", err=True)
    if summary.failed:
        sys.exit(1)


def _config_and_plugin(config_path: str):
    """Validated run config and its plugin instance; errors become a clean CLI message."""
    from odc.stats.plugins import resolve

    from .ops.runner import load_run_config

    try:
        cfg, _ = load_run_config(_read_yaml(config_path, "run config"))
        return cfg, resolve(cfg.plugin)(**cfg.plugin_config)
    except ValueError as err:
        raise click.ClickException(str(err)) from err


@main.command("check-config")
@click.argument("config_path")
@click.option(
    "--product",
    "products",
    multiple=True,
    help="Also check the band names against this input product in the configured datacube "
    "(repeatable; default: the file's input_products, when a datacube is reachable).",
)
def check_config_command(config_path: str, products: tuple[str, ...]) -> None:
    """Validate a run config and its plugin_config without running anything."""
    cfg, plugin = _config_and_plugin(config_path)
    names = list(products) or _split_products(_read_yaml(config_path, "run config"))
    if names:
        _check_products(plugin, names, required=bool(products))
    click.echo(f"ok: {cfg.plugin} -> bands {', '.join(plugin.measurements)}")


def _split_products(doc: dict[str, Any]) -> list[str]:
    """Product names of a drop-in config's ``input_products`` (odc-stats' ``a-b`` union
    and ``a+b`` fusion syntax; ODC product names have no ``-`` or ``+``)."""
    import re

    return [p for p in re.split(r"[-+]", str(doc.get("input_products") or "")) if p]


def _check_products(plugin: Any, names: list[str], *, required: bool) -> None:
    """The plugin's bands, flags and scaling against each product's definition in the
    configured datacube; without one, a note (or, for --product, an error)."""
    from .ops.secrets import redact_text

    try:
        from datacube import Datacube

        dc = Datacube(app="odc-ndvi-check-config")
        found = {name: dc.index.products.get_by_name(name) for name in names}
    except Exception as err:  # noqa: BLE001 - any connection/config failure
        reason = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        if required:
            raise click.ClickException(
                f"cannot check products {', '.join(names)}: {reason}"
            ) from err
        click.echo(f"note: band names not checked against a datacube ({reason})", err=True)
        return
    for name, product in found.items():
        if product is None:
            raise click.ClickException(f"input product {name!r} is not in the datacube")
        try:
            plugin.validate_product(product)
        except ValueError as err:
            raise click.ClickException(str(err)) from err
    click.echo(f"checked against the datacube: {', '.join(names)}")


@main.command("product-definition")
@click.argument("config_path")
@click.option(
    "--grid",
    help="The save-tasks grid (au-30, africa-30, 'epsg:3577;30;512'...) for the definition's "
    "load section (default: the config's own grid key, if it has one).",
)
def product_definition_command(config_path: str, grid: str | None) -> None:
    """Print the output product definition (eo3 YAML) for a run config."""
    from .product import dump_product_definition, output_product_definition

    cfg, plugin = _config_and_plugin(config_path)
    grid = grid or _read_yaml(config_path, "run config").get("grid")
    try:
        doc = output_product_definition(plugin, cfg.product, grid=grid)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo(dump_product_definition(doc), nl=False)


@main.command("demo")
@click.option(
    "--workdir", default=".work/demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--size", type=click.Choice(["demo", "tiny"]), default="demo", show_default=True)
@click.option(
    "--flavour", type=click.Choice(["usgs_c2", "dea_ard"]), default="usgs_c2", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Recompute tasks whose outputs exist.")
@click.option("-v", "--verbose", is_flag=True)
def demo_command(workdir: str, size: str, flavour: str, overwrite: bool, verbose: bool) -> None:
    """The main job, from scratch: index, archive, save-tasks, run, quicklooks."""
    from .dev.demo import run_demo

    _setup_logging(verbose)
    try:
        report = run_demo(
            Path(workdir), size=size, flavour=flavour, overwrite=overwrite, progress=click.echo
        )
    except (RuntimeError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        click.echo("interrupted; rerun to finish (finished tasks are skipped)", err=True)
        sys.exit(130)
    click.echo(report.text())
    if report.summary.failed:
        sys.exit(1)


main.add_command(synth_command)


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
    help="Band, or stem of the seasonal bands (ndvi_mean -> ndvi_mean_djf, ...).",
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
