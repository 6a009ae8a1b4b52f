"""Per-product-family facts: the one home of band names, clear-pixel flags and scaling.

A preset names the three bands the plugin reads *as the family's product definitions declare
them* (a canonical name or an alias: ``red_band: red`` finds ``SR_B4`` on DE Africa's
``ls8_sr`` and ``SR_B3`` on ``ls7_sr``), the tutorial's clear-pixel flags for the family's
mask band, that band's flag table (so flags are checked before any product is seen), and
the family's published reflectance scaling, used for a band whose definition declares none.

Real product definitions of these families are vendored under ``tests/data/real/products``
(with their sources) and the tests run every preset against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "C2_QA_PIXEL_FLAGS",
    "C2_REFLECTANCE_SCALING",
    "DEA_ARD_REFLECTANCE_SCALING",
    "DEA_FMASK_FLAGS",
    "NO_PRESET",
    "PRESETS",
    "Preset",
]


@dataclass(frozen=True)
class Preset:
    """What the plugin knows about one family of input products."""

    #: band names as the family's products declare them (canonical name or alias)
    red_band: str
    nir_band: str
    mask_band: str
    #: the tutorial's ``make_mask(mask_band, **good_pixel_flags)`` for this family
    good_pixel_flags: Mapping[str, Any]
    #: the mask band's flag table, as in the family's product definitions
    flags_definition: Mapping[str, Any]
    #: published ``(scale_factor, add_offset)`` from digital numbers to reflectance, for a
    #: red/NIR band whose product definition declares none (real C2 definitions declare none)
    reflectance_scaling: tuple[float, float]
    #: products of the family the preset is tested against (documentation)
    products: tuple[str, ...]


#: USGS Collection 2 Level-2 surface reflectance: reflectance = DN * 0.0000275 - 0.2
#: (USGS "Landsat Collection 2 Level-2 Science Products", scale factors)
C2_REFLECTANCE_SCALING = (0.0000275, -0.2)
#: DEA Collection 3 ARD (NBART): reflectance * 10000
DEA_ARD_REFLECTANCE_SCALING = (0.0001, 0.0)

_C2_CLOUD_CONFIDENCE = {0: "none", 1: "low", 2: "medium", 3: "high"}
# USGS reserves the "medium" level of the other three confidence pairs
_C2_CONFIDENCE = {0: "none", 1: "low", 2: "reserved", 3: "high"}
_C2_HIGH = {0: "not_high_confidence", 1: "high_confidence"}

#: USGS Collection 2 Level-2 QA_PIXEL (as in DE Africa's ls8_sr and the community
#: ls8_c2l2_sr definitions, and cfg/products/ls_c2l2_sr.odc-product.yaml)
C2_QA_PIXEL_FLAGS: Mapping[str, Any] = {
    "nodata": {"bits": 0, "values": {0: False, 1: True}},
    "dilated_cloud": {"bits": 1, "values": {0: "not_dilated", 1: "dilated"}},
    "cirrus": {"bits": 2, "values": {0: "not_high_confidence", 1: "high_confidence"}},
    "cloud": {"bits": 3, "values": _C2_HIGH},
    "cloud_shadow": {"bits": 4, "values": _C2_HIGH},
    "snow": {"bits": 5, "values": _C2_HIGH},
    "clear": {"bits": 6, "values": {0: False, 1: True}},
    "water": {"bits": 7, "values": {0: "land_or_cloud", 1: "water"}},
    "cloud_confidence": {"bits": [8, 9], "values": _C2_CLOUD_CONFIDENCE},
    "cloud_shadow_confidence": {"bits": [10, 11], "values": _C2_CONFIDENCE},
    "snow_ice_confidence": {"bits": [12, 13], "values": _C2_CONFIDENCE},
    "cirrus_confidence": {"bits": [14, 15], "values": _C2_CONFIDENCE},
}

#: DEA Collection 3 ARD Fmask (as in ga_ls8c_ard_3 and cfg/products/ga_ls_ard_3.odc-product.yaml)
DEA_FMASK_FLAGS: Mapping[str, Any] = {
    "fmask": {
        "bits": [0, 1, 2, 3, 4, 5, 6, 7],
        "values": {0: "nodata", 1: "valid", 2: "cloud", 3: "shadow", 4: "snow", 5: "water"},
    }
}

#: the tutorial's clear-pixel rule on C2 QA_PIXEL
_C2_TUTORIAL_FLAGS = {
    "nodata": False,
    "cloud": "not_high_confidence",
    "cloud_shadow": "not_high_confidence",
    "water": "land_or_cloud",
}

#: ``preset: none``: no family; band names and flags must be given, scaling comes from the
#: product definition or ``scale_factor``/``add_offset``
NO_PRESET = "none"

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        # EASI-style and community C2 products (landsat8_c2l2_sr, ls8_c2l2_sr, ...): STAC names
        "usgs_c2": Preset(
            red_band="red",
            nir_band="nir08",
            mask_band="qa_pixel",
            good_pixel_flags=_C2_TUTORIAL_FLAGS,
            flags_definition=C2_QA_PIXEL_FLAGS,
            reflectance_scaling=C2_REFLECTANCE_SCALING,
            products=("ls5_c2l2_sr", "ls7_c2l2_sr", "ls8_c2l2_sr", "ls9_c2l2_sr", "ls_c2l2_sr"),
        ),
        # Digital Earth Africa's C2 products: canonical SR_Bn / QA_PIXEL, common aliases
        # (red is SR_B4 on ls8/ls9, SR_B3 on ls5/ls7)
        "deafrica_c2": Preset(
            red_band="red",
            nir_band="nir",
            mask_band="pixel_quality",
            good_pixel_flags=_C2_TUTORIAL_FLAGS,
            flags_definition=C2_QA_PIXEL_FLAGS,
            reflectance_scaling=C2_REFLECTANCE_SCALING,
            products=("ls5_sr", "ls7_sr", "ls8_sr", "ls9_sr"),
        ),
        # DEA Collection 3 ARD (ga_ls8c_ard_3, ga_ls9c_ard_3, ...)
        "dea_ard": Preset(
            red_band="nbart_red",
            nir_band="nbart_nir",
            mask_band="oa_fmask",
            good_pixel_flags={"fmask": "valid"},
            flags_definition=DEA_FMASK_FLAGS,
            reflectance_scaling=DEA_ARD_REFLECTANCE_SCALING,
            products=("ga_ls5t_ard_3", "ga_ls7e_ard_3", "ga_ls8c_ard_3", "ga_ls9c_ard_3"),
        ),
    }
)
