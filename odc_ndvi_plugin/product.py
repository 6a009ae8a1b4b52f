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

__all__ = ["output_product_definition", "dump_product_definition"]


def output_product_definition(
    plugin: NDVISeasonal, product: dict[str, Any] | None = None
) -> dict[str, Any]:
    """eo3 product definition for what ``plugin`` writes under the run config's ``product`` block."""
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
    return {
        "name": name,
        "description": (
            f"Cloud-masked seasonal NDVI statistics ({', '.join(cfg.statistics)}; season_mode "
            f"{cfg.seasons.mode}), version {version}, by odc-ndvi-plugin {plugin.VERSION}"
        ),
        "metadata_type": "eo3",
        "license": "CC-BY-4.0",
        "metadata": {"product": {"name": name}},
        "measurements": measurements,
    }


def dump_product_definition(doc: dict[str, Any]) -> str:
    """YAML text of a product definition (NaN nodata written as ``.nan``)."""
    return yaml.safe_dump(doc, sort_keys=False)
