"""NDVI of one observation at its native resolution: mask, scale, ratio.

NDVI is computed on reflectance (``DN * scale_factor + add_offset``), not on raw digital
numbers: USGS Collection 2 has a -0.2 offset, so raw-DN NDVI is biased there.
A pixel contributes an NDVI value only when it is *clear*: the mask band passes the clear
rule, neither reflectance band equals its nodata value, and the ratio is finite (a zero
denominator gives NaN, not inf). Everything else is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numexpr as ne
import numpy as np

from .flags import ClearRule

__all__ = ["BandEncoding", "NDVIInputs", "ndvi_from_bands"]


@dataclass(frozen=True)
class BandEncoding:
    """How a reflectance band's digital numbers map to reflectance, and its nodata."""

    nodata: float | int | None
    scale_factor: float = 1.0
    add_offset: float = 0.0

    @classmethod
    def from_measurement(
        cls,
        measurement: Mapping[str, Any],
        *,
        scale_factor: float | None = None,
        add_offset: float | None = None,
    ) -> BandEncoding:
        """From a product measurement definition; explicit overrides win."""
        return cls(
            nodata=measurement.get("nodata"),
            scale_factor=float(
                scale_factor if scale_factor is not None else measurement.get("scale_factor", 1.0)
            ),
            add_offset=float(
                add_offset if add_offset is not None else measurement.get("add_offset", 0.0)
            ),
        )


@dataclass(frozen=True)
class NDVIInputs:
    """Everything the pixel maths needs to know about a product's three bands."""

    red: BandEncoding
    nir: BandEncoding
    clear: ClearRule
    mask_nodata: float | int | None = None


def _not_nodata(values: np.ndarray, nodata: float | int | None) -> np.ndarray | bool:
    if nodata is None:
        return True
    if isinstance(nodata, float) and np.isnan(nodata):
        return ~np.isnan(values)
    return values != nodata


def ndvi_from_bands(
    red: np.ndarray,
    nir: np.ndarray,
    mask: np.ndarray,
    inputs: NDVIInputs,
    *,
    bad_filter: Any = None,
) -> np.ndarray:
    """Float32 NDVI of one observation, NaN where not clear.

    ``bad_filter``, if given, is applied to the boolean "bad" mask (not clear by the flag
    rule) before it is used, e.g. a morphological clean-up; it must keep the shape.
    """
    good = inputs.clear.evaluate(mask)
    if bad_filter is not None:
        good = ~bad_filter(~good)
    usable = good & _not_nodata(red, inputs.red.nodata) & _not_nodata(nir, inputs.nir.nodata)
    params = {
        "r": red,
        "n": nir,
        "ok": usable,
        "sr": np.float32(inputs.red.scale_factor),
        "or_": np.float32(inputs.red.add_offset),
        "sn": np.float32(inputs.nir.scale_factor),
        "on": np.float32(inputs.nir.add_offset),
        "nan": np.float32(np.nan),
    }
    # float32 reflectance; one fused pass with no temporaries
    out = ne.evaluate(
        "where(ok, ((n * sn + on) - (r * sr + or_)) / ((n * sn + on) + (r * sr + or_)), nan)",
        local_dict=params,
        casting="same_kind",
    ).astype(np.float32, copy=False)
    out[~np.isfinite(out)] = np.nan
    return out
