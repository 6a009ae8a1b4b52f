"""The plugin's config against REAL product definitions (tests/data/real/products, unmodified):
presets per family, band aliases, reflectance scaling, one-line errors that say what to set.

Truth for the pixel checks is plain numpy on reflectance decoded with USGS' published C2
scaling and ``datacube.utils.masking.make_mask`` on the product's real flags_definition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from datacube.utils.masking import make_mask

from odc_ndvi_plugin.config import NDVIConfig
from odc_ndvi_plugin.inputs import find_band, product_inputs
from odc_ndvi_plugin.ndvi import ndvi_from_bands
from odc_ndvi_plugin.presets import PRESETS

PRODUCTS_DIR = Path(__file__).parent / "data" / "real" / "products"


def _definitions() -> dict[str, dict]:
    docs = {}
    for path in sorted(PRODUCTS_DIR.glob("*.odc-product.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["name"]] = doc
    return docs


DEFINITIONS = _definitions()


def measurements(product: str) -> dict[str, dict]:
    return {m["name"]: m for m in DEFINITIONS[product]["measurements"]}


def inputs(product: str, **plugin_config):
    return product_inputs(
        product, measurements(product), NDVIConfig.from_plugin_config(plugin_config)
    )


def test_the_vendored_definitions_are_the_real_families():
    assert {
        "ga_ls7e_ard_3",
        "ga_ls8c_ard_3",
        "ga_ls9c_ard_3",
        "ls5_sr",
        "ls7_sr",
        "ls8_sr",
        "ls9_sr",
        "ls5_c2l2_sr",
        "ls7_c2l2_sr",
        "ls8_c2l2_sr",
        "ls9_c2l2_sr",
    } <= set(DEFINITIONS)
    # real C2 definitions declare no scaling: the reason presets carry it
    for name in ("ls8_sr", "ls9_sr", "ls8_c2l2_sr", "ls9_c2l2_sr"):
        for m in DEFINITIONS[name]["measurements"]:
            assert "scale_factor" not in m and "add_offset" not in m


@pytest.mark.parametrize(
    "preset, product, bands",
    [
        ("usgs_c2", "ls9_c2l2_sr", ("red", "nir08", "qa_pixel")),
        ("usgs_c2", "ls8_c2l2_sr", ("red", "nir08", "qa_pixel")),
        ("usgs_c2", "ls7_c2l2_sr", ("red", "nir08", "qa_pixel")),
        ("usgs_c2", "ls5_c2l2_sr", ("red", "nir08", "qa_pixel")),
        ("deafrica_c2", "ls9_sr", ("SR_B4", "SR_B5", "QA_PIXEL")),
        ("deafrica_c2", "ls8_sr", ("SR_B4", "SR_B5", "QA_PIXEL")),
        ("deafrica_c2", "ls7_sr", ("SR_B3", "SR_B4", "QA_PIXEL")),
        ("deafrica_c2", "ls5_sr", ("SR_B3", "SR_B4", "QA_PIXEL")),
        ("dea_ard", "ga_ls9c_ard_3", ("nbart_red", "nbart_nir", "oa_fmask")),
        ("dea_ard", "ga_ls8c_ard_3", ("nbart_red", "nbart_nir", "oa_fmask")),
        ("dea_ard", "ga_ls7e_ard_3", ("nbart_red", "nbart_nir", "oa_fmask")),
    ],
)
def test_each_preset_reads_every_product_of_its_family(preset, product, bands):
    got = inputs(product, preset=preset)
    assert got.bands == bands
    scale, offset = PRESETS[preset].reflectance_scaling
    for enc in (got.red, got.nir):
        assert (enc.scale_factor, enc.add_offset) == (scale, offset)
        assert enc.nodata == measurements(product)[bands[0]]["nodata"]


@pytest.mark.parametrize(
    "product, config, bands",
    [
        # the issue's case: datacube resolves the alias, odc-stats' plugins default to it
        (
            "ga_ls8c_ard_3",
            {"preset": "dea_ard", "mask_band": "fmask"},
            ("nbart_red", "nbart_nir", "oa_fmask"),
        ),
        (
            "ga_ls8c_ard_3",
            {"preset": "dea_ard", "red_band": "red", "nir_band": "nbart_common_nir"},
            ("nbart_red", "nbart_nir", "oa_fmask"),
        ),
        (
            "ls8_c2l2_sr",
            {"preset": "usgs_c2", "red_band": "SR_B4", "nir_band": "band_5"},
            ("red", "nir08", "qa_pixel"),
        ),
        (
            "ls8_sr",
            {"preset": "deafrica_c2", "red_band": "SR_B4", "mask_band": "pq"},
            ("SR_B4", "SR_B5", "QA_PIXEL"),
        ),
    ],
)
def test_band_aliases_resolve_to_the_products_bands(product, config, bands):
    assert inputs(product, **config).bands == bands


def test_an_unknown_band_lists_names_and_aliases():
    with pytest.raises(ValueError) as err:
        inputs("ls8_sr", preset="usgs_c2")  # usgs_c2's nir08 is not a DE Africa band
    message = str(err.value)
    assert message.startswith(
        "plugin_config.nir_band: product 'ls8_sr' has no band or alias 'nir08'; allowed: "
    )
    assert "SR_B5 (band_5, nir)" in message and "\n" not in message


def test_a_product_without_scaling_and_no_family_preset_is_refused_in_one_line():
    config = {
        "preset": "none",
        "red_band": "SR_B4",
        "nir_band": "SR_B5",
        "mask_band": "QA_PIXEL",
        "good_pixel_flags": {"nodata": False, "cloud": "not_high_confidence"},
    }
    with pytest.raises(ValueError) as err:
        inputs("ls8_sr", **config)
    message = str(err.value)
    assert "band 'SR_B4' of product 'ls8_sr' declares no scale_factor/add_offset" in message
    assert "deafrica_c2" in message and "plugin_config.scale_factor.SR_B4" in message
    assert "\n" not in message
    # ... and works once the scaling is given (keyed by any of the band's names)
    got = inputs(
        "ls8_sr",
        **config,
        scale_factor={"red": 2.75e-5, "nir": 2.75e-5},
        add_offset={"SR_B4": -0.2, "band_5": -0.2},
    )
    assert (got.red.scale_factor, got.red.add_offset) == (2.75e-5, -0.2)
    assert (got.nir.scale_factor, got.nir.add_offset) == (2.75e-5, -0.2)


def test_a_preset_scaling_applies_only_to_the_presets_own_bands():
    # usgs_c2 on DE Africa with the NIR band named by hand: nir is not usgs_c2's nir08, so
    # the C2 default does not silently apply to it
    with pytest.raises(ValueError, match="band 'SR_B5' of product 'ls8_sr' declares no"):
        inputs("ls8_sr", preset="usgs_c2", nir_band="nir", mask_band="QA_PIXEL")


def test_scaling_overrides_must_name_the_red_or_nir_band():
    with pytest.raises(ValueError, match=r"plugin_config.scale_factor.SR_B3: not the red or NIR"):
        inputs("ls8_sr", preset="deafrica_c2", scale_factor={"SR_B3": 1.0})


def test_ndvi_on_real_c2_definitions_is_computed_on_reflectance():
    """The issue's pixel: true NDVI 0.867 is 0.431 on raw counts; with the preset, exact."""
    red_refl, nir_refl = np.float64(0.0263), np.float64(0.3691)
    true_ndvi = (nir_refl - red_refl) / (nir_refl + red_refl)
    to_dn = lambda r: np.uint16(round((r + 0.2) / 2.75e-5))  # noqa: E731
    red = np.full((3, 3), to_dn(red_refl), dtype=np.uint16)
    nir = np.full((3, 3), to_dn(nir_refl), dtype=np.uint16)
    qa = np.full((3, 3), 21824, dtype=np.uint16)  # clear land, as USGS writes it
    qa[0, 0] = 22280  # high-confidence cloud
    for product, preset in (("ls8_sr", "deafrica_c2"), ("ls8_c2l2_sr", "usgs_c2")):
        got = ndvi_from_bands(red, nir, qa, inputs(product, preset=preset))
        mask_name = inputs(product, preset=preset).bands[2]
        flags = measurements(product)[mask_name]["flags_definition"]
        clear = make_mask(
            xr.DataArray(qa, dims=("y", "x"), attrs={"flags_definition": flags}),
            **PRESETS[preset].good_pixel_flags,
        ).values
        red_r = red * 2.75e-5 - 0.2
        nir_r = nir * 2.75e-5 - 0.2
        expected = np.where(clear, (nir_r - red_r) / (nir_r + red_r), np.nan)
        np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
        assert abs(got[1, 1] - true_ndvi) < 1e-4 and round(float(true_ndvi), 3) == 0.867
    raw = (nir.astype(float) - red) / (nir.astype(float) + red)
    assert round(float(raw[1, 1]), 3) == 0.431  # what raw counts would have given


