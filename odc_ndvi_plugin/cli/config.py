"""``odc-ndvi check-config``, ``product-definition``, ``ows-config`` and ``init-config``:
configs checked, described and written without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import one_line_errors, plugin_of, read_yaml, verbose_option

__all__ = [
    "check_config_command",
    "config_and_plugin",
    "init_config_command",
    "ows_config_command",
    "product_definition_command",
]


def config_and_plugin(config_path: str) -> tuple[dict[str, Any], Any, Any]:
    """The run config file's mapping, the validated run config and its plugin instance."""
    from ..ops.runconfig import load_run_config

    doc = read_yaml(config_path, "run config")
    cfg, _ = load_run_config(doc)
    return doc, cfg, plugin_of(cfg, config_path)


@click.command("check-config")
@click.argument("config_path")
@click.option(
    "--product",
    "products",
    multiple=True,
    help="Also check the band names against this input product in the configured datacube "
    "(repeatable; default: the file's input_products, when a datacube is reachable).",
)
@verbose_option
@one_line_errors
def check_config_command(config_path: str, products: tuple[str, ...]) -> None:
    """Validate a run config and its plugin_config without running anything."""
    doc, cfg, plugin = config_and_plugin(config_path)
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
    from .._redact import redact_text
    from ..errors import DatacubeUnavailable

    try:
        from datacube import Datacube

        dc = Datacube(app="odc-ndvi-check-config")
        found = {name: dc.index.products.get_by_name(name) for name in names}
    except Exception as err:  # noqa: BLE001 - any connection/config failure
        reason = redact_text(f"{type(err).__name__}: {err}".splitlines()[0])
        if required:
            raise DatacubeUnavailable(
                f"cannot check products {', '.join(names)}: {reason}"
            ) from err
        click.echo(f"note: band names not checked against a datacube ({reason})", err=True)
        return
    from ..errors import ConfigError

    for name, product in found.items():
        if product is None:
            raise ConfigError("input_products", f"{name!r} is not in the datacube")
        try:
            plugin.validate_product(product)
        except ValueError as err:
            raise ConfigError("", str(err)) from err
    click.echo(f"checked against the datacube: {', '.join(names)}")


@click.command("product-definition")
@click.argument("config_path")
@click.option(
    "--grid",
    help="The save-tasks grid (au-30, africa-30, 'epsg:3577;30;512'...) for the definition's "
    "load section (default: the config's own grid key, if it has one).",
)
@verbose_option
@one_line_errors
def product_definition_command(config_path: str, grid: str | None) -> None:
    """Print the output product definition (eo3 YAML) for a run config."""
    from ..errors import ConfigError
    from ..plugin import NDVISeasonal
    from ..product import dump_product_definition, output_product_definition

    doc, cfg, plugin = config_and_plugin(config_path)
    if not isinstance(plugin, NDVISeasonal):
        raise ConfigError(
            f"run config {config_path!r}: plugin",
            f"{cfg.plugin!r} is not odc_ndvi_plugin.NDVISeasonal; product-definition "
            f"describes the outputs of this plugin only",
        )
    grid = grid or doc.get("grid")
    text = dump_product_definition(output_product_definition(plugin, cfg.product, grid=grid))
    click.echo(text, nl=False)


@click.command("init-config")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace files that exist (default: keep them).")
@verbose_option
@one_line_errors
def init_config_command(directory: str, overwrite: bool) -> None:
    """Write the shipped configs into DIRECTORY to start from: run and save-tasks configs,
    drop-in examples for DEA, DE Africa and USGS C2, product definitions, the gateway
    cluster options and the Kubernetes Jobs."""
    from .._shipped import init_config

    written, kept = init_config(Path(directory), overwrite=overwrite)
    click.echo(f"{len(written)} file(s) written to {directory}")
    if kept:
        click.echo(f"{len(kept)} existing file(s) kept (--overwrite replaces them)")


@click.command("ows-config")
@click.argument("config_paths", nargs=-1, required=True)
@click.option(
    "--grid",
    help="The save-tasks grid (au-30, africa-30, 'epsg:3577;30;512'...): the layers' native CRS "
    "and resolution (default: each config's own grid key).",
)
@click.option(
    "--url",
    default="http://127.0.0.1:8000/",
    show_default=True,
    help="Where datacube-ows will be reached (its allowed_urls).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: stdout)."
)
@verbose_option
@one_line_errors
def ows_config_command(
    config_paths: tuple[str, ...], grid: str | None, url: str, output: str | None
) -> None:
    """Print a datacube-ows configuration (JSON, for $DATACUBE_OWS_CFG) for the outputs of
    run configs: one layer per output product, one style per band (NDVI ramp; counts;
    anomalies on a diverging ramp centred on 0), legends, nodata transparent."""
    import json

    from ..errors import ConfigError
    from ..ows import ows_config
    from ..plugin import NDVISeasonal
    from ..product import output_product_definition

    products = []
    for path in config_paths:
        doc, cfg, plugin = config_and_plugin(path)
        if not isinstance(plugin, NDVISeasonal):
            raise ConfigError(
                f"run config {path!r}: plugin",
                f"{cfg.plugin!r} is not odc_ndvi_plugin.NDVISeasonal",
            )
        this_grid = grid or doc.get("grid")
        if not this_grid:
            raise ConfigError(
                f"run config {path!r}: grid",
                "no grid key: give --grid (the save-tasks grid, e.g. au-30)",
            )
        products.append(output_product_definition(plugin, cfg.product, grid=this_grid))
    text = json.dumps(ows_config(products, url=url), indent=1) + "\n"
    if output:
        Path(output).write_text(text)
        click.echo(f"{len(products)} layer(s) written to {output}")
    else:
        click.echo(text, nl=False)
