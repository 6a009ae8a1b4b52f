"""One validation toolkit for configuration files and command options (pure python).

Every check raises :class:`~odc_ndvi_plugin.errors.ConfigError`, a ``ValueError`` whose
text is ONE line: where
the value sits (a key path such as ``run config: cog_opts.compress``) and what is wrong
with it, with what would be valid::

    run config: threads: expected an integer, got 'many'
    plugin_config: unknown key 'nir_bnd' (did you mean 'nir_band'?); allowed keys: preset, ...
    run config: cog_opts.compress: 'zstdd' is not allowed (did you mean 'ZSTD'?); allowed: ...

The config readers (the run config, the gateway config, ``plugin_config``, the ``synth``
options) use these functions, so a typo reads the same wherever it is made.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError

__all__ = [
    "ConfigError",
    "check_bool",
    "check_choice",
    "check_date",
    "check_int",
    "check_keys",
    "check_list",
    "check_mapping",
    "check_number",
    "check_str",
    "did_you_mean",
    "shown",
]

#: longest value shown in a message (a long YAML value would make the line unreadable)
_SHOWN_LENGTH = 60


def shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length, for messages."""
    text = repr(value)
    if len(text) > _SHOWN_LENGTH:
        text = text[: _SHOWN_LENGTH - 3] + "..."
    return text


def did_you_mean(name: Any, allowed: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the allowed name closest to ``name``, else ``""``
    (case-insensitive, so ``Compress`` finds ``compress``)."""
    options = list(allowed)
    by_lower = {a.lower(): a for a in options}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def check_keys(mapping: Mapping[Any, Any], allowed: Sequence[str], where: str) -> None:
    """Every key of ``mapping`` is one of ``allowed``; else one line naming the unknown
    key(s), the nearest allowed one and all allowed ones."""
    unknown = [key for key in mapping if key not in allowed]
    if not unknown:
        return
    named = ", ".join(f"{key!r}{did_you_mean(key, allowed)}" for key in unknown)
    noun = "key" if len(unknown) == 1 else "keys"
    raise ConfigError(where, f"unknown {noun} {named}; allowed keys: {', '.join(allowed)}")


def check_mapping(value: Any, where: str, *, what: str = "a mapping") -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected {what}, got {shown(value)}")
    return value


def check_list(
    value: Any, where: str, *, what: str = "a list", length: int | None = None, empty: bool = True
) -> Sequence[Any]:
    """A list (a YAML sequence; a string is not one) of ``length`` items if given, or
    non-empty unless ``empty``; ``what`` describes it in the message."""
    if (
        isinstance(value, str | bytes | Mapping)
        or not isinstance(value, Sequence)
        or (length is not None and len(value) != length)
        or (not empty and not value)
    ):
        raise ConfigError(where, f"expected {what}, got {shown(value)}")
    return value


def check_str(value: Any, where: str, *, empty: bool = False, what: str = "") -> str:
    """A string, non-empty unless ``empty``; ``what`` describes it in the message
    (default: a (non-empty) string)."""
    if not isinstance(value, str) or (not empty and not value):
        what = what or f"a {'' if empty else 'non-empty '}string"
        raise ConfigError(where, f"expected {what}, got {shown(value)}")
    return value


def check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {shown(value)}")
    return value


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(
    value: Any,
    where: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    also: Sequence[int] = (),
    meaning: str = "",
) -> int:
    """An integer (not a bool) in ``minimum..maximum`` or one of ``also`` (special values,
    explained by ``meaning``, e.g. ``also=(-1,), meaning="-1 = all cores"``)."""
    expected = "an integer" + _bounds(minimum, maximum)
    if also:
        expected += f" or {' or '.join(map(str, also))}"
    if meaning:
        expected += f" ({meaning})"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected {expected}, got {shown(value)}")
    if value in also:
        return value
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(where, f"expected {expected}, got {value}")
    return value


def check_number(
    value: Any,
    where: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """A finite int or float (not a bool); ``positive``: strictly greater than 0."""
    import math

    expected = "a positive number" if positive else "a number" + _bounds(minimum, maximum)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or (positive and value <= 0)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ConfigError(where, f"expected {expected}, got {shown(value)}")
    return value


def check_choice(
    value: Any,
    where: str,
    allowed: Sequence[str],
    *,
    case_sensitive: bool = True,
) -> str:
    """``value`` is one of ``allowed`` (returned as spelled in ``allowed``)."""
    if isinstance(value, str):
        if value in allowed:
            return value
        if not case_sensitive:
            for option in allowed:
                if option.lower() == value.lower():
                    return option
    hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
    raise ConfigError(where, f"{shown(value)} is not allowed{hint}; allowed: {', '.join(allowed)}")


def check_date(value: Any, where: str) -> Any:
    """A ``datetime.date`` or an ISO ``YYYY-MM-DD`` string, returned as a date."""
    import datetime as dt

    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as err:
        raise ConfigError(
            where, f"expected a date YYYY-MM-DD, got {shown(value)} ({err})"
        ) from None
