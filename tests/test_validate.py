"""One validation toolkit (odc_ndvi_plugin/_validate.py) and the configs that use it.

Every error is one line naming the key path and what would be valid; a typo gets the
nearest key. ``cog_opts`` is checked against the GTiff creation options of the GDAL that
rasterio links (the COG writer), read from the driver at run time.
"""

from __future__ import annotations

import pytest
import rasterio
import yaml
from click.testing import CliRunner

from odc_ndvi_plugin import NDVISeasonal
from odc_ndvi_plugin._validate import (
    ConfigError,
    check_choice,
    check_int,
    check_keys,
    check_number,
)
from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.ops.cog_options import check_cog_opts, gtiff_creation_options
from odc_ndvi_plugin.ops.gateway import GatewayClusterConfig
from odc_ndvi_plugin.ops.runconfig import load_run_config
from tests.conftest import CFG_DIR

YEAR_RUN = CFG_DIR / "run-usgs-c2-year.yaml"


def test_unknown_keys_name_the_nearest_and_all_allowed():
    with pytest.raises(ConfigError) as err:
        check_keys({"nir_bnd": 1, "colour": 2}, ("red_band", "nir_band"), "plugin_config")
    assert str(err.value) == (
        "plugin_config: unknown keys 'nir_bnd' (did you mean 'nir_band'?), 'colour'; "
        "allowed keys: red_band, nir_band"
    )


@pytest.mark.parametrize(
    "check, value, message",
    [
        (lambda v: check_int(v, "run config: threads", minimum=1, also=(-1,)), "many",
         "run config: threads: expected an integer >= 1 or -1, got 'many'"),
        (lambda v: check_int(v, "x", minimum=1, maximum=12), 13, "x: expected an integer in 1..12, got 13"),
        (lambda v: check_int(v, "x"), True, "x: expected an integer, got True"),
        (lambda v: check_number(v, "x", positive=True), 0, "x: expected a positive number, got 0"),
        (lambda v: check_choice(v, "x", ("mean", "median")), "meen",
         "x: 'meen' is not allowed (did you mean 'mean'?); allowed: mean, median"),
    ],
)  # fmt: skip
def test_value_errors_are_one_line_naming_the_key(check, value, message):
    with pytest.raises(ConfigError) as err:
        check(value)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def _run_config(**patch):
    doc = yaml.safe_load(YEAR_RUN.read_text())
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"threads": "many"}, "run config: threads: expected an integer >= 1 or -1"),
        ({"overwrite": "yes"}, "run config: overwrite: expected true or false, got 'yes'"),
        ({"max_processing_time": -5}, "run config: max_processing_time: expected an integer >= 0"),
        ({"future_poll_interval": 0}, "run config: future_poll_interval: expected a positive number"),
        ({"memory_limit": "lots"}, "run config: memory_limit: expected a size like '4GiB'"),
        ({"s3_acl": "public"}, "run config: s3_acl: 'public' is not allowed (did you mean 'public-read'?)"),
        ({"renew_safety_margin": 300}, "renew_safety_margin: must be smaller than job_queue_max_lease (300 s)"),
        ({"product": {"verison": "1"}}, "run config: product: unknown key 'verison' (did you mean 'version'?)"),
        ({"dataset_filters": "{bad"}, "run config: dataset_filters: expected JSON objects separated by '|'"),
        ({"output_locaton": "file:///x"}, "run config: unknown key 'output_locaton' (did you mean 'output_location'?)"),
        ({"cog_opts": {"compress": "zstdd"}}, "run config: cog_opts.compress: 'zstdd' is not allowed (did you mean 'ZSTD'?); allowed: NONE,"),
        ({"cog_opts": {"compression": "zstd"}}, "run config: cog_opts.compression: unknown COG option (did you mean 'compress'?)"),
        ({"cog_opts": {"zstd_level": 23}}, "run config: cog_opts.zstd_level: expected an integer in 1..22, got 23"),
        ({"cog_opts": {"blocksize": 500}}, "run config: cog_opts.blocksize: expected a multiple of 16"),
        ({"cog_opts": {"overrides": {"rgba": {"zlevel": 13}}}}, "run config: cog_opts.overrides.rgba.zlevel: expected an integer in 1..12, got 13"),
        ({"cog_opts": {"predictor": 4}}, "run config: cog_opts.predictor: '4' is not allowed; allowed: 1, 2, 3"),
    ],
)  # fmt: skip
def test_run_config_values_are_checked(patch, message):
    with pytest.raises(ConfigError) as err:
        load_run_config(_run_config(**patch))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cog_options_come_from_the_writers_gdal():
    """The option table is the GTiff driver's of rasterio's GDAL (the library that writes
    the COGs), not a list of ours: its COMPRESS values are what that driver lists."""
    options = gtiff_creation_options()
    assert options is not None
    with rasterio.Env() as env:
        drivers = env.drivers()
    assert "GTiff" in drivers
    assert {"DEFLATE", "ZSTD", "LZW", "NONE"} <= set(options["COMPRESS"].values)
    assert (options["ZLEVEL"].minimum, options["ZLEVEL"].maximum) == (1, 12)
    check_cog_opts(yaml.safe_load(YEAR_RUN.read_text())["cog_opts"])  # the shipped ones pass


