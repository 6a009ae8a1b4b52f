"""datacube-ows layer configuration for our output products (pure: documents in, a dict out).

One layer per output product, named after it, with every band of its product definition
(:func:`~odc_ndvi_plugin.product.output_product_definition`); one style per band, chosen
by what the band holds:

* NDVI values (``ndvi_mean_<s>``, ``ndvi_median``, ``ndvi_min``, ...): the usual NDVI ramp,
  brown (bare) through yellow to dark green (dense vegetation);
* anomalies (``ndvi_anomaly``: NDVI units; ``ndvi_std_anomaly``: standard deviations):
  a diverging brown-white-teal ramp centred on 0 (drier / greener than the baseline);
* spreads (``ndvi_std_<s>``): a sequential purple ramp from 0;
* counts (``clear_count_<s>``, ``clear_years_<s>``, ``baseline_years``): grey for 0 (no
  clear observation: a count, not nodata), then a sequential blue ramp from 1.

Nodata is transparent: NaN for the float bands (``mask_by_nan``) and the product's nodata
value for the counts (``mask_by_val``: 65535). Time is the task periods:
``time_resolution: summary`` lists each dataset's start date (e.g. ``2019-12-01`` for the
task ``2019-12--P12M``). Every style carries a legend. The dict is what datacube-ows loads
from a JSON file named by ``$DATACUBE_OWS_CFG`` (``odc-ndvi ows-config ... -o ows_cfg.json``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["RAMPS", "band_kind", "ows_config", "ows_layer"]

Ramp = list[dict[str, Any]]

#: colour ramps (value -> colour, linear in between; beyond the ends the end colours):
#: NDVI from bare/water browns to dense-vegetation greens
_NDVI: Ramp = [
    {"value": -0.2, "color": "#5e3c1b"},
    {"value": 0.0, "color": "#8f6a3a"},
    {"value": 0.1, "color": "#b8924c"},
    {"value": 0.2, "color": "#d9c063"},
    {"value": 0.3, "color": "#efe38a"},
    {"value": 0.4, "color": "#c7e07a"},
    {"value": 0.5, "color": "#93c85a"},
    {"value": 0.6, "color": "#5fad41"},
    {"value": 0.7, "color": "#33902f"},
    {"value": 0.8, "color": "#176f22"},
    {"value": 0.9, "color": "#0a4f14"},
]
#: anomalies: colour-blind safe brown (below the baseline) - white - teal (above), centred on 0
_DIVERGING = ["#8c510a", "#d8b365", "#f6e8c3", "#f5f5f5", "#c7eae5", "#5ab4ac", "#01665e"]


def _diverging(limit: float) -> Ramp:
    steps = len(_DIVERGING) // 2
    return [
        {"value": round(limit * (i - steps) / steps, 6), "color": colour}
        for i, colour in enumerate(_DIVERGING)
    ]


RAMPS: dict[str, Ramp] = {
    "ndvi": _NDVI,
    "anomaly": _diverging(0.3),
    "std_anomaly": _diverging(3.0),
    "spread": [
        {"value": 0.0, "color": "#f2f0f7"},
        {"value": 0.1, "color": "#9e9ac8"},
        {"value": 0.25, "color": "#54278f"},
    ],
    "count": [
        {"value": 0, "color": "#bdbdbd"},  # no clear observation: grey (a value, not nodata)
        {"value": 1, "color": "#deebf7"},
        {"value": 6, "color": "#9ecae1"},
        {"value": 12, "color": "#4292c6"},
        {"value": 24, "color": "#08306b"},
    ],
}
"""Ramps by band kind (:func:`band_kind`), as datacube-ows ``color_ramp`` lists."""

_UNITS = {
    "ndvi": "NDVI",
    "anomaly": "NDVI difference from the baseline",
    "std_anomaly": "standard deviations from the baseline",
    "spread": "NDVI standard deviation",
    "count": "count",
}
_MASKS = ["datacube_ows.ogc_utils.mask_by_val", "datacube_ows.ogc_utils.mask_by_nan"]
_SUMMARY = {
    "ndvi": "NDVI",
    "anomaly": "NDVI anomaly (this season minus the baseline's mean)",
    "std_anomaly": "standardised NDVI anomaly (anomaly / the baseline's standard deviation)",
    "spread": "NDVI standard deviation",
    "count": "count",
}


def band_kind(name: str) -> str:
    """Which ramp a band gets: ``ndvi``, ``anomaly``, ``std_anomaly``, ``spread`` or ``count``."""
    if name.startswith("ndvi_std_anomaly"):
        return "std_anomaly"
    if name.startswith("ndvi_anomaly"):
        return "anomaly"
    if re.match(r"ndvi_std(_|$)", name):
        return "spread"
    if name.startswith("ndvi_"):
        return "ndvi"
    if re.match(r"(clear_count|clear_years|baseline_years)(_|$)", name):
        return "count"
    raise ValueError(f"band {name!r}: no OWS style for it (not an NDVI, anomaly or count band)")


def _legend(kind: str) -> dict[str, Any]:
    ramp = RAMPS[kind]
    begin, end = ramp[0]["value"], ramp[-1]["value"]
    decimals = 0 if kind == "count" else (1 if kind in ("ndvi", "std_anomaly") else 2)
    return {
        "begin": str(begin),
        "end": str(end),
        "ticks": [str(n["value"]) for n in ramp[:: max(1, (len(ramp) - 1) // 3)]],
        "units": _UNITS[kind],
        "decimal_places": decimals,
    }


def _style(band: str) -> dict[str, Any]:
    kind = band_kind(band)
    return {
        "name": band,
        "title": band,
        "abstract": f"{_SUMMARY[kind]}: band {band}",
        "index_function": {
            "function": "datacube_ows.band_utils.single_band",
            "mapped_bands": True,
            "kwargs": {"band": band},
        },
        "needed_bands": [band],
        "color_ramp": RAMPS[kind],
        "legend": _legend(kind),
    }


def ows_layer(product: dict[str, Any]) -> dict[str, Any]:
    """A datacube-ows named layer for an output product definition (with its ``load``
    section: the grid's CRS and resolution are the layer's native ones)."""
    name = product["name"]
    load = product.get("load")
    if not load:
        raise ValueError(
            f"product {name!r} has no load section (crs, resolution): give the save-tasks grid"
        )
    bands = [m["name"] for m in product["measurements"]]
    styles = [_style(b) for b in bands]
    default = next((s["name"] for s in styles if band_kind(s["name"]) == "ndvi"), bands[0])
    res = load["resolution"]
    return {
        "title": name,
        "name": name,
        "abstract": product.get("description", name),
        "product_name": name,
        "bands": {b: [] for b in bands},
        "native_crs": load["crs"],
        "native_resolution": [res["x"], -abs(res["y"])],
        # one time per task period: its start date
        "time_resolution": "summary",
        "resource_limits": {
            "wms": {"zoomed_out_fill_colour": [150, 180, 200, 160], "min_zoom_factor": 0.0},
            "wcs": {"max_datasets": 64},
        },
        "image_processing": {
            "extent_mask_func": _MASKS,
            "always_fetch_bands": [],
            "manual_merge": False,
        },
        "wcs": {"native_format": "GeoTIFF"},
        "styling": {"default_style": default, "styles": styles},
    }


def ows_config(
    products: Sequence[dict[str, Any]],
    *,
    title: str = "Seasonal NDVI (odc-ndvi-plugin)",
    url: str = "http://127.0.0.1:8000/",
    env: str | None = None,
) -> dict[str, Any]:
    """A whole datacube-ows configuration: WMS, WMTS and WCS of one layer per product.

    ``url``: where the service is reached (its ``allowed_urls``); ``env``: the ODC
    environment name (None: datacube's default resolution, e.g. ``$ODC_ENVIRONMENT``)."""
    crses: dict[str, dict[str, Any]] = {
        "EPSG:3857": {"geographic": False, "horizontal_coord": "x", "vertical_coord": "y"},
        "EPSG:4326": {"geographic": True, "vertical_coord_first": True},
    }
    for product in products:
        crs = str((product.get("load") or {}).get("crs", "")).upper()
        if crs and crs not in crses:
            crses[crs] = {"geographic": False, "horizontal_coord": "x", "vertical_coord": "y"}
    names = [p["name"] for p in products]
    producers = {
        p.get("metadata", {}).get("properties", {}).get("odc:producer") for p in products
    } - {None}
    producer = ", ".join(sorted(producers)) or "odc-ndvi-plugin"
    if len(set(names)) != len(names):
        raise ValueError(f"two run configs write the same product: {names}")
    glob: dict[str, Any] = {
        "response_headers": {"Access-Control-Allow-Origin": "*"},
        "services": {"wms": True, "wmts": True, "wcs": True},
        "title": title,
        "abstract": "Cloud-masked seasonal NDVI statistics written by odc-stats with "
        "odc-ndvi-plugin (configuration generated by `odc-ndvi ows-config`).",
        "info_url": "https://github.com/opendatacube/odc-stats",
        "keywords": ["NDVI", "seasonal", "Landsat", "odc-stats"],
        "allowed_urls": [url],
        # the publisher named in the products' metadata; WCS 2 capabilities need a contact
        # with an address block (fill in yours)
        "contact_info": {"organisation": producer, "address": {"type": "postal"}},
        "fees": "",
        "access_constraints": "",
        "published_CRSs": crses,
    }
    if env is not None:
        glob["env"] = env
    return {
        "global": glob,
        "wms": {"max_width": 2048, "max_height": 2048},
        "wcs": {
            "formats": {
                "GeoTIFF": {
                    "renderers": {
                        "1": "datacube_ows.wcs1_utils.get_tiff",
                        "2": "datacube_ows.wcs2_utils.get_tiff",
                    },
                    "mime": "image/geotiff",
                    "extension": "tif",
                    "multi-time": False,
                }
            },
            "native_format": "GeoTIFF",
        },
        "layers": [
            {
                "title": title,
                "abstract": "One layer per output product; one style per band.",
                "layers": [ows_layer(p) for p in products],
            }
        ],
    }
