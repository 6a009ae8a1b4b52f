"""The plugin's configuration: one frozen dataclass, validated once, errors name the key.

``NDVIConfig.from_plugin_config(mapping)`` is the only way in: it applies a preset,
checks every key with the validation toolkit (:mod:`._validate`: the same "did you mean",
types and choices as every other config), and raises
``ConfigError("plugin_config.<key>: ... allowed: ...")`` (a ``ValueError``) for anything it
cannot use. Everything downstream reads the validated fields. The keys and their
defaults are stated once: the dataclass fields (each with its docstring) are the keys,
their defaults the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ._validate import (
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_list,
    check_mapping,
    check_number,
    check_str,
)
from .errors import ConfigError
from .masking import ClearRule, compile_clear_rule
from .presets import NO_PRESET, PRESETS
from .reduce import (
    CLIMATOLOGY_EXTRAS,
    CLIMATOLOGY_STATISTICS,
    STATISTICS,
    band_dtype_nodata,
)
from .seasons import SEASON_MODES, Seasons, band_name
from .storage import is_store_url

__all__ = ["ANOMALY_STATISTICS", "LOADERS", "NDVIConfig", "OutputBand"]

#: anomaly mode's bands, in order (band names: seasons.band_name)
ANOMALY_STATISTICS = ("mean", "count", "anomaly", "std_anomaly", "baseline_years")
#: an anomaly is NaN where the baseline counted fewer years than this (plugin_config key)
DEFAULT_MIN_BASELINE_YEARS = 10

#: resampling names GDAL understands (for the NDVI band when it has to be warped)
RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
#: ``direct``: our own reader (window reads, NDVI at native resolution, one warp);
#: ``odc-stats``: odc-stats' ``load_with_native_transform`` with our native transform.
LOADERS = ("direct", "odc-stats")
MASK_FILTER_OPS = ("opening", "closing", "dilation", "erosion")
#: what a scene that cannot be decoded does to its task (``NDVIConfig.on_bad_input``)
ON_BAD_INPUT = ("fail", "skip")


@dataclass(frozen=True)
class OutputBand:
    """One output band: its name, statistic, season (year mode) and encoding."""

    name: str
    statistic: str
    season: str | None
    dtype: str
    nodata: float | int


def _where(key: str) -> str:
    return f"plugin_config.{key}"


def _fail(key: str, msg: str) -> ConfigError:
    return ConfigError(_where(key), msg)


def _choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    return check_choice(value, _where(key), allowed)


def _band(key: str, value: Any) -> str:
    return check_str(value, _where(key), what="a band name")


def _per_band_numbers(key: str, value: Any) -> Mapping[str, float]:
    if value is None:
        return MappingProxyType({})
    check_mapping(value, _where(key), what="a mapping band -> number")
    return MappingProxyType(
        {str(band): float(check_number(n, _where(f"{key}.{band}"))) for band, n in value.items()}
    )


def _mask_filters(value: Any) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    where = _where("mask_filters")
    check_list(value, where, what="a list of [operation, radius]")
    out = []
    for i, item in enumerate(value):
        op, radius = check_list(item, f"{where}[{i}]", what="[operation, radius]", length=2)
        out.append(
            (
                check_choice(op, f"{where}[{i}]", MASK_FILTER_OPS),
                check_int(radius, f"{where}[{i}] radius", minimum=1),
            )
        )
    return tuple(out)


def _statistics(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    where = _where("statistics")
    check_list(value, where, what=f"a non-empty list of {', '.join(STATISTICS)}", empty=False)
    for stat in value:
        check_choice(stat, where, STATISTICS)
    if len(set(value)) != len(value):
        raise _fail("statistics", f"duplicate entries in {list(value)!r}")
    return tuple(value)


def _ndvi_adjust(value: Any) -> Mapping[str, tuple[float, float]]:
    """``{product: [slope, intercept]}``: NDVI' = slope * NDVI + intercept per product."""
    if value is None:
        return MappingProxyType({})
    check_mapping(value, _where("ndvi_adjust"), what="a mapping product -> [slope, intercept]")
    out = {}
    for product, pair in value.items():
        where = _where(f"ndvi_adjust.{product}")
        slope, intercept = check_list(pair, where, what="[slope, intercept]", length=2)
        out[str(product)] = (
            float(check_number(slope, f"{where} slope", positive=True)),
            float(check_number(intercept, f"{where} intercept")),
        )
    return MappingProxyType(out)


