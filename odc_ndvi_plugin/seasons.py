"""Where a month becomes a season, and where an output band gets its name.

Two grouping modes:

* ``task``: every observation of an odc-stats task is one group (use with
  ``odc-stats save-tasks --frequency seasonal``, whose tasks are already a season);
  bands are ``ndvi_<stat>`` and ``clear_count``.
* ``year``: a task is a 12-month window and observations are grouped by the month of
  their (solar) date into the configured seasons; bands get a ``_<season>`` suffix,
  e.g. ``ndvi_mean_djf`` or ``clear_count_jja``.
* ``climatology``: a task spans whole 12-month blocks (many years). Each season must be
  cyclically consecutive months; an observation belongs to the *instance* of its season
  that contains its (solar-date) month, labelled by the instance's first month (DJF
  Dec-1993..Feb-1994 -> 1993-12): one instance is one block's season, ``m[k, s]``.
  odc-stats hands the plugin no task period, so blocks are recognised from the
  observations; this equals "block k = [start + 12k, start + 12k + 12) months" whenever
  the window starts on a season's first month (``odc-ndvi run`` checks that).
* ``anomaly``: a task is one season (like ``task``); its season is the configured
  season holding every observation's month, needed to pick the baseline's bands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._validate import check_choice, check_int, check_list, check_mapping
from .errors import ConfigError

__all__ = [
    "DEFAULT_SEASONS",
    "PER_SEASON_MODES",
    "SEASON_MODES",
    "Seasons",
    "band_name",
    "period_problem",
]

DEFAULT_SEASONS: Mapping[str, tuple[int, ...]] = {
    "djf": (12, 1, 2),
    "mam": (3, 4, 5),
    "jja": (6, 7, 8),
    "son": (9, 10, 11),
}
SEASON_MODES = ("task", "year", "climatology", "anomaly")
#: modes whose output bands carry a ``_<season>`` suffix
PER_SEASON_MODES = ("year", "climatology")

#: statistic name -> output band stem
_BAND_STEM = {
    "mean": "ndvi_mean",
    "median": "ndvi_median",
    "std": "ndvi_std",
    "min": "ndvi_min",
    "max": "ndvi_max",
    "count": "clear_count",
    "years": "clear_years",
    "anomaly": "ndvi_anomaly",
    "std_anomaly": "ndvi_std_anomaly",
    "baseline_years": "baseline_years",
}


def band_name(statistic: str, season: str | None = None) -> str:
    """Output band name of ``statistic`` (for ``season`` in year mode)."""
    stem = _BAND_STEM[statistic]
    return stem if season is None else f"{stem}_{season}"


@dataclass(frozen=True)
class Seasons:
    """Ordered seasons, each a set of calendar months (1-12), no month in two seasons.

    In ``task`` mode there is a single unnamed group holding every observation.
    """

    names: tuple[str, ...]
    months: tuple[tuple[int, ...], ...]
    mode: str = "task"

    @classmethod
    def from_config(
        cls, seasons: Mapping[str, Sequence[int]] | None, *, mode: str = "task"
    ) -> Seasons:
        """Validate a ``seasons`` mapping; errors name the ``plugin_config`` key."""
        check_choice(mode, "plugin_config.season_mode", SEASON_MODES)
        if seasons is None:
            seasons = DEFAULT_SEASONS
        what = "a non-empty mapping of season name -> list of months"
        if not check_mapping(seasons, "plugin_config.seasons", what=what):
            raise ConfigError("plugin_config.seasons", f"expected {what}, got {{}}")
        owner: dict[int, str] = {}
        names, months = [], []
        for name, mm in seasons.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(
                    "plugin_config.seasons",
                    f"season name {name!r} must be an identifier (letters, digits, _)",
                )
            where = f"plugin_config.seasons.{name}"
            check_list(mm, where, what="a non-empty list of months 1-12", empty=False)
            for m in mm:
                check_int(int(m) if isinstance(m, np.integer) else m, where, minimum=1, maximum=12)
                if int(m) in owner:
                    raise ConfigError(
                        where,
                        f"month {m} is already in season {owner[int(m)]!r}; a month may "
                        "belong to one season only",
                    )
                owner[int(m)] = name
            names.append(name)
            months.append(tuple(int(m) for m in mm))
            if mode in ("climatology", "anomaly") and not _consecutive(months[-1]):
                raise ConfigError(
                    where,
                    f"season_mode {mode} needs consecutive months in calendar order "
                    f"(e.g. [12, 1, 2]), got {list(mm)!r}",
                )
        return cls(names=tuple(names), months=tuple(months), mode=mode)

    def to_config(self) -> dict[str, list[int]]:
        """The ``seasons`` mapping as a ``plugin_config`` writes it (name -> months)."""
        return {name: list(mm) for name, mm in zip(self.names, self.months, strict=True)}

    @property
    def groups(self) -> tuple[str | None, ...]:
        """Group labels in output order: season names in year mode, ``(None,)`` in task mode."""
        return self.names if self.mode in PER_SEASON_MODES else (None,)

    def group_index(self, times: np.ndarray) -> np.ndarray:
        """Group number of each observation time (``datetime64``); -1 = in no season."""
        times = np.asarray(times, dtype="datetime64[D]")
        if self.mode in ("task", "anomaly"):
            return np.zeros(times.shape, dtype=np.int16)
        return self.season_of(times)

    def season_of(self, times: np.ndarray) -> np.ndarray:
        """Index of the configured season holding each time's month; -1 = in none."""
        month_of = (np.asarray(times, dtype="datetime64[M]").astype(np.int64) % 12) + 1
        lut = np.full(13, -1, dtype=np.int16)
        for i, mm in enumerate(self.months):
            lut[list(mm)] = i
        return lut[month_of]

    def instance_index(self, times: np.ndarray) -> np.ndarray:
        """Climatology blocks: per time, the first month of the instance of its season that
        holds it, as months since 1970-01 (``datetime64[M]`` as int); -1 = in no season.
        E.g. with DJF = [12, 1, 2], 1994-02-10 -> 1993-12."""
        month_abs = np.asarray(times, dtype="datetime64[M]").astype(np.int64)
        month_of = month_abs % 12 + 1
        position = np.full(13, -1, dtype=np.int64)  # month -> its place in its season
        for mm in self.months:
            for p, m in enumerate(mm):
                position[m] = p
        where = position[month_of]
        return np.where(where >= 0, month_abs - where, -1)

    def season_named(self, times: np.ndarray) -> str:
        """Anomaly mode: the one configured season holding every time's month (ValueError
        naming the seasons found otherwise)."""
        idx = self.season_of(times)
        found = sorted(set(idx.tolist()))
        if len(found) == 1 and found[0] >= 0:
            return self.names[found[0]]
        if not found:
            raise ValueError("season_mode anomaly: the task has no observations")
        months = np.asarray(times, dtype="datetime64[M]")
        firsts = sorted((str(months[idx == i].min()), i) for i in found)
        parts = [f"{self.names[i] if i >= 0 else 'no season'} (e.g. {m})" for m, i in firsts]
        raise ValueError(
            "season_mode anomaly: a task must be one configured season, but its observations "
            f"fall in {' and '.join(parts)}; use save-tasks --frequency seasonal"
        )


