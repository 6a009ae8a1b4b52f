"""``odc-ndvi synth``: the archive generator on the command line."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from ._encodings import FLAVOURS, TILE_CRS, Flavour
from ._spec import ArchiveSpec, _date
from ._writers import generate_archive

# --- command line ------------------------------------------------------------------------------


def _parse_tiles(_ctx: Any, _param: Any, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        nx, ny = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter("expected WxH, e.g. 2x2") from None
    return nx, ny


def _parse_date(_ctx: Any, param: Any, value: str | None) -> dt.date | None:
    from ..._validate import check_date
    from ...errors import ConfigError

    if value is None:
        return None
    try:
        return check_date(value, "")
    except ConfigError as err:
        raise click.BadParameter(err.problem) from None


def _parse_crs(_ctx: Any, _param: Any, value: str) -> str:
    """A projected CRS in metres (scenes are laid out in metres), as pyproj knows it."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(value)
    except CRSError:
        raise click.BadParameter(
            f"{value!r} is not a CRS that PROJ knows (e.g. EPSG:3577, EPSG:32755)"
        ) from None
    units = {axis.unit_name for axis in crs.axis_info}
    if not crs.is_projected or units != {"metre"}:
        raise click.BadParameter(
            f"{value!r} is not a projected CRS in metres (scenes are laid out in metres; "
            f"e.g. EPSG:3577, EPSG:32755)"
        )
    return value


@click.command("synth")
@click.option("--flavour", type=click.Choice(FLAVOURS), default="usgs_c2", show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output directory (re-running skips scenes already written).",
)
@click.option("--preset", type=click.Choice(["tiny", "demo"]), default="demo", show_default=True)
@click.option("--tiles", callback=_parse_tiles, help="Region size in tiles, WxH (e.g. 2x2).")
@click.option("--tile-px", type=int, help="odc-stats tile size in pixels (grid epsg:3577;30;N).")
@click.option("--start", callback=_parse_date, help="First solar date (YYYY-MM-DD).")
@click.option("--end", callback=_parse_date, help="Last solar date (YYYY-MM-DD).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--crs",
    default=TILE_CRS,
    show_default=True,
    callback=_parse_crs,
    help="Scene CRS; e.g. EPSG:32755 for UTM scenes (tiles stay in EPSG:3577).",
)
@click.option("--cloudiness", type=float, help="Mean cloud fraction per date (0..1).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def synth_command(
    flavour: Flavour,
    out_dir: str,
    preset: str,
    tiles: tuple[int, int] | None,
    tile_px: int | None,
    start: dt.date | None,
    end: dt.date | None,
    seed: int,
    crs: str,
    cloudiness: float | None,
    quiet: bool,
) -> None:
    """Generate a deterministic synthetic Landsat archive (COGs + EO3 documents)."""
    kwargs: dict[str, Any] = {"flavour": flavour, "seed": seed, "crs": crs}
    if tiles is not None:
        kwargs["tiles"] = tiles
    if tile_px is not None:
        kwargs["tile_px"] = tile_px
    if start is not None:
        kwargs["start"] = _date(start)
    if end is not None:
        kwargs["end"] = _date(end)
    if cloudiness is not None:
        kwargs["cloudiness"] = cloudiness
    factory = ArchiveSpec.tiny if preset == "tiny" else ArchiveSpec.demo
    try:
        spec = factory(**kwargs)
    except ValueError as e:
        raise click.UsageError(str(e)) from e

    def _progress(done: int, total: int, message: str) -> None:
        if done == total or done % 10 == 0:
            click.echo(f"[{done}/{total}] {message}", err=True)

    archive = generate_archive(spec, out_dir, progress=None if quiet else _progress)
    click.echo(
        f"{len(archive.scenes)} {archive.product} scenes on {len(archive.solar_dates)} solar days"
        f" in {archive.root}; product definition {archive.product_definition};"
        f" grid {spec.gridspec}; tiles {sorted(spec.tiles())}"
    )
