"""Where a pixel is declared clear: ``make_mask`` semantics over a band's ``flags_definition``,
and the clean-up filters of the bad-pixel mask.

``good_pixel_flags`` maps flag name -> value exactly as
``datacube.utils.masking.make_mask(band, **good_pixel_flags)`` does: each flag's value is
looked up in the flag's ``values`` table (by equality, so ``false`` matches ``0``), and
the flags are AND-ed through one ``(band & mask) == value`` test. Bit flags (USGS C2
``qa_pixel``) and enumerations (DEA ``oa_fmask``, an 8-bit "flag") are the same thing
here.

One extension: a *list* of values for a flag means "any of these" (an enum set, e.g.
``{fmask: [valid, snow, water]}``); ``make_mask`` itself has no such form.

Integer mask bands of up to 16 bits are evaluated through a lookup table of every
possible value, so a rule costs one gather per pixel however many flags it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

__all__ = ["BadPixelFilter", "ClearRule", "bad_pixel_filter", "compile_clear_rule", "filter_reach"]


@dataclass(frozen=True)
class ClearRule:
    """Pixel is clear when ANY of ``terms`` holds; a term ``(mask, value)`` means
    ``(band & mask) == value``. A plain ``make_mask`` rule has exactly one term."""

    band: str
    terms: tuple[tuple[int, int], ...]

    def lookup_table(self, dtype: np.dtype) -> np.ndarray:
        """Boolean table indexed by every value of an integer ``dtype`` of <= 16 bits."""
        dtype = np.dtype(dtype)
        info = np.iinfo(dtype)
        codes = np.arange(info.min, info.max + 1, dtype=np.int64)
        return self.evaluate(codes)

    def evaluate(self, band: np.ndarray) -> np.ndarray:
        """Boolean clear mask of a mask-band array (any integer dtype)."""
        band = np.asarray(band)
        dtype = band.dtype
        if dtype.kind in "ui" and dtype.itemsize <= 2 and band.size > 4096:
            lut = _cached_table(self, dtype.str)
            offset = -int(np.iinfo(dtype).min)
            idx = band.astype(np.int32) + offset if offset else band
            return lut[idx]
        out = np.zeros(band.shape, dtype=bool)
        for mask, value in self.terms:
            out |= (band & mask) == value
        return out


_TABLES: dict[tuple[ClearRule, str], np.ndarray] = {}


def _cached_table(rule: ClearRule, dtype_str: str) -> np.ndarray:
    key = (rule, dtype_str)
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = rule.lookup_table(np.dtype(dtype_str))
    return table


def _bits_of(defn: Mapping[str, Any]) -> list[int]:
    bits = defn["bits"]
    return [int(b) for b in bits] if isinstance(bits, Iterable) else [int(bits)]


def _flag_code(flag: str, wanted: Any, values: Mapping[Any, Any], *, band: str) -> int:
    # make_mask: the value must match exactly one entry of the flag's `values` table
    matches = [code for code, ref in values.items() if ref == wanted]
    if len(matches) != 1:
        allowed = ", ".join(repr(v) for v in values.values())
        raise ValueError(
            f"plugin_config.good_pixel_flags.{flag}: value {wanted!r} is not allowed for "
            f"band {band!r}; allowed: {allowed}"
        )
    return int(matches[0])


def compile_clear_rule(
    flags_definition: Mapping[str, Mapping[str, Any]],
    good_pixel_flags: Mapping[str, Any],
    *,
    band: str,
) -> ClearRule:
    """Turn ``good_pixel_flags`` into a :class:`ClearRule` for ``band``.

    Raises ``ValueError`` naming the flag and listing the allowed names/values.
    """
    if not flags_definition:
        raise ValueError(
            f"plugin_config.mask_band: band {band!r} has no flags_definition in its product"
        )
    alternatives: list[list[tuple[list[int], int]]] = []
    for flag, wanted in good_pixel_flags.items():
        defn = flags_definition.get(flag)
        if defn is None:
            allowed = ", ".join(sorted(flags_definition))
            raise ValueError(
                f"plugin_config.good_pixel_flags: unknown flag {flag!r} for band {band!r}; "
                f"allowed: {allowed}"
            )
        bits = _bits_of(defn)
        multi = isinstance(defn["bits"], Iterable)
        wanted_values = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if not wanted_values:
            raise ValueError(f"plugin_config.good_pixel_flags.{flag}: empty list of values")
        options = []
        for w in wanted_values:
            code = _flag_code(flag, w, defn["values"], band=band)
            # a one-element `bits: [n]` list is a multi-bit flag to make_mask (shifted code)
            options.append((bits if multi else bits[:1], code, multi))
        alternatives.append(options)

    terms = []
    for combo in product(*alternatives):
        mask, value = 0, 0
        for bits, code, multi in combo:
            for bit in bits:
                mask |= 1 << bit
            if multi:
                value |= code << min(bits)
            else:
                value = (value | (1 << bits[0])) if code else (value & ~(1 << bits[0]))
        terms.append((mask, value))
    return ClearRule(band=band, terms=tuple(dict.fromkeys(terms)))


#: a morphological clean-up of a boolean "bad pixel" mask (same shape in, same out)
BadPixelFilter = Callable[[np.ndarray], np.ndarray]


def bad_pixel_filter(mask_filters: tuple[tuple[str, int], ...]) -> BadPixelFilter | None:
    """``plugin_config.mask_filters`` (e.g. ``[[opening, 2], [dilation, 3]]``) as odc-algo's
    clean-up of the bad-pixel mask, as odc-stats' own plugins apply it; None without any."""
    if not mask_filters:
        return None
    from ._compat import mask_cleanup

    return mask_cleanup(mask_filters)


def filter_reach(mask_filters: tuple[tuple[str, int], ...]) -> int:
    """How far (pixels) the filters look: the margin a window needs for an exact result."""
    return max((r for _, r in mask_filters), default=0)
