"""load.py + ndvi.py on indexed synthetic archives: per-day NDVI stacks against the truth."""

from __future__ import annotations

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from scipy import ndimage

from odc_ndvi_plugin import NDVISeasonal
from odc_ndvi_plugin.flags import compile_clear_rule
from odc_ndvi_plugin.load import InputReadError, group_by_solar_day
from odc_ndvi_plugin.ndvi import BandEncoding, NDVIInputs, ndvi_from_bands
from tests.truth import CLEAR_RULES, truth_days

pytestmark = pytest.mark.integration


def _stack(plugin: NDVISeasonal, datasets, geobox: GeoBox):
    xx = plugin.input_data(datasets, geobox).compute()
    return xx.ndvi.values, xx.time.values.astype("datetime64[D]")


@pytest.fixture(scope="module")
def module_env(datacube_env_module):
    return datacube_env_module


@pytest.mark.parametrize("flavour", ["usgs_c2", "dea_ard"])
@pytest.mark.parametrize("loader", ["direct", "odc-stats"])
def test_stack_equals_truth_per_solar_day(flavour, loader, tiny_archive, index_archive, module_env):
    indexed = index_archive(tiny_archive(flavour), module_env)
    plugin = NDVISeasonal(preset=flavour, loader=loader, chunks={"x": 32, "y": 32})
    for geobox in indexed.archive.tiles().values():
        got, days = _stack(plugin, indexed.datasets(geobox), geobox)
        expected = truth_days(indexed.archive, geobox, CLEAR_RULES[flavour])
        assert list(days) == [d for d, _ in expected]
        np.testing.assert_allclose(
            got, np.stack([v for _, v in expected]), atol=2e-6, equal_nan=True
        )
        assert np.isfinite(got).mean() > 0.3  # not vacuous


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx**2 + yy**2 <= radius**2


def test_mask_filters_dilate_the_bad_mask_at_native_resolution(
    tiny_archive, index_archive, module_env
):
    indexed = index_archive(tiny_archive("usgs_c2"), module_env)
    radius = 2
    plugin = NDVISeasonal(mask_filters=[["dilation", radius]])
    geobox = next(iter(indexed.archive.tiles().values()))
    got, _ = _stack(plugin, indexed.datasets(geobox), geobox)
    # reference: dilate each scene's not-clear mask (scipy, not odc-algo) on a padded window
    padded = GeoBox(
        (geobox.shape.y + 2 * radius, geobox.shape.x + 2 * radius),
        geobox.affine * geobox.affine.translation(-radius, -radius),
        geobox.crs,
    )
    days = truth_days(
        indexed.archive,
        padded,
        CLEAR_RULES["usgs_c2"],
        bad_filter=lambda bad: ndimage.binary_dilation(bad, structure=_disk(radius)),
    )
    expected = np.stack([v[radius:-radius, radius:-radius] for _, v in days])
    np.testing.assert_allclose(got, expected, atol=2e-6, equal_nan=True)
    unfiltered, _ = _stack(NDVISeasonal(), indexed.datasets(geobox), geobox)
    assert np.isnan(got).sum() > np.isnan(unfiltered).sum()


def test_reprojected_scenes_are_close_to_truth(tiny_archive, index_archive, make_datacube_env):
    indexed = index_archive(tiny_archive("usgs_c2", "EPSG:32755"), make_datacube_env())
    geobox = next(iter(indexed.archive.tiles().values()))
    got, _ = _stack(NDVISeasonal(), indexed.datasets(geobox), geobox)
    expected = np.stack([v for _, v in truth_days(indexed.archive, geobox, CLEAR_RULES["usgs_c2"])])
    both = np.isfinite(got) & np.isfinite(expected)
    assert both.mean() > 0.3
    # nearest-neighbour warps of the same surface: most pixels agree closely
    assert (np.abs(got[both] - expected[both]) < 0.05).mean() > 0.9


def test_same_day_scenes_are_one_observation(tiny_archive, index_archive, module_env):
    indexed = index_archive(tiny_archive("usgs_c2"), module_env)
    geobox = next(iter(indexed.archive.tiles().values()))
    datasets = indexed.datasets(geobox)
    days = group_by_solar_day(datasets, geobox)
    assert len(days) == len(indexed.spec.dates)
    assert max(len(d.datasets) for d in days) > 1  # overlapping paths on the same day
    assert sorted(d.date.astype(object) for d in days) == sorted(indexed.spec.dates)