def _consecutive(months: Sequence[int]) -> bool:
    """Months in cyclic calendar order without gaps ([12, 1, 2] yes, [1, 3] no)."""
    return all(b == a % 12 + 1 for a, b in zip(months, months[1:], strict=False))


def period_problem(seasons: Seasons, start: dt.datetime, end: dt.datetime) -> str | None:
    """Why a task period (``start`` .. ``end`` inclusive, as odc-stats' ``DateTimeRange``)
    does not suit ``seasons.mode``, or None. Climatology: whole 12-month blocks starting on
    the first month of a configured season; anomaly: exactly one configured season."""
    if seasons.mode not in ("climatology", "anomaly"):
        return None
    after = end + dt.timedelta(microseconds=1)
    whole_months = start == dt.datetime(start.year, start.month, 1) and after == dt.datetime(
        after.year, after.month, 1
    )
    n_months = (after.year - start.year) * 12 + after.month - start.month
    firsts = {mm[0]: name for name, mm in zip(seasons.names, seasons.months, strict=True)}
    if seasons.mode == "climatology":
        if whole_months and n_months > 0 and n_months % 12 == 0 and start.month in firsts:
            return None
        return (
            "season_mode climatology needs whole 12-month blocks starting on the first month "
            f"of a season ({', '.join(f'{n}: month {m}' for m, n in firsts.items())}), e.g. "
            "save-tasks --frequency all --temporal-range 1993-12--P360M"
        )
    name = firsts.get(start.month)
    if (
        whole_months
        and name is not None
        and n_months == len(seasons.months[seasons.names.index(name)])
    ):
        return None
    return (
        "season_mode anomaly needs one task per configured season "
        f"({', '.join(f'{n}: {list(mm)}' for n, mm in zip(seasons.names, seasons.months, strict=True))}), "
        "e.g. save-tasks --frequency seasonal"
    )
