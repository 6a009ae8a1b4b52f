"""The output product: its datacube product definition, derived from a run config.

Which code decides an output band's name, dtype and nodata? ``NDVIConfig.output_bands``
(from seasons.py and reduce/); this module only writes them down as an eo3 product
definition, so the STAC/EO3 documents odc-stats writes index back into a datacube.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from .plugin import NDVISeasonal

__all__ = ["dump_product_definition", "load_section", "output_product_definition"]


def output_product_definition(
    plugin: NDVISeasonal, product: dict[str, Any] | None = None, *, grid: str | None = None
) -> dict[str, Any]:
    """eo3 product definition for what ``plugin`` writes under the run config's ``product``
    block, like the output products DEA and DE Africa publish: ``metadata.properties`` that
    the STAC items odc-stats writes carry (file format, product family, producer), the
    licence from ``product.properties.license``, and with ``grid`` (the save-tasks grid,
    e.g. ``au-30`` or ``epsg:3577;30;512``) a ``load`` section (crs, resolution, align)."""
    product = dict(product or {})
    name = product.get("name", plugin.NAME)
    version = product.get("version", plugin.VERSION)
    cfg = plugin.config
    measurements = []
    for band in cfg.output_bands:
        nodata: Any = band.nodata
        if isinstance(nodata, float) and math.isnan(nodata):
            nodata = float("nan")
        doc = {"name": band.name, "dtype": band.dtype, "nodata": nodata, "units": "1"}
        measurements.append(doc)
    properties = {
        "odc:file_format": "GeoTIFF",
        "odc:product_family": product.get("product_family", plugin.PRODUCT_FAMILY),
    }
    if product.get("producer"):
        properties["odc:producer"] = product["producer"]
    out: dict[str, Any] = {
        "name": name,
        "description": (
            f"Cloud-masked seasonal NDVI statistics ({', '.join(cfg.band_statistics)}; season_mode "
            f"{cfg.seasons.mode}), version {version}, by odc-ndvi-plugin {plugin.VERSION}"
        ),
        "metadata_type": "eo3",
    }
    licence = (product.get("properties") or {}).get("license")
    if licence:
        out["license"] = licence
    out["metadata"] = {"product": {"name": name}, "properties": properties}
    if grid is not None:
        out["load"] = load_section(grid)
    out["measurements"] = measurements
    return out


def load_section(grid: str) -> dict[str, Any]:
    """``load: {crs, resolution, align}`` of an odc-stats grid name or ``crs;res;tile`` spec."""
    from odc.dscache.tools.tiling import parse_gridspec_with_name

    try:
        _, gridspec = parse_gridspec_with_name(grid)
    except Exception as err:  # noqa: BLE001 - odc-dscache raises several kinds
        raise ValueError(
            f"grid {grid!r} is not an odc-stats grid (a name such as au-30 or africa-30, or "
            f"'epsg:CODE;RESOLUTION;TILE_PX'): {err}"
        ) from err
    res, origin = gridspec.resolution, gridspec.origin

    def number(v: float) -> float | int:
        return int(v) if float(v).is_integer() else float(v)

    return {
        "crs": str(gridspec.crs),
        "resolution": {"y": number(res.y), "x": number(res.x)},
        "align": {"y": number(origin.y % abs(res.y)), "x": number(origin.x % abs(res.x))},
    }


def dump_product_definition(doc: dict[str, Any]) -> str:
    """YAML text of a product definition (NaN nodata written as ``.nan``)."""
    return yaml.safe_dump(doc, sort_keys=False)