def test_unreadable_input_names_dataset_and_file(tiny_archive, index_archive, module_env, tmp_path):
    from datacube.storage import measurement_paths

    indexed = index_archive(tiny_archive("usgs_c2"), module_env)
    geobox = next(iter(indexed.archive.tiles().values()))
    victim = indexed.datasets(geobox)[0]
    original = measurement_paths(victim)["red"].removeprefix("file://")
    broken = tmp_path / "truncated_red.tif"
    broken.write_bytes(open(original, "rb").read()[:300])  # a truncated COG
    victim.metadata_doc["measurements"]["red"]["path"] = broken.as_uri()
    with pytest.raises(InputReadError) as err:
        NDVISeasonal().input_data([victim], geobox).compute()
    assert str(victim.id) in str(err.value) and "truncated_red.tif" in str(err.value)


def test_missing_band_names_dataset_and_band(tiny_archive, index_archive, module_env):
    indexed = index_archive(tiny_archive("usgs_c2"), module_env)
    geobox = next(iter(indexed.archive.tiles().values()))
    victim = indexed.datasets(geobox)[0]
    del victim.metadata_doc["measurements"]["nir08"]
    with pytest.raises(KeyError) as err:
        NDVISeasonal().input_data([victim], geobox)
    assert str(victim.id) in str(err.value) and "'nir08'" in str(err.value)


def test_product_without_the_configured_band_fails_with_the_key(
    tiny_archive, index_archive, module_env
):
    indexed = index_archive(tiny_archive("usgs_c2"), module_env)
    product = indexed.datasets()[0].product
    with pytest.raises(
        ValueError, match=r"plugin_config.nir_band: product 'ls_c2l2_sr' has no band 'nir'"
    ):
        NDVISeasonal(nir_band="nir").validate_product(product)
    with pytest.raises(ValueError, match=r"plugin_config.good_pixel_flags: unknown flag 'fmask'"):
        NDVISeasonal(
            mask_band="qa_pixel",
            good_pixel_flags={"fmask": "valid"},
            preset="dea_ard",
            red_band="red",
            nir_band="nir08",
        ).validate_product(product)


# -- pixel maths on tiny arrays -------------------------------------------------------------

C2 = BandEncoding(nodata=0, scale_factor=0.0000275, add_offset=-0.2)
RULE = compile_clear_rule(
    {"nodata": {"bits": 0, "values": {0: False, 1: True}}}, {"nodata": False}, band="qa"
)


@pytest.mark.parametrize(
    "red, nir, qa, expected",
    [
        (
            10000,
            20000,
            0,
            (20000 * 2.75e-5 - 10000 * 2.75e-5) / (20000 * 2.75e-5 + 10000 * 2.75e-5 - 0.4),
        ),
        (0, 20000, 0, np.nan),  # red nodata
        (10000, 0, 0, np.nan),  # nir nodata
        (10000, 20000, 1, np.nan),  # qa says nodata
        (
            20000,
            10000,
            0,
            (10000 * 2.75e-5 - 20000 * 2.75e-5) / (10000 * 2.75e-5 + 20000 * 2.75e-5 - 0.4),
        ),
    ],
)
def test_ndvi_is_on_reflectance_and_nodata_is_never_clear(red, nir, qa, expected):
    inputs = NDVIInputs(red=C2, nir=C2, clear=RULE)
    arr = lambda v: np.full((2, 2), v, dtype=np.uint16)  # noqa: E731
    got = ndvi_from_bands(arr(red), arr(nir), arr(qa), inputs)
    assert got.dtype == np.float32
    if np.isnan(expected):
        assert np.isnan(got).all()
    else:
        np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_zero_reflectance_sum_is_not_clear():
    zero_at_one = BandEncoding(nodata=None, scale_factor=1.0, add_offset=-1.0)
    inputs = NDVIInputs(red=zero_at_one, nir=zero_at_one, clear=RULE)
    ones = np.ones((3, 3), dtype=np.uint16)
    assert np.isnan(ndvi_from_bands(ones, ones, ones * 0, inputs)).all()