def test_presets_restate_no_flag_table_the_real_products_do_not_have():
    """The preset's flag table is the one its family's definitions carry (one fact)."""
    for preset, product in (
        ("deafrica_c2", "ls8_sr"),
        ("usgs_c2", "ls8_c2l2_sr"),
        ("dea_ard", "ga_ls8c_ard_3"),
    ):
        p = PRESETS[preset]
        mm = measurements(product)
        real = mm[find_band(mm, p.mask_band)]["flags_definition"]
        assert _semantics(p.flags_definition) == _semantics(real)


def _semantics(flags) -> dict:
    """A flag table without descriptions, value codes as integers (YAML may quote them)."""
    return {
        name: (defn["bits"], {int(k): v for k, v in defn["values"].items()})
        for name, defn in flags.items()
    }


@pytest.mark.parametrize(
    "plugin_config, message",
    [
        ({"preset": "deafrica_c2"}, None),
        (
            {"preset": "usgs_c2"},
            "plugin_config.nir_band: product 'ls8_sr' has no band or alias 'nir08'",
        ),
        ({"preset": "deafrica_c2", "nir_band": "SR_B9"}, "has no band or alias 'SR_B9'"),
    ],
)
def test_check_config_checks_bands_against_the_configured_datacube(
    make_datacube_env, tmp_path, plugin_config, message
):
    """A dea-config style file naming its input products: check-config looks them up in the
    datacube the environment configures (real DE Africa definitions indexed there)."""
    from click.testing import CliRunner

    from odc_ndvi_plugin.cli import main
    from odc_ndvi_plugin.dev.index import add_products
    from tests.conftest import CFG_DIR

    env = make_datacube_env()
    add_products(
        env, [PRODUCTS_DIR / "ls8_sr.odc-product.yaml", PRODUCTS_DIR / "ls9_sr.odc-product.yaml"]
    )
    doc = yaml.safe_load((CFG_DIR / "run-usgs-c2-year.yaml").read_text())
    doc.update(input_products="ls8_sr-ls9_sr", grid="africa-30", plugin_config=plugin_config)
    path = tmp_path / "dropin.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["check-config", str(path)], env=env.environ())
    if message is None:
        assert result.exit_code == 0, result.output
        assert "checked against the datacube: ls8_sr, ls9_sr" in result.output
    else:
        assert result.exit_code != 0
        assert message in result.output and len(result.output.strip().splitlines()) == 1


EXAMPLES = sorted((Path(__file__).parents[1] / "cfg" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_each_shipped_example_reads_the_real_products_it_names(example):
    """cfg/examples are dea-config style single files for the real families: they validate,
    and their plugin_config reads every real product their input_products name."""
    from click.testing import CliRunner

    from odc_ndvi_plugin.cli import main
    from odc_ndvi_plugin.ops.runconfig import load_run_config

    result = CliRunner().invoke(main, ["check-config", str(example)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(example.read_text())
    cfg, _ = load_run_config(doc)
    config = NDVIConfig.from_plugin_config(cfg.plugin_config)
    names = doc["input_products"].replace("+", "-").split("-")
    assert len(names) >= 2
    for name in names:
        got = product_inputs(name, measurements(name), config)
        assert got.red.scale_factor in (2.75e-5, 1e-4)
