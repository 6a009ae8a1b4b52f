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

from .masking import ClearRule

__all__ = ["BandEncoding", "NDVIInputs", "clear_pixels", "ndvi_from_bands", "ndvi_where"]


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
    #: the product's canonical names of the (red, NIR, mask) bands (config names may be
    #: aliases; dataset documents and files are keyed by canonical names)
    bands: tuple[str, str, str] = ("red", "nir", "mask")
    #: sensor harmonisation (``plugin_config.ndvi_adjust``): NDVI' = slope * NDVI +
    #: intercept, applied to every clear value of the product, before fusion and statistics
    adjust: tuple[float, float] | None = None


def clear_pixels(mask: np.ndarray, inputs: NDVIInputs, *, bad_filter: Any = None) -> np.ndarray:
    """Boolean "clear by the flag rule" of a mask band window.

    ``bad_filter``, if given, is applied to the boolean "bad" mask (not clear by the flag
    rule) before it is used, e.g. a morphological clean-up; it must keep the shape.
    """
    good = inputs.clear.evaluate(mask)
    if bad_filter is not None:
        good = ~bad_filter(~good)
    return good


def _valid_term(var: str, nodata: float | int | None) -> str:
    """numexpr condition "``var`` is not its band's nodata" ('' if the band has none)."""
    if nodata is None:
        return ""
    if isinstance(nodata, float) and np.isnan(nodata):
        return f" & ({var} == {var})"
    return f" & ({var} != {var}_nodata)"


def ndvi_where(
    red: np.ndarray, nir: np.ndarray, good: np.ndarray, inputs: NDVIInputs
) -> np.ndarray:
    """Float32 NDVI where ``good``, neither band is nodata and the reflectance sum is not 0
    (else the ratio is not finite); NaN elsewhere. One numexpr pass, no temporaries."""
    params = {
        "r": red,
        "n": nir,
        "ok": good,
        "r_nodata": np.asarray(inputs.red.nodata if inputs.red.nodata is not None else 0).astype(
            red.dtype
        ),
        "n_nodata": np.asarray(inputs.nir.nodata if inputs.nir.nodata is not None else 0).astype(
            nir.dtype
        ),
        "sr": np.float32(inputs.red.scale_factor),
        "or_": np.float32(inputs.red.add_offset),
        "sn": np.float32(inputs.nir.scale_factor),
        "on": np.float32(inputs.nir.add_offset),
        "nan": np.float32(np.nan),
    }
    usable = f"ok{_valid_term('r', inputs.red.nodata)}{_valid_term('n', inputs.nir.nodata)}"
    red_refl, nir_refl = "(r * sr + or_)", "(n * sn + on)"
    total = f"({nir_refl} + {red_refl})"
    ratio = f"({nir_refl} - {red_refl}) / {total}"
    if inputs.adjust is not None:
        params["ga"], params["gb"] = np.float32(inputs.adjust[0]), np.float32(inputs.adjust[1])
        ratio = f"ga * ({ratio}) + gb"
    out = ne.evaluate(
        f"where({usable} & ({total} != 0), {ratio}, nan)",
        local_dict=params,
        casting="same_kind",
    )
    return out.astype(np.float32, copy=False)


def ndvi_from_bands(
    red: np.ndarray,
    nir: np.ndarray,
    mask: np.ndarray,
    inputs: NDVIInputs,
    *,
    bad_filter: Any = None,
) -> np.ndarray:
    """Float32 NDVI of one observation, NaN where not clear (see :func:`clear_pixels`)."""
    return ndvi_where(red, nir, clear_pixels(mask, inputs, bad_filter=bad_filter), inputs)
