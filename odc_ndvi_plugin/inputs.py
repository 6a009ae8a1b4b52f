"""Where a config meets a product: band names through aliases, reflectance scaling, clear rule.

Pure functions of a product's measurement definitions and the validated config (no IO, no
datacube objects needed: ``measurements`` is the product definition's ``name ->
measurement`` mapping), so they are tested against real product definitions with short
asserts. Every error is one line that names the ``plugin_config`` key, the product and what
would be valid.

Band names
    ``dc.load`` accepts a measurement's canonical name or any of its ``aliases``; so does the
    plugin: ``red_band: red`` finds ``SR_B4`` on DE Africa's ``ls8_sr`` (alias ``red``) and
    ``mask_band: fmask`` finds DEA's ``oa_fmask``.
Reflectance scaling (NDVI is computed on reflectance, ``DN * scale_factor + add_offset``)
    1. ``plugin_config.scale_factor`` / ``add_offset`` for the band (keyed by any of its
       names), else
    2. the product definition's ``scale_factor`` / ``add_offset``, else
    3. the preset's published scaling, when the band is the preset's own band of the family
       (real C2 definitions declare none; USGS publishes 0.0000275 / -0.2), else
    4. refused: NDVI of raw digital numbers is silently wrong when there is an offset
       (true NDVI 0.867 comes out 0.431 on C2 counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import NDVIConfig
from .ndvi import BandEncoding, NDVIInputs
from .presets import PRESETS

__all__ = ["band_names", "find_band", "product_inputs", "resolve_band"]

Measurements = Mapping[str, Mapping[str, Any]]


def find_band(measurements: Measurements, name: str) -> str | None:
    """Canonical name of the measurement called ``name`` or having it as an alias."""
    if name in measurements:
        return name
    for canonical, measurement in measurements.items():
        if name in (measurement.get("aliases") or ()):
            return canonical
    return None


def band_names(measurements: Measurements) -> str:
    """``SR_B4 (band_4, red), SR_B5 (band_5, nir), ...`` for error messages."""
    out = []
    for canonical, measurement in measurements.items():
        aliases = measurement.get("aliases") or ()
        out.append(f"{canonical} ({', '.join(aliases)})" if aliases else canonical)
    return ", ".join(out)


def resolve_band(measurements: Measurements, name: str, *, key: str, product: str) -> str:
    """The canonical name of band ``name`` (or alias) of ``product``; ValueError naming
    ``plugin_config.<key>`` and the product's bands when it has none."""
    canonical = find_band(measurements, name)
    if canonical is None:
        raise ValueError(
            f"plugin_config.{key}: product {product!r} has no band or alias {name!r}; "
            f"allowed: {band_names(measurements)}"
        )
    return canonical


def _names_of(measurements: Measurements, canonical: str) -> tuple[str, ...]:
    return (canonical, *(measurements[canonical].get("aliases") or ()))


def _override(
    values: Mapping[str, float], measurements: Measurements, canonical: str
) -> float | None:
    found = [values[n] for n in _names_of(measurements, canonical) if n in values]
    return found[0] if found else None


def _check_override_keys(
    config: NDVIConfig, measurements: Measurements, product: str, reflectance: tuple[str, str]
) -> None:
    for key in ("scale_factor", "add_offset"):
        for name in getattr(config, key):
            if find_band(measurements, name) not in reflectance:
                red, nir = reflectance
                raise ValueError(
                    f"plugin_config.{key}.{name}: not the red or NIR band of product "
                    f"{product!r} (red: {', '.join(_names_of(measurements, red))}; "
                    f"NIR: {', '.join(_names_of(measurements, nir))})"
                )


def _encoding(
    config: NDVIConfig,
    measurements: Measurements,
    canonical: str,
    *,
    key: str,
    product: str,
    preset_band: str | None,
) -> BandEncoding:
    measurement = measurements[canonical]
    scale = _override(config.scale_factor, measurements, canonical)
    offset = _override(config.add_offset, measurements, canonical)
    declared = "scale_factor" in measurement or "add_offset" in measurement
    if scale is None and offset is None and not declared:
        preset = PRESETS.get(config.preset or "")
        if (
            preset is None
            or preset_band is None
            or find_band(measurements, preset_band) != canonical
        ):
            family = ", ".join(
                f"{name} ({p.reflectance_scaling[0]:g} / {p.reflectance_scaling[1]:g})"
                for name, p in PRESETS.items()
            )
            raise ValueError(
                f"plugin_config.{key}: band {canonical!r} of product {product!r} declares no "
                f"scale_factor/add_offset (NDVI of raw digital numbers is wrong); set a preset "
                f"of its family [{family}] or plugin_config.scale_factor.{canonical} and "
                f"add_offset.{canonical}"
            )
        scale, offset = preset.reflectance_scaling
    return BandEncoding.from_measurement(measurement, scale_factor=scale, add_offset=offset)


def product_inputs(product: str, measurements: Measurements, config: NDVIConfig) -> NDVIInputs:
    """Everything the pixel maths needs about ``product``'s bands under ``config``."""
    preset = PRESETS.get(config.preset or "")
    canonical = {
        key: resolve_band(measurements, getattr(config, key), key=key, product=product)
        for key in ("red_band", "nir_band", "mask_band")
    }
    if len(set(canonical.values())) != 3:
        raise ValueError(
            f"plugin_config.red_band: red_band, nir_band and mask_band name "
            f"{len(set(canonical.values()))} bands of product {product!r} "
            f"({', '.join(f'{k}: {v}' for k, v in canonical.items())}); they must be three"
        )
    _check_override_keys(
        config, measurements, product, (canonical["red_band"], canonical["nir_band"])
    )
    mask = measurements[canonical["mask_band"]]
    flags = mask.get("flags_definition")
    if not flags:
        raise ValueError(
            f"plugin_config.mask_band: band {canonical['mask_band']!r} of product {product!r} "
            "has no flags_definition"
        )
    red, nir = (
        _encoding(
            config,
            measurements,
            canonical[key],
            key=key,
            product=product,
            preset_band=getattr(preset, key) if preset is not None else None,
        )
        for key in ("red_band", "nir_band")
    )
    return NDVIInputs(
        red=red,
        nir=nir,
        clear=config.clear_rule(flags, band=canonical["mask_band"]),
        mask_nodata=mask.get("nodata"),
        bands=(canonical["red_band"], canonical["nir_band"], canonical["mask_band"]),
        adjust=config.ndvi_adjust.get(product),
    )
