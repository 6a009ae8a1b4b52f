"""``odc-ndvi demo``, ``serve``, ``mosaic``, ``synth`` and ``sweep-staging``: the demo, its
outputs served and pictured, synthetic archives, staging housekeeping. ``dev/`` (the demo
tooling) is imported inside the commands only."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._extras import require
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    one_line_errors,
    setup_logging,
    verbose_option,
    verbose_param,
)

__all__ = [
    "demo_command",
    "mosaic_command",
    "serve_command",
    "sweep_staging_command",
    "synth_command",
]


@click.command("demo")
@click.option(
    "--workdir", default=".work/demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--size", type=click.Choice(["demo", "tiny"]), default="demo", show_default=True)
@click.option(
    "--flavour", type=click.Choice(["usgs_c2", "dea_ard"]), default="usgs_c2", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Recompute tasks whose outputs exist.")
@click.option(
    "--index-driver",
    type=click.Choice(["postgres", "postgis"]),
    default="postgres",
    show_default=True,
    help="datacube index driver of the workdir's own index (a configured datacube says its own).",
)
@verbose_option
@one_line_errors
def demo_command(
    workdir: str, size: str, flavour: str, overwrite: bool, index_driver: str, verbose: bool
) -> None:
    """The main job, from scratch: index, archive, save-tasks, run, quicklooks."""
    from ..ops.signals import interrupts_raise

    with interrupts_raise():
        setup_logging(verbose)
        try:
            require("demo", "odc-ndvi demo")
            from ..dev.demo import run_demo

            report = run_demo(
                Path(workdir),
                size=size,
                flavour=flavour,
                overwrite=overwrite,
                index_driver=index_driver,
                progress=click.echo,
                verbose=verbose,
            )
        except KeyboardInterrupt:
            click.echo("interrupted; rerun to finish (finished tasks are skipped)", err=True)
            sys.exit(EXIT_INTERRUPTED)
    click.echo(report.text())
    if report.summary.failed:
        sys.exit(EXIT_FAILED)


@click.command("mosaic")
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
@verbose_option
@one_line_errors
def mosaic_command(location: str, out_dir: str, band: str, max_px: int) -> None:
    """One PNG per season of a run's outputs at LOCATION (path, file:// or s3://), all
    tiles stitched."""
    require("plot", "odc-ndvi mosaic")
    from ..mosaic import write_mosaics

    try:
        written = write_mosaics(
            location, Path(out_dir), band=band, max_px=max_px, progress=click.echo
        )
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{len(written)} mosaic(s) in {out_dir}")


def synth_command() -> click.Command:
    """``odc-ndvi synth`` (defined with the generator in ``dev.synthetic``), with the
    shared ``-v`` and one-line errors; imported when the command is asked for."""
    from ..dev.synthetic import synth_command as command

    return click.Command(
        command.name,
        params=[*command.params, verbose_param()],
        callback=one_line_errors(command.callback),
        help=command.help,
        short_help=command.short_help,
    )


@click.command("serve")
@click.option(
    "--workdir",
    default=".work/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The demo's workdir (its index, unless a datacube is configured; the services' "
    "files go to WORKDIR/serve).",
)
@click.option(
    "--config",
    "config_paths",
    multiple=True,
    help="Run config(s) whose outputs to serve (default: the demo's, cfg/run-usgs-c2-year.yaml).",
)
@click.option(
    "--location",
    help="Where the outputs are (a folder or file:// URL; default: WORKDIR/out, the demo's).",
)
@verbose_option
@one_line_errors
def serve_command(
    workdir: str, config_paths: tuple[str, ...], location: str | None, verbose: bool
) -> None:
    """Serve the outputs in datacube-ows (WMS/WMTS/WCS) and datacube-explorer (pages, STAC
    API) on 127.0.0.1, with a small map page; their URLs are printed; Ctrl-C stops them."""
    import time

    from ..ops.signals import interrupts_raise
    from .config import config_and_plugin

    with interrupts_raise():
        setup_logging(verbose)
        try:
            require("serve", "odc-ndvi serve")
            require("demo", "odc-ndvi serve")
            from .._shipped import cfg_dir
            from ..dev.index import open_index
            from ..dev.serve import serve

            paths = config_paths or (str(cfg_dir() / "run-usgs-c2-year.yaml"),)
            runs = []
            for path in paths:
                _, cfg, plugin = config_and_plugin(path)
                runs.append((plugin, cfg.product))
            where = Path(workdir) / "out" if location is None else _local_path(location)
            with (
                open_index(Path(workdir), init=True) as env,
                serve(env, runs, where, Path(workdir) / "serve", progress=click.echo) as served,
            ):
                click.echo(served.text())
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
            sys.exit(EXIT_INTERRUPTED)


def _local_path(location: str) -> Path:
    from ..storage import local_path

    path = local_path(location)
    if path is None:
        raise click.UsageError(
            f"--location {location}: serve reads local outputs (file:// or a folder)"
        )
    return path


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` or ``1d`` -> seconds (``click.BadParameter`` else)."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _DURATION_UNITS else "s"
    number = value[:-1] if value[-1:] in _DURATION_UNITS else value
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d)")
    return seconds


@click.command("sweep-staging")
@click.argument("location")
@click.option(
    "--older-than",
    default="24h",
    show_default=True,
    help="Remove attempts whose newest staged file is older than this (90s, 30m, 2h, 1d); "
    "make it longer than any attempt lives: the SQS lease with its renewals "
    "(job_queue_max_lease) and max_processing_time.",
)
@click.option("--dry-run", is_flag=True, help="Only list the attempts that would be removed.")
@verbose_option
@one_line_errors
def sweep_staging_command(location: str, older_than: str, dry_run: bool) -> None:
    """Remove staged files that killed runs left under LOCATION/.staging/ (file:// or
    s3://, the product's output location). Files under final names and STAC items are never
    touched; ``odc-ndvi run`` does the same with 24h before it starts."""
    from ..ops.commit import sweep_stale_staging
    from ..storage import as_url

    max_age = _duration(older_than)
    setup_logging(False)
    swept = sweep_stale_staging(as_url(location), max_age=max_age, dry_run=dry_run)
    for url in swept:
        click.echo(f"{'would remove' if dry_run else 'removed'} {url}")
    verb = "would be removed" if dry_run else "removed"
    click.echo(f"{len(swept)} staging attempt(s) older than {older_than} {verb}")
