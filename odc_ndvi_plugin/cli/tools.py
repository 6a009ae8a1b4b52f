"""``odc-ndvi demo``, ``mosaic`` and ``synth``: the demo, pictures of a run's outputs and
synthetic archives. ``dev/`` (the demo tooling) is imported inside the commands only."""

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

__all__ = ["demo_command", "mosaic_command", "synth_command"]


@click.command("demo")
@click.option(
    "--workdir", default=".work/demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--size", type=click.Choice(["demo", "tiny"]), default="demo", show_default=True)
@click.option(
    "--flavour", type=click.Choice(["usgs_c2", "dea_ard"]), default="usgs_c2", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Recompute tasks whose outputs exist.")
@verbose_option
@one_line_errors
def demo_command(workdir: str, size: str, flavour: str, overwrite: bool, verbose: bool) -> None:
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