def _baseline(value: Any, mode: str) -> str | None:
    if mode != "anomaly":
        if value is not None:
            raise _fail("baseline", "only used with season_mode: anomaly")
        return None
    if not isinstance(value, str) or not (is_store_url(value) or value.startswith("/")):
        raise _fail(
            "baseline",
            "season_mode anomaly needs the location a climatology run wrote to "
            f"(file://... or s3://..., its --location), got {value!r}",
        )
    return "file://" + value if value.startswith("/") else value


def _chunks(value: Any) -> Mapping[str, int]:
    check_mapping(value, _where("chunks"), what="{x: int, y: int} (-1 = whole tile)")
    check_keys(value, ("x", "y"), _where("chunks"))
    return MappingProxyType(
        {
            ax: check_int(
                value.get(ax, -1),
                _where(f"chunks.{ax}"),
                minimum=1,
                also=(-1,),
                meaning="-1 = whole tile",
            )
            for ax in ("y", "x")
        }
    )


@dataclass(frozen=True)
class NDVIConfig:
    """Validated plugin configuration: one field per ``plugin_config`` key (the guide's
    reference table is generated from these fields and their docstrings)."""

    preset: str = "usgs_c2"
    """A product family (``odc_ndvi_plugin/presets.py``): ``usgs_c2`` (``red``,
    ``nir08``, ``qa_pixel``: EASI-style and community ``lsN_c2l2_sr``),
    ``deafrica_c2`` (``red``, ``nir``, ``pixel_quality``: aliases on DE Africa's
    ``ls5_sr`` .. ``ls9_sr``), ``dea_ard`` (``nbart_red``, ``nbart_nir``,
    ``oa_fmask``: DEA C3 ``ga_lsNx_ard_3``), or ``none`` (then give the three bands
    and ``good_pixel_flags``)."""
    red_band: str = "red"
    """The red band as in ``dc.load``: a measurement's name or any of its aliases
    (``red_band: red`` finds ``SR_B4`` on ``ls8_sr`` and ``SR_B3`` on ``ls7_sr``);
    default: the preset's."""
    nir_band: str = "nir08"
    """The near-infrared band, named as ``red_band``; default: the preset's."""
    mask_band: str = "qa_pixel"
    """The pixel-quality band whose ``flags_definition`` ``good_pixel_flags`` is checked
    against (``mask_band: fmask`` on ``ga_ls8c_ard_3``); default: the preset's."""
    good_pixel_flags: Mapping[str, Any] = field(
        default_factory=lambda: dict(PRESETS["usgs_c2"].good_pixel_flags)
    )
    """Exactly ``make_mask(mask_band, **flags)`` against the band's
    ``flags_definition``; a list value means "any of" (e.g. ``{fmask: [valid, snow,
    water]}``); default: the preset's (for ``usgs_c2`` the tutorial's)."""
    mask_filters: tuple[tuple[str, int], ...] = ()
    """odc-algo style clean-up of the bad-pixel mask, e.g. ``[[opening, 2], [dilation,
    3]]`` (operations: opening, closing, dilation, erosion)."""
    statistics: tuple[str, ...] = ("mean", "count")
    """Subset of ``mean, median, std, min, max, count``."""
    seasons: Seasons = field(default_factory=lambda: Seasons.from_config(None))
    """Season -> months (a month in one season at most); with ``season_mode``: ``task``
    (default) makes the task period one group (use with ``--frequency seasonal``),
    ``year`` groups by ``seasons`` into bands ``<band>_<season>``, ``climatology``
    (a task of whole 12-month blocks) writes per season the mean/std over blocks of
    each block's seasonal mean, ``anomaly`` (a task of one season) compares it with
    ``baseline``; these two need each season's months consecutive (e.g. ``[12, 1, 2]``)."""
    min_clear: int = 1
    """Fewer clear observations -> the statistics are nodata."""
    scale_factor: Mapping[str, float] = field(default_factory=dict)
    """Per-band override (keyed by any name of the band); NDVI uses reflectance = DN x
    scale + offset. Order: this key, the product definition, the preset's published
    scaling for its own bands (C2: 0.0000275 / -0.2, as real C2 definitions declare
    none; DEA ARD: 0.0001 / 0); a band with none of these is refused, never read as
    raw counts."""
    add_offset: Mapping[str, float] = field(default_factory=dict)
    """Per-band override of the offset, as ``scale_factor``."""
    resampling: str = "nearest"
    """Only when a scene is not on the output grid: the one float32 NDVI band is warped
    with it (nearest, bilinear, cubic, cubic_spline, lanczos, average, mode)."""
    chunks: Mapping[str, int] = field(default_factory=lambda: {"y": 1600, "x": 1600})
    """Reduction blocks of a task (the ``direct`` loader reads whole solar days of the
    tile; -1 = whole tile)."""
    loader: str = "direct"
    """``direct``: our window reader (NDVI at native resolution, paste when aligned,
    else one warp); ``odc-stats``: odc-stats' ``load_with_native_transform``."""
    preview_band: str | None = None
    """Band rendered in the ``rgba`` preview (written when ``cog_opts.overrides`` has
    ``rgba``); default: the first NDVI band."""
    requester_pays: bool = False
    """Send ``x-amz-request-payer: requester`` with input reads (USGS' usgs-landsat)."""
    read_retries: int = 5
    """Retries of a transient input read error (5xx/429, dropped connection), with a
    growing delay."""
    ndvi_adjust: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Sensor harmonisation, off by default: ``{product: [slope, intercept]}`` makes every
    clear NDVI of that product's datasets ``slope * NDVI + intercept``, before scenes are
    fused and before any statistic (no coefficients are shipped: see the climatology
    guide)."""
    baseline: str | None = None
    """``season_mode: anomaly``: where the climatology run wrote (its ``--location``,
    ``file://...`` or ``s3://...``); each task reads its tile's item there."""
    min_baseline_years: int = DEFAULT_MIN_BASELINE_YEARS
    """``season_mode: anomaly``: where the baseline counted fewer years (``clear_years``)
    the anomalies are NaN."""
    on_bad_input: str = "fail"
    """A scene that cannot be decoded (truncated, missing, a band absent or unreadable):
    ``fail`` its task (default), or ``skip`` it: the task is computed without that
    scene and its STAC item lists it under ``odc_ndvi:skipped_inputs`` (dataset id,
    file, why). A transient read error (5xx, timeout, dropped connection) is never
    skipped: it is retried, then fails the task. ``skip`` needs ``loader: direct``."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The ``plugin_config`` keys: the fields, and ``season_mode`` (read into
        ``seasons``), in the order of the fields."""
        names = [f.name for f in fields(cls)]
        names.insert(names.index("seasons") + 1, "season_mode")
        return tuple(names)

    @classmethod
    def default(cls, key: str) -> Any:
        """The default of ``plugin_config.<key>``: the field's (``season_mode``: the
        default ``seasons``' mode)."""
        if key == "season_mode":
            return cls.default("seasons").mode
        (f,) = (f for f in fields(cls) if f.name == key)
        return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]

    @classmethod
    def from_plugin_config(cls, plugin_config: Mapping[str, Any] | None = None) -> NDVIConfig:
        """Validate a ``plugin_config`` mapping (as found in an odc-stats run config)."""
        cfg = dict(plugin_config or {})
        check_keys(cfg, cls.keys(), "plugin_config")
        preset_name = _choice(
            "preset", cfg.get("preset", cls.default("preset")), (*PRESETS, NO_PRESET)
        )
        preset = PRESETS.get(preset_name)
        if preset is None:
            missing = [
                k for k in ("red_band", "nir_band", "mask_band", "good_pixel_flags") if k not in cfg
            ]
            if missing:
                raise _fail(
                    "preset",
                    f"'{NO_PRESET}' needs {', '.join(missing)} (or a preset: {', '.join(PRESETS)})",
                )
        mask_band = _band("mask_band", cfg.get("mask_band", preset and preset.mask_band))
        flags = cfg.get("good_pixel_flags", preset and preset.good_pixel_flags)
        check_mapping(flags, _where("good_pixel_flags"), what="a non-empty mapping flag -> value")
        if not flags:
            raise _fail("good_pixel_flags", "expected a non-empty mapping flag -> value, got {}")
        min_clear = check_int(
            cfg.get("min_clear", cls.default("min_clear")), "plugin_config.min_clear", minimum=1
        )
        preview = cfg.get("preview_band")
        requester_pays = check_bool(
            cfg.get("requester_pays", cls.default("requester_pays")),
            "plugin_config.requester_pays",
        )
        read_retries = check_int(
            cfg.get("read_retries", cls.default("read_retries")),
            "plugin_config.read_retries",
            minimum=0,
        )
        mode = _choice(
            "season_mode", cfg.get("season_mode", cls.default("season_mode")), SEASON_MODES
        )
        min_years = check_int(
            cfg.get("min_baseline_years", cls.default("min_baseline_years")),
            "plugin_config.min_baseline_years",
            minimum=1,
        )
        statistics = _statistics(cfg.get("statistics", list(cls.default("statistics"))))
        if mode == "anomaly" and not set(statistics) <= {"mean", "count"}:
            raise _fail(
                "statistics",
                f"season_mode anomaly writes {', '.join(ANOMALY_STATISTICS)} bands; "
                f"allowed: mean, count (got {list(statistics)!r})",
            )
        config = cls(
            preset=preset_name,
            red_band=_band("red_band", cfg.get("red_band", preset and preset.red_band)),
            nir_band=_band("nir_band", cfg.get("nir_band", preset and preset.nir_band)),
            mask_band=mask_band,
            good_pixel_flags=MappingProxyType(dict(flags)),
            mask_filters=_mask_filters(cfg.get("mask_filters")),
            statistics=statistics,
            seasons=Seasons.from_config(cfg.get("seasons"), mode=mode),
            min_clear=min_clear,
            scale_factor=_per_band_numbers("scale_factor", cfg.get("scale_factor")),
            add_offset=_per_band_numbers("add_offset", cfg.get("add_offset")),
            resampling=_choice(
                "resampling", cfg.get("resampling", cls.default("resampling")), RESAMPLING
            ),
            chunks=_chunks(cfg.get("chunks", cls.default("chunks"))),
            loader=_choice("loader", cfg.get("loader", cls.default("loader")), LOADERS),
            preview_band=preview,
            requester_pays=requester_pays,
            read_retries=read_retries,
            ndvi_adjust=_ndvi_adjust(cfg.get("ndvi_adjust")),
            baseline=_baseline(cfg.get("baseline"), mode),
            min_baseline_years=min_years,
            on_bad_input=_choice(
                "on_bad_input", cfg.get("on_bad_input", cls.default("on_bad_input")), ON_BAD_INPUT
            ),
        )
        if config.on_bad_input == "skip" and config.loader != "direct":
            raise _fail(
                "on_bad_input",
                f"skip needs loader: direct (loader: {config.loader} reads with odc-stats' "
                f"loader, which cannot leave a scene out)",
            )
        if len({config.red_band, config.nir_band, config.mask_band}) != 3:
            raise _fail(
                "red_band", "red_band, nir_band and mask_band must be three different bands"
            )
        # the preset knows its mask band's flag table: check flags now, not at first load
        if preset is not None and mask_band == preset.mask_band:
            config.clear_rule(preset.flags_definition)
        names = [b.name for b in config.output_bands]
        if preview is not None and preview not in names:
            raise _fail(
                "preview_band", f"{preview!r} is not an output band; allowed: {', '.join(names)}"
            )
        return config

    @property
    def read_env(self) -> tuple[tuple[str, str], ...]:
        """GDAL options for reading inputs: HTTP retries of transient errors (5xx, dropped
        connections), and the requester-pays header for buckets like USGS' usgs-landsat."""
        env = {"GDAL_HTTP_MAX_RETRY": str(self.read_retries), "GDAL_HTTP_RETRY_DELAY": "0.5"}
        if self.requester_pays:
            env["AWS_REQUEST_PAYER"] = "requester"
        return tuple(env.items())

    @property
    def input_bands(self) -> tuple[str, str, str]:
        return (self.red_band, self.nir_band, self.mask_band)

    @property
    def output_bands(self) -> tuple[OutputBand, ...]:
        """Output bands in order: season-major, then ``statistics`` order."""
        out = []
        for season in self.seasons.groups:
            for stat in self.band_statistics:
                dtype, nodata = band_dtype_nodata(stat)
                out.append(OutputBand(band_name(stat, season), stat, season, dtype.name, nodata))
        return tuple(out)

    @property
    def band_statistics(self) -> tuple[str, ...]:
        """Each season's (group's) statistics in band order: ``statistics`` in task and year
        modes; climatology: mean, std, years, count and the median/min/max asked for;
        anomaly: :data:`ANOMALY_STATISTICS`."""
        mode = self.seasons.mode
        if mode == "climatology":
            extras = tuple(s for s in CLIMATOLOGY_EXTRAS if s in self.statistics)
            return CLIMATOLOGY_STATISTICS + extras
        if mode == "anomaly":
            return ANOMALY_STATISTICS
        return self.statistics

    @property
    def measurements(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.output_bands)

    def clear_rule(self, flags_definition: Mapping[str, Any], *, band: str = "") -> ClearRule:
        """Compile ``good_pixel_flags`` against the mask band's ``flags_definition``
        (``band``: the product's name for the mask band, for messages)."""
        return compile_clear_rule(
            flags_definition, self.good_pixel_flags, band=band or self.mask_band
        )
