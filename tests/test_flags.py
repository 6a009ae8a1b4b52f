"""masking.py against the reference: datacube's make_mask on every possible mask value."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from datacube.utils.masking import make_mask

from odc_ndvi_plugin.masking import compile_clear_rule
from odc_ndvi_plugin.presets import C2_QA_PIXEL_FLAGS, DEA_FMASK_FLAGS, PRESETS

ALL_U16 = np.arange(2**16, dtype=np.uint16)
ALL_U8 = np.arange(2**8, dtype=np.uint8)


def _reference(values: np.ndarray, flags_definition, flags) -> np.ndarray:
    band = xr.DataArray(values, dims=("x",), attrs={"flags_definition": flags_definition})
    return make_mask(band, **flags).values


C2_FLAG_SETS = [
    PRESETS["usgs_c2"].good_pixel_flags,
    {"clear": True},
    {"nodata": False, "cloud_confidence": "low", "cirrus_confidence": "none"},
    {"snow": "high_confidence", "water": "water"},
    {"cloud_shadow_confidence": "reserved", "dilated_cloud": "not_dilated", "nodata": 0},
    {"cloud_confidence": "high", "cloud": "high_confidence"},
    {"nodata": True},
]


@pytest.mark.parametrize(
    "flags", C2_FLAG_SETS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items())
)
def test_qa_pixel_rule_matches_make_mask_for_all_65536_values(flags):
    rule = compile_clear_rule(C2_QA_PIXEL_FLAGS, flags, band="qa_pixel")
    expected = _reference(ALL_U16, C2_QA_PIXEL_FLAGS, flags)
    np.testing.assert_array_equal(rule.evaluate(ALL_U16), expected)
    # the small-array path (no lookup table) agrees too
    np.testing.assert_array_equal(rule.evaluate(ALL_U16[:4000]), expected[:4000])


@pytest.mark.parametrize("value", ["nodata", "valid", "cloud", "shadow", "snow", "water"])
def test_fmask_rule_matches_make_mask_for_every_value(value):
    flags = {"fmask": value}
    rule = compile_clear_rule(DEA_FMASK_FLAGS, flags, band="oa_fmask")
    expected = _reference(ALL_U8, DEA_FMASK_FLAGS, flags)
    np.testing.assert_array_equal(rule.evaluate(ALL_U8), expected)
    assert rule.evaluate(ALL_U8).sum() == 1


def test_enum_set_is_the_union_of_make_masks():
    rule = compile_clear_rule(
        DEA_FMASK_FLAGS, {"fmask": ["valid", "snow", "water"]}, band="oa_fmask"
    )
    expected = np.zeros(ALL_U8.shape, bool)
    for value in ("valid", "snow", "water"):
        expected |= _reference(ALL_U8, DEA_FMASK_FLAGS, {"fmask": value})
    np.testing.assert_array_equal(rule.evaluate(ALL_U8), expected)
    assert sorted(np.flatnonzero(expected)) == [1, 4, 5]


def test_list_values_combine_with_other_flags():
    flags = {"nodata": False, "cloud_confidence": ["none", "low"]}
    rule = compile_clear_rule(C2_QA_PIXEL_FLAGS, flags, band="qa_pixel")
    expected = _reference(
        ALL_U16, C2_QA_PIXEL_FLAGS, {"nodata": False, "cloud_confidence": "none"}
    ) | _reference(ALL_U16, C2_QA_PIXEL_FLAGS, {"nodata": False, "cloud_confidence": "low"})
    np.testing.assert_array_equal(rule.evaluate(ALL_U16), expected)


def test_flag_values_from_a_database_have_string_keys():
    # flags_definition read back from the index can carry string codes
    defn = {
        "fmask": {
            "bits": list(range(8)),
            "values": {str(k): v for k, v in DEA_FMASK_FLAGS["fmask"]["values"].items()},
        }
    }
    rule = compile_clear_rule(defn, {"fmask": "valid"}, band="oa_fmask")
    assert rule.terms == ((255, 1),)


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"cloudy": False}, "unknown flag 'cloudy' for band 'qa_pixel'; allowed: cirrus"),
        (
            {"cloud": "maybe"},
            "good_pixel_flags.cloud: value 'maybe' is not allowed for band 'qa_pixel'; allowed: 'not_high_confidence', 'high_confidence'",
        ),
        ({"cloud_confidence": "very_high"}, "allowed: 'none', 'low', 'medium', 'high'"),
        ({"water": True}, "good_pixel_flags.water: value True is not allowed"),
        ({"nodata": []}, "empty list of values"),
    ],
)
def test_bad_flags_name_the_flag_and_list_allowed(flags, message):
    with pytest.raises(ValueError, match=None) as err:
        compile_clear_rule(C2_QA_PIXEL_FLAGS, flags, band="qa_pixel")
    assert message in str(err.value)


def test_missing_flags_definition_is_an_error():
    with pytest.raises(ValueError, match="has no flags_definition"):
        compile_clear_rule({}, {"x": 1}, band="qa")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "uint32"])
def test_evaluate_any_integer_dtype(dtype):
    values = np.array([0, 1, 2, 3, 64, 255], dtype=dtype)
    rule = compile_clear_rule(DEA_FMASK_FLAGS, {"fmask": "valid"}, band="oa_fmask")
    np.testing.assert_array_equal(rule.evaluate(np.tile(values, 1000)), np.tile(values == 1, 1000))


@pytest.mark.parametrize(
    "product_file, band, table",
    [
        ("ls_c2l2_sr.odc-product.yaml", "qa_pixel", C2_QA_PIXEL_FLAGS),
        ("ga_ls_ard_3.odc-product.yaml", "oa_fmask", DEA_FMASK_FLAGS),
    ],
)
def test_preset_flag_tables_equal_the_product_definitions(product_file, band, table):
    import yaml

    from tests.conftest import PRODUCTS_DIR

    doc = yaml.safe_load((PRODUCTS_DIR / product_file).read_text())
    (measurement,) = (m for m in doc["measurements"] if m["name"] == band)
    # DEA writes the codes as strings ('0': nodata); make_mask int()s them, so do we
    strip = {
        k: {"bits": v["bits"], "values": {int(c): name for c, name in v["values"].items()}}
        for k, v in measurement["flags_definition"].items()
    }
    assert strip == {k: {"bits": v["bits"], "values": dict(v["values"])} for k, v in table.items()}
