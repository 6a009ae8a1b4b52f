"""``odc-ndvi ows-config``: the datacube-ows layer configuration generated from run configs
(odc_ndvi_plugin/ows.py), checked by datacube-ows' own parser, and the shipped one
(cfg/ows/ows_cfg.json) kept equal to what the shipped run configs generate. The services
themselves draw with it in tests/test_serve.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.ows import RAMPS, band_kind
from tests.conftest import CFG_DIR

#: the shipped run configs with distinct output products (run-usgs-c2-year-sqs.yaml writes
#: the same product as run-usgs-c2-year.yaml)
SHIPPED = [
    "run-usgs-c2-year.yaml",
    "run-usgs-c2-seasonal.yaml",
    "run-usgs-c2-climatology.yaml",
    "run-usgs-c2-anomaly.yaml",
    "run-dea-ard-year.yaml",
]
SHIPPED_OWS = CFG_DIR / "ows" / "ows_cfg.json"


@pytest.fixture(scope="module")
def generated() -> dict:
    result = CliRunner().invoke(
        main, ["ows-config", *[str(CFG_DIR / c) for c in SHIPPED], "--grid", "au-30"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _layers(cfg: dict) -> dict[str, dict]:
    return {lyr["name"]: lyr for folder in cfg["layers"] for lyr in folder["layers"]}


def test_the_shipped_ows_config_is_what_the_shipped_run_configs_generate(generated):
    assert json.loads(SHIPPED_OWS.read_text()) == generated, (
        "regenerate: odc-ndvi ows-config "
        + " ".join(f"cfg/{c}" for c in SHIPPED)
        + " --grid au-30 -o cfg/ows/ows_cfg.json"
    )


def test_one_layer_per_product_one_style_per_band_with_legends(generated):
    layers = _layers(generated)
    assert sorted(layers) == sorted(
        [
            "ndvi_seasonal_year_usgs_c2",
            "ndvi_seasonal_usgs_c2",
            "ndvi_climatology_usgs_c2",
            "ndvi_anomaly_usgs_c2",
            "ndvi_seasonal_year_dea_ard",
        ]
    )
    for name, layer in layers.items():
        styles = {s["name"]: s for s in layer["styling"]["styles"]}
        assert list(styles) == list(layer["bands"]), name
        assert layer["time_resolution"] == "summary"  # one time per task period
        assert layer["native_crs"] == "EPSG:3577" and layer["native_resolution"] == [30, -30]
        masks = layer["image_processing"]["extent_mask_func"]
        assert "datacube_ows.ogc_utils.mask_by_nan" in masks  # NaN nodata transparent
        assert "datacube_ows.ogc_utils.mask_by_val" in masks  # 65535 counts transparent
        for band, style in styles.items():
            assert style["needed_bands"] == [band]
            assert style["color_ramp"] == RAMPS[band_kind(band)]
            legend = style["legend"]
            assert float(legend["begin"]) == style["color_ramp"][0]["value"]
            assert float(legend["end"]) == style["color_ramp"][-1]["value"]
    year = layers["ndvi_seasonal_year_usgs_c2"]
    assert year["styling"]["default_style"] == "ndvi_mean_djf"
    assert {s["name"] for s in year["styling"]["styles"]} >= {
        f"ndvi_mean_{s}" for s in ("djf", "mam", "jja", "son")
    }


def test_anomalies_get_a_diverging_ramp_centred_on_zero(generated):
    styles = {s["name"]: s for s in _layers(generated)["ndvi_anomaly_usgs_c2"]["styling"]["styles"]}
    assert band_kind("ndvi_mean") == "ndvi" and band_kind("baseline_years") == "count"
    for band in ("ndvi_anomaly", "ndvi_std_anomaly"):
        ramp = styles[band]["color_ramp"]
        values = [n["value"] for n in ramp]
        assert values == sorted(values) and values == [-v for v in reversed(values)], band
        middle = ramp[len(ramp) // 2]
        assert middle["value"] == 0 and middle["color"] == "#f5f5f5"  # neutral at 0
        assert ramp[0]["color"] != ramp[-1]["color"]
    ndvi = [n["value"] for n in RAMPS["ndvi"]]
    assert ndvi == sorted(ndvi)


def test_datacube_ows_parses_the_config_styles_and_legends(generated):
    """datacube-ows' own configuration parser (no database needed for this part) accepts
    every layer, style, ramp and legend."""
    pytest.importorskip("datacube_ows")
    from datacube_ows.ows_configuration import OWSConfig

    cfg = OWSConfig(refresh=True, cfg=generated)
    assert sorted(cfg.layer_index) == sorted(_layers(generated))
    layer = cfg.layer_index["ndvi_anomaly_usgs_c2"]
    assert set(layer.style_index) == set(_layers(generated)["ndvi_anomaly_usgs_c2"]["bands"])


def test_a_config_without_a_grid_is_refused_in_one_line():
    result = CliRunner().invoke(main, ["ows-config", str(CFG_DIR / "run-usgs-c2-year.yaml")])
    assert result.exit_code == 2, result.output
    assert "grid" in result.output and len(result.output.strip().splitlines()) == 1
