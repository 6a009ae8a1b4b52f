"""seasons.py: months to seasons, modes, band names."""

from __future__ import annotations

import numpy as np
import pytest

from odc_ndvi_plugin.seasons import DEFAULT_SEASONS, Seasons, band_name


def _dates(*iso: str) -> np.ndarray:
    return np.array(iso, dtype="datetime64[D]")


@pytest.mark.parametrize(
    "date, season",
    [
        ("2022-12-01", "djf"),
        ("2022-12-31", "djf"),
        ("2023-01-15", "djf"),
        ("2023-02-28", "djf"),
        ("2023-03-01", "mam"),
        ("2023-05-31", "mam"),
        ("2023-06-01", "jja"),
        ("2023-08-31", "jja"),
        ("2023-09-01", "son"),
        ("2023-11-30", "son"),
        ("2024-02-29", "djf"),
    ],
)
def test_default_year_mode_months(date, season):
    s = Seasons.from_config(None, mode="year")
    assert s.names[s.group_index(_dates(date))[0]] == season


def test_djf_spans_the_year_boundary():
    s = Seasons.from_config(DEFAULT_SEASONS, mode="year")
    idx = s.group_index(_dates("2022-12-20", "2023-01-05", "2023-02-10", "2023-03-01"))
    assert list(idx) == [0, 0, 0, 1]


def test_custom_seasons_leave_other_months_out():
    s = Seasons.from_config({"wet": [11, 12, 1, 2, 3], "dry": [5, 6, 7, 8, 9]}, mode="year")
    idx = s.group_index(
        _dates("2023-01-01", "2023-04-10", "2023-06-30", "2023-10-31", "2023-11-01")
    )
    assert list(idx) == [0, -1, 1, -1, 0]
    assert s.groups == ("wet", "dry")


def test_task_mode_is_one_group():
    s = Seasons.from_config(None, mode="task")
    assert s.groups == (None,)
    assert list(s.group_index(_dates("2023-01-01", "2023-07-01"))) == [0, 0]


@pytest.mark.parametrize(
    "seasons, mode, message",
    [
        (
            {"a": [1, 2], "b": [2, 3]},
            "year",
            "plugin_config.seasons.b: month 2 is already in season 'a'",
        ),
        ({"a": [0]}, "year", "plugin_config.seasons.a: expected an integer in 1..12, got 0"),
        ({"a": [13]}, "year", "plugin_config.seasons.a: expected an integer in 1..12, got 13"),
        ({"a": []}, "year", "plugin_config.seasons.a: expected a non-empty list"),
        ({"a": "jan"}, "year", "plugin_config.seasons.a: expected a non-empty list"),
        ({"a": [1.5]}, "year", "plugin_config.seasons.a: expected an integer in 1..12, got 1.5"),
        ({"a": [True]}, "year", "plugin_config.seasons.a: expected an integer in 1..12, got True"),
        ({"not valid": [1]}, "year", "must be an identifier"),
        ({}, "year", "plugin_config.seasons: expected a non-empty mapping"),
        (
            None,
            "monthly",
            "plugin_config.season_mode: 'monthly' is not allowed; allowed: task, year",
        ),
    ],
)
def test_bad_seasons(seasons, mode, message):
    with pytest.raises(ValueError) as err:
        Seasons.from_config(seasons, mode=mode)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "stat, season, name",
    [
        ("mean", None, "ndvi_mean"),
        ("count", None, "clear_count"),
        ("mean", "djf", "ndvi_mean_djf"),
        ("count", "jja", "clear_count_jja"),
        ("median", "wet", "ndvi_median_wet"),
        ("std", None, "ndvi_std"),
        ("min", "son", "ndvi_min_son"),
        ("max", None, "ndvi_max"),
    ],
)
def test_band_names(stat, season, name):
    assert band_name(stat, season) == name
