"""``cog_opts`` of a run config, checked against what the COG writer accepts.

odc-stats hands ``cog_opts`` (with ``overrides`` per band) to odc-geo's ``to_cog``: a few
keys are ``to_cog``'s own (``blocksize``, ``overview_resampling``, ...), every other key
becomes a GDAL GTiff creation option of the GDAL that rasterio links. GDAL only *warns*
about an option it does not know or a value it does not accept (``compress: zstdd``
writes an uncompressed file), so they are checked here, against the GTiff driver's own
creation option list (``DMD_CREATIONOPTIONLIST``) read at run time from that GDAL:
option names, ``string-select`` values, integer / float / boolean types and the level
ranges the driver documents (``ZLEVEL`` 1-12, ``ZSTD_LEVEL`` 1-22, ...).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._validate import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_mapping,
    check_number,
    did_you_mean,
    shown,
)

__all__ = ["GdalOption", "check_cog_opts", "gtiff_creation_options"]

_log = logging.getLogger(__name__)

#: keys odc-geo's ``to_cog``/``write_cog`` takes itself (the rest go to GDAL)
WRITER_KEYS = (
    "blocksize",
    "ovr_blocksize",
    "overview_resampling",
    "overview_levels",
    "use_windowed_writes",
    "intermediate_compression",
    "tags",
    "nodata",
)
#: odc-stats' per-band overrides of the options above (``{band: {option: value}}``)
OVERRIDES_KEY = "overrides"


@dataclass(frozen=True)
class GdalOption:
    """One GTiff creation option as the driver describes it."""

    name: str
    type: str  #: string-select, int, float, boolean, string
    values: tuple[str, ...] = ()  #: string-select values (aliases included)
    minimum: float | None = None
    maximum: float | None = None


def _gdal_library_path() -> str | None:
    """The GDAL shared library rasterio uses (the one that writes the COGs): the library
    mapped into this process after importing rasterio; its own wheel copy if there are
    several (the osgeo binding may have loaded the system GDAL too)."""
    import rasterio._base  # noqa: F401  (loads rasterio's GDAL)

    maps = Path("/proc/self/maps")
    if maps.exists():
        loaded = sorted(
            {line.split()[-1] for line in maps.read_text().splitlines() if "libgdal" in line}
        )
        loaded = [p for p in loaded if p.startswith("/")]
        wheel_copy = [p for p in loaded if "rasterio" in p]
        if wheel_copy or loaded:
            return (wheel_copy or loaded)[0]
    return ctypes.util.find_library("gdal")


_RANGE = re.compile(r"(\d+)\s*(?:\([^)]*\))?\s*-\s*(\d+)")
_LEVELS = ("LEVEL", "QUALITY", "PRESET")
_ENUMERATED = re.compile(r"\b(\d+)=")


def _parse_options(xml: str) -> dict[str, GdalOption]:
    options = {}
    for node in ET.fromstring(xml).iter("Option"):
        name = node.get("name", "").upper()
        kind = node.get("type", "string")
        values = tuple(v.text or "" for v in node.iter("Value"))
        lo, hi = node.get("min"), node.get("max")
        minimum = float(lo) if lo is not None else None
        maximum = float(hi) if hi is not None else None
        # compression levels: GDAL documents their range only in the description
        # ("DEFLATE compression level 1-12", "ZSTD compression level 1(fast)-22(slow)")
        description = node.get("description", "")
        if minimum is None and kind == "int" and any(word in name for word in _LEVELS):
            match = _RANGE.search(description)
            if match:
                minimum, maximum = float(match[1]), float(match[2])
        # enumerated integers: "Predictor Type (1=default, 2=horizontal differencing, ...)"
        enumerated = _ENUMERATED.findall(description)
        if kind == "int" and not values and len(enumerated) >= 2:
            values = tuple(enumerated)
        options[name] = GdalOption(name, kind, values, minimum, maximum)
    return options


@functools.lru_cache(maxsize=1)
def gtiff_creation_options() -> Mapping[str, GdalOption] | None:
    """The GTiff creation options of rasterio's GDAL by upper-case name, or None when
    that library cannot be inspected (then GDAL options are not checked)."""
    path = _gdal_library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.GDALAllRegister()
        lib.GDALGetDriverByName.restype = ctypes.c_void_p
        lib.GDALGetDriverByName.argtypes = [ctypes.c_char_p]
        lib.GDALGetMetadataItem.restype = ctypes.c_char_p
        lib.GDALGetMetadataItem.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        driver = lib.GDALGetDriverByName(b"GTiff")
        xml = lib.GDALGetMetadataItem(driver, b"DMD_CREATIONOPTIONLIST", None) if driver else None
        return _parse_options(xml.decode()) if xml else None
    except (OSError, AttributeError, ET.ParseError) as err:
        _log.warning("GTiff creation options of %s cannot be read (%s): not checked", path, err)
        return None


def _overview_resampling_names() -> tuple[str, ...]:
    from rasterio.enums import OverviewResampling

    return tuple(r.name for r in OverviewResampling)


def _check_gdal_option(key: str, value: Any, where: str, options: Mapping[str, GdalOption]) -> None:
    option = options.get(key.upper())
    if option is None:
        allowed = sorted([*WRITER_KEYS, *(name.lower() for name in options)])
        raise ConfigError(
            where,
            f"unknown COG option{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}",
        )
    if option.type == "string-select":
        check_choice(
            str(value) if isinstance(value, int | float) else value,
            where,
            option.values,
            case_sensitive=False,
        )
    elif option.type == "int" and option.values:
        check_choice(str(value), where, option.values)
    elif option.type == "int":
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        lo = None if option.minimum is None else int(option.minimum)
        hi = None if option.maximum is None else int(option.maximum)
        check_int(value, where, minimum=lo, maximum=hi)
    elif option.type == "float":
        check_number(value, where, minimum=option.minimum, maximum=option.maximum)
    elif option.type == "boolean":
        if not isinstance(value, bool) and str(value).upper() not in (
            "YES",
            "NO",
            "TRUE",
            "FALSE",
            "ON",
            "OFF",
        ):
            raise ConfigError(where, f"expected true or false, got {shown(value)}")
    elif not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(where, f"expected a string, got {shown(value)}")


def _check_writer_option(key: str, value: Any, where: str) -> None:
    if key == "blocksize":
        check_int(value, where, minimum=16)
        if value % 16:
            raise ConfigError(
                where, f"expected a multiple of 16 (a GeoTIFF tile size), got {value}"
            )
    elif key == "ovr_blocksize":
        check_int(value, where, minimum=64, maximum=4096)
        if value & (value - 1):
            raise ConfigError(
                where, f"expected a power of 2 in 64..4096 (GDAL overviews), got {value}"
            )
    elif key == "overview_resampling":
        check_choice(value, where, _overview_resampling_names(), case_sensitive=False)
    elif key == "overview_levels":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(
                where, f"expected a list of shrink factors like [2, 4, 8], got {shown(value)}"
            )
        for i, level in enumerate(value):
            check_int(level, f"{where}[{i}]", minimum=2)
    elif key == "use_windowed_writes":
        check_bool(value, where)
    elif key == "intermediate_compression":
        if not isinstance(value, bool | str | Mapping):
            raise ConfigError(
                where, f"expected true/false, a compression name or a mapping, got {shown(value)}"
            )
    elif key == "tags":
        check_mapping(value, where, what="a mapping of tag name to value")
    elif (
        key == "nodata"
        and value is not None
        and not (isinstance(value, str) and value.lower() == "nan")
    ):
        check_number(value, where)


def _check_level(
    opts: Mapping[str, Any], where: str, options: Mapping[str, GdalOption] | None
) -> None:
    for key, value in opts.items():
        at = f"{where}.{key}"
        if not isinstance(key, str):
            raise ConfigError(at, "option names must be strings")
        if key in WRITER_KEYS:
            _check_writer_option(key, value, at)
        elif options is not None:
            _check_gdal_option(key, value, at, options)


def check_cog_opts(cog_opts: Any, where: str = "run config: cog_opts") -> None:
    """Raise :class:`~odc_ndvi_plugin._validate.ConfigError` (one line naming the key)
    unless every option (and every band's ``overrides``) is one the COG writer accepts."""
    check_mapping(cog_opts, where)
    options = gtiff_creation_options()
    _check_level({k: v for k, v in cog_opts.items() if k != OVERRIDES_KEY}, where, options)
    overrides = cog_opts.get(OVERRIDES_KEY)
    if overrides is None:
        return
    check_mapping(overrides, f"{where}.{OVERRIDES_KEY}", what="a mapping of band name to options")
    for band, band_opts in overrides.items():
        at = f"{where}.{OVERRIDES_KEY}.{band}"
        check_mapping(band_opts, at, what="a mapping of COG options")
        _check_level(band_opts, at, options)
