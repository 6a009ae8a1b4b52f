"""What the synthetic archive's pixels mean and how they are encoded: flavours (USGS C2, DEA
ARD), conditions and land covers, QA_PIXEL / fmask encodings, reflectance scaling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..._shipped import cfg_dir
from ...presets import PRESETS

Flavour = Literal["usgs_c2", "dea_ard"]
FLAVOURS: tuple[Flavour, ...] = ("usgs_c2", "dea_ard")

#: ``progress(done, total, message)``; called once per scene (written or skipped).
ProgressCallback = Callable[[int, int, str], None]

TILE_CRS = "EPSG:3577"
SPEC_FILENAME = "synthetic-archive.yaml"
DATASET_SCHEMA = "https://schemas.opendatacube.org/dataset"

# Top-left corner of the default region (EPSG:3577 metres): the Monaro / Snowy Mountains in
# south-eastern Australia (about 148.4 E, 36.2 S, UTM zone 55). A multiple of 30 * 1024, so the
# region is aligned to odc-stats tiles "epsg:3577;30;N" for every N dividing 1024.
DEFAULT_ANCHOR: tuple[float, float] = (1_474_560.0, -4_055_040.0)


class Condition(IntEnum):
    """What a scene observed at a pixel (mutually exclusive, highest priority wins).

    Priority (high to low): NODATA, CLOUD_HIGH, CLOUD_DILATED_RING, CLOUD_MEDIUM, SHADOW, CIRRUS,
    SNOW, WATER, CLEAR_LAND. Water surfaces additionally set the qa_pixel water bit under every
    condition except NODATA and CLOUD_HIGH (see :func:`encode_qa_pixel`).
    """

    NODATA = 0
    CLEAR_LAND = 1
    WATER = 2
    SNOW = 3
    CLOUD_HIGH = 4
    CLOUD_MEDIUM = 5
    CLOUD_DILATED_RING = 6
    SHADOW = 7
    CIRRUS = 8


class LandCover(IntEnum):
    """Static land-cover classes of the synthetic surface."""

    WATER = 0
    FOREST = 1
    CROP = 2
    GRASSLAND = 3
    BARE_URBAN = 4


# --- encodings ---------------------------------------------------------------------------------

# USGS C2 QA_PIXEL: every valid pixel carries "low" in the four confidence pairs unless raised.
_QA_LOW_CONFIDENCES = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # 21760
_QA_CLEAR, _QA_WATER = 1 << 6, 1 << 7

#: qa_pixel value per condition for a land surface (water surfaces: see :func:`encode_qa_pixel`).
#: These are the values real C2 L2 products carry (21824 clear, 22280 high-confidence cloud,
#: 21762 dilated cloud, 22080 medium-confidence cloud, 23888 shadow, 30048 snow, 54596 cirrus,
#: 21952 clear water, 1 fill).
QA_PIXEL_BY_CONDITION: dict[Condition, int] = {
    Condition.NODATA: 1,
    Condition.CLEAR_LAND: _QA_LOW_CONFIDENCES | _QA_CLEAR,
    Condition.WATER: _QA_LOW_CONFIDENCES | _QA_CLEAR | _QA_WATER,
    # snow bit 5, snow/ice confidence high, clear
    Condition.SNOW: (_QA_LOW_CONFIDENCES | (3 << 12)) | _QA_CLEAR | (1 << 5),
    # cloud bit 3, cloud confidence high, NOT clear
    Condition.CLOUD_HIGH: (_QA_LOW_CONFIDENCES | (3 << 8)) | (1 << 3),
    # cloud confidence medium only: cloud bit stays 0, clear stays 1 (USGS semantics)
    Condition.CLOUD_MEDIUM: (_QA_LOW_CONFIDENCES & ~(3 << 8) | (2 << 8)) | _QA_CLEAR,
    # dilated cloud bit 1, NOT clear
    Condition.CLOUD_DILATED_RING: _QA_LOW_CONFIDENCES | (1 << 1),
    # shadow bit 4, shadow confidence high, clear
    Condition.SHADOW: (_QA_LOW_CONFIDENCES | (3 << 10)) | _QA_CLEAR | (1 << 4),
    # cirrus bit 2, cirrus confidence high, clear
    Condition.CIRRUS: (_QA_LOW_CONFIDENCES | (3 << 14)) | _QA_CLEAR | (1 << 2),
}

#: oa_fmask value per condition (DEA fmask folds medium-confidence cloud, the dilation ring and
#: cirrus into "cloud").
FMASK_BY_CONDITION: dict[Condition, int] = {
    Condition.NODATA: 0,
    Condition.CLEAR_LAND: 1,
    Condition.WATER: 5,
    Condition.SNOW: 4,
    Condition.CLOUD_HIGH: 2,
    Condition.CLOUD_MEDIUM: 2,
    Condition.CLOUD_DILATED_RING: 2,
    Condition.SHADOW: 3,
    Condition.CIRRUS: 2,
}

_QA_LUT = np.array([QA_PIXEL_BY_CONDITION[c] for c in Condition], dtype=np.uint16)
_FMASK_LUT = np.array([FMASK_BY_CONDITION[c] for c in Condition], dtype=np.uint8)


def encode_qa_pixel(condition: np.ndarray, water: np.ndarray) -> np.ndarray:
    """USGS C2 ``qa_pixel`` for condition codes; ``water`` (surface is water) sets bit 7.

    The water bit ("0: land_or_cloud") is set for water surfaces under every condition except
    NODATA and CLOUD_HIGH, as in real C2 products (e.g. 21890 dilated cloud over water).
    """
    condition = np.asarray(condition)
    qa = _QA_LUT[condition]
    wbit = np.asarray(water, dtype=bool) & (condition != Condition.NODATA)
    wbit &= condition != Condition.CLOUD_HIGH
    return qa | (wbit.astype(np.uint16) << np.uint16(7))


def encode_fmask(condition: np.ndarray) -> np.ndarray:
    """DEA ``oa_fmask`` enumeration for condition codes."""
    return _FMASK_LUT[np.asarray(condition)]


@dataclass(frozen=True)
class _FlavourInfo:
    product: str
    red: str
    nir: str
    mask: str
    dtype: str
    nodata: int
    scale: float
    offset: float
    dn_min: int
    dn_max: int
    mask_dtype: str
    mask_nodata: int
    product_family: str
    producer: str


def _flavour(preset: str, **encoding: Any) -> _FlavourInfo:
    """A flavour's bands and reflectance scaling are its preset's (one place for those
    facts: odc_ndvi_plugin/presets.py); the rest is how the generator encodes files."""
    p = PRESETS[preset]
    scale, offset = p.reflectance_scaling
    return _FlavourInfo(
        red=p.red_band, nir=p.nir_band, mask=p.mask_band, scale=scale, offset=offset, **encoding
    )


_FLAVOUR_INFO: dict[str, _FlavourInfo] = {
    "usgs_c2": _flavour(
        "usgs_c2",
        product="ls_c2l2_sr",
        dtype="uint16",
        nodata=0,
        dn_min=1,
        dn_max=65535,
        mask_dtype="uint16",
        mask_nodata=1,
        product_family="sr",
        producer="usgs.gov",
    ),
    "dea_ard": _flavour(
        "dea_ard",
        product="ga_ls_ard_3",
        dtype="int16",
        nodata=-999,
        dn_min=-998,
        dn_max=32767,
        mask_dtype="uint8",
        mask_nodata=0,
        product_family="ard",
        producer="ga.gov.au",  # the input product's producer (DEA's ARD), not ours
    ),
}

#: Product name per flavour.
PRODUCT_NAMES: dict[str, str] = {k: v.product for k, v in _FLAVOUR_INFO.items()}
#: Measurement names per flavour: (red, nir, mask).
MEASUREMENTS: dict[str, tuple[str, str, str]] = {
    k: (v.red, v.nir, v.mask) for k, v in _FLAVOUR_INFO.items()
}


def _encode_reflectance(info: _FlavourInfo, rho: np.ndarray) -> np.ndarray:
    dn = np.round((rho - info.offset) / info.scale)
    return np.clip(dn, info.dn_min, info.dn_max).astype(info.dtype)


def decode(flavour: Flavour, dn: np.ndarray) -> np.ndarray:
    """Reflectance (float64) from stored DNs: ``DN * scale + offset``; NaN where nodata."""
    info = _FLAVOUR_INFO[flavour]
    dn = np.asarray(dn)
    out = dn.astype(np.float64) * info.scale + info.offset
    out[dn == info.nodata] = np.nan
    return out


def product_definition_path(flavour: Flavour) -> Path:
    """The product definition yaml of a flavour in this source tree (``cfg/products``)."""
    path = cfg_dir() / "products" / f"{_FLAVOUR_INFO[flavour].product}.odc-product.yaml"
    if not path.exists():
        raise FileNotFoundError(f"product definition not found: {path}")
    return path
