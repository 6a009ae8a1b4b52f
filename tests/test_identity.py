"""Whose outputs these are: the run config's identity, drop-in configs, product definitions."""

from __future__ import annotations

import logging

import pytest
import yaml
from click.testing import CliRunner

from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.ops.identity import DEA_DEFAULTS, IDENTITY_KEYS
from tests.conftest import CFG_DIR

SHIPPED = CFG_DIR / "run-usgs-c2-year.yaml"


def _config(tmp_path, **changes):
    doc = yaml.safe_load(SHIPPED.read_text())
    for key, value in changes.items():
        if key.startswith("product."):
            if value is None:
                doc["product"].pop(key[len("product.") :])
            else:
                doc["product"][key[len("product.") :]] = value
        else:
            doc[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("key", IDENTITY_KEYS)
def test_a_config_that_would_publish_as_dea_is_refused_in_one_line(tmp_path, key):
    result = CliRunner().invoke(
        main, ["check-config", str(_config(tmp_path, **{f"product.{key}": None}))]
    )
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert f"product.{key} not set" in lines[0] and DEA_DEFAULTS[key] in lines[0]


def test_deas_identity_is_fine_when_the_config_says_so(tmp_path):
    path = _config(tmp_path, **{f"product.{k}": v for k, v in DEA_DEFAULTS.items()})
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output


def test_an_unknown_product_key_is_named(tmp_path):
    result = CliRunner().invoke(
        main, ["check-config", str(_config(tmp_path, **{"product.publisher": "x"}))]
    )
    assert result.exit_code != 0
    assert "run config: product: unknown key 'publisher'" in result.output


def test_a_dea_config_style_single_file_is_accepted_and_its_grid_loads_the_product(
    tmp_path, caplog
):
    """A file that also holds the save-tasks keys, as dea-config's single-file configs do."""
    path = _config(
        tmp_path,
        grid="africa-30",
        frequency="all",
        input_products="ls8_sr-ls9_sr",
        complevel=6,
    )
    caplog.set_level(logging.INFO)
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "ignoring the save-tasks key(s) grid, frequency, complevel, input_products" in caplog.text
    )
    result = CliRunner().invoke(main, ["product-definition", str(path)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    assert doc["load"] == {
        "crs": "EPSG:6933",
        "resolution": {"y": -30, "x": 30},
        "align": {"y": 0, "x": 0},
    }
    assert doc["metadata"]["properties"] == {
        "odc:file_format": "GeoTIFF",
        "odc:product_family": "ndvi",
        "odc:producer": "example.org",
    }
    assert doc["license"] == "CC-BY-4.0"


def test_a_bad_grid_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["product-definition", str(SHIPPED), "--grid", "mars-30"])
    assert result.exit_code != 0
    assert "grid 'mars-30' is not an odc-stats grid" in result.output