def test_a_rejected_compression_is_one_that_gdal_would_ignore(tmp_path):
    """Why compress is checked: GDAL only warns about 'zstdd' and writes the file without
    compression (the independent reference here is the written file itself)."""
    import numpy as np

    path = tmp_path / "t.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint16", compress="zstdd")
    profile.update(crs="EPSG:3577", transform=rasterio.transform.from_origin(0, 0, 30, 30))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, 64, 64), "uint16"))
    with rasterio.open(path) as src:
        assert src.compression is None
    with pytest.raises(ConfigError):
        check_cog_opts({"compress": "zstdd"})


def test_plugin_config_unknown_key_suggests_the_nearest():
    with pytest.raises(ValueError) as err:
        NDVISeasonal(nir_bnd="nir08")
    assert str(err.value).startswith(
        "plugin_config: unknown key 'nir_bnd' (did you mean 'nir_band'?); allowed keys: preset,"
    )


def test_gateway_config_uses_the_same_unknown_key_line():
    with pytest.raises(ConfigError) as err:
        GatewayClusterConfig.from_mapping({"wokers": 2}, source="g.yaml")
    assert str(err.value).startswith(
        "g.yaml: unknown key 'wokers' (did you mean 'workers'?); allowed keys: address"
    )


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"threads": "many"}, "Error: run config: threads: expected an integer"),
        ({"cog_opts": {"compress": "zstdd"}}, "Error: run config: cog_opts.compress: 'zstdd' is not allowed"),
        ({"plugin_config": {"nir_bnd": "nir08"}}, "Error: plugin_config: unknown key 'nir_bnd' (did you mean 'nir_band'?)"),
    ],
    ids=["threads", "compress", "typo"],
)  # fmt: skip
def test_check_config_refuses_what_it_said_ok_to(tmp_path, patch, message):
    """Issue 14: check-config said ``ok`` to ``threads: many`` and ``compress: zstdd``."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_run_config(**patch)))
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(message), line


def test_check_config_says_when_it_checked_no_band_against_a_product(tmp_path):
    """A run config names no input product: check-config cannot know whether ``nir_band``
    exists, and says so instead of a bare ``ok`` (``--product`` checks it)."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_run_config(plugin_config={"nir_band": "nir_bnd"})))
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: odc_ndvi_plugin.NDVISeasonal")
    assert result.stderr.splitlines() == [
        "note: band names not checked against an input product "
        "(give --product NAME with a configured datacube)"
    ]


def test_plugin_config_keys_and_defaults_are_stated_once_by_the_fields():
    """NDVIConfig's fields are the plugin_config keys (plus season_mode, read into
    seasons) and their defaults the defaults: a config of {} holds every field's default."""
    import dataclasses

    from odc_ndvi_plugin.config import NDVIConfig

    names = [f.name for f in dataclasses.fields(NDVIConfig)]
    assert set(NDVIConfig.keys()) == {*names, "season_mode"}
    built = NDVIConfig.from_plugin_config({})
    for name in ("preset", "min_clear", "read_retries", "resampling", "loader", "statistics"):
        assert getattr(built, name) == NDVIConfig.default(name), name
    assert dict(built.chunks) == NDVIConfig.default("chunks")
    assert built.seasons.mode == NDVIConfig.default("season_mode") == "task"
