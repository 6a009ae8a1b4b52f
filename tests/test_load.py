"""load/ + ndvi.py on indexed synthetic archives: per-day NDVI stacks against the truth."""

from __future__ import annotations

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from scipy import ndimage

from odc_ndvi_plugin import NDVISeasonal
from odc_ndvi_plugin.load import InputReadError, group_by_solar_day
from odc_ndvi_plugin.masking import compile_clear_rule
from odc_ndvi_plugin.ndvi import BandEncoding, NDVIInputs, ndvi_from_bands
from tests.fixtures.archives import HARD_CASES
from tests.helpers.truth import (
    CLEAR_RULES,
    disagreeing_overlap_pixels,
    flag_clear_band_nodata_pixels,
    truth_days,
)

pytestmark = pytest.mark.integration


def _stack(plugin: NDVISeasonal, datasets, geobox: GeoBox):
    xx = plugin.input_data(datasets, geobox).compute()
    return xx.ndvi.values, xx.time.values.astype("datetime64[D]")


@pytest.fixture(scope="module")
def module_env(datacube_env_module):
    return datacube_env_module


@pytest.mark.parametrize("cases", ["plain", "hard"])
@pytest.mark.parametrize("flavour", ["usgs_c2", "dea_ard"])
@pytest.mark.parametrize("loader", ["direct", "odc-stats"])
def test_stack_equals_truth_per_solar_day(
    cases, flavour, loader, tiny_archive, index_archive, module_env, make_datacube_env
):
    """One NDVI plane per solar day, equal to the documented rules in plain numpy
    (tests/helpers/truth.py). ``hard``: overlapping scenes of a day disagree, red/NIR is nodata
    under clear mask values and some solar dates have their UTC date in the month before,
    so first-clear-wins, the band nodata check and the solar date decide the values."""
    if cases == "hard":
        # a database of its own: the product is the plain archive's, the scenes must not mix
        indexed = index_archive(tiny_archive(flavour, **HARD_CASES), make_datacube_env())
    else:
        indexed = index_archive(tiny_archive(flavour), module_env)
    archive, rule = indexed.archive, CLEAR_RULES[flavour]
    # plain: 32 px chunks, so blocks meet inside tiles; hard: whole tiles (the odc-stats
    # loader takes 4x as long on small chunks, and the rules do not depend on them)
    chunks = {"x": 32, "y": 32} if cases == "plain" else {"x": -1, "y": -1}
    plugin = NDVISeasonal(preset=flavour, loader=loader, chunks=chunks)
    for geobox in archive.tiles().values():
        got, days = _stack(plugin, indexed.datasets(geobox), geobox)
        expected = truth_days(archive, geobox, rule)
        assert list(days) == [d for d, _ in expected]
        np.testing.assert_allclose(
            got, np.stack([v for _, v in expected]), atol=2e-6, equal_nan=True
        )
        assert np.isfinite(got).mean() > 0.3  # not vacuous
        if cases == "hard":  # the rules are what decides here (else the comparison is moot)
            assert disagreeing_overlap_pixels(archive, geobox, rule) > 1000
            assert flag_clear_band_nodata_pixels(archive, geobox, rule) > 500
    if cases == "hard":
        assert any(s.datetime.month != s.solar_date.month for s in archive.scenes)


def test_scenes_with_one_centre_time_are_taken_in_dataset_id_order(
    tiny_archive, index_archive, make_datacube_env
):
    """All scenes of a day acquired at the same instant (and disagreeing where they
    overlap): only the dataset id orders them, for both loaders."""
    archive = tiny_archive("usgs_c2", simultaneous_scenes=True, same_day_spread=0.1)
    indexed = index_archive(archive, make_datacube_env())
    rule = CLEAR_RULES["usgs_c2"]
    by_day: dict = {}
    for scene in archive.scenes:
        by_day.setdefault(scene.solar_date, []).append(scene)
    assert all(len({s.datetime for s in day}) == 1 for day in by_day.values())
    # the id order is not the order the generator planned (and wrote) the scenes in
    assert any([s.id for s in day] != sorted(s.id for s in day) for day in by_day.values())
    geobox = next(iter(archive.tiles().values()))
    assert disagreeing_overlap_pixels(archive, geobox, rule) > 1000
    expected = np.stack([v for _, v in truth_days(archive, geobox, rule)])
    for loader in ("direct", "odc-stats"):
        plugin = NDVISeasonal(loader=loader, chunks={"x": -1, "y": -1})
        got, _ = _stack(plugin, indexed.datasets(geobox), geobox)
        np.testing.assert_allclose(got, expected, atol=2e-6, equal_nan=True, err_msg=loader)


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
        ValueError,
        match=r"plugin_config.nir_band: product 'ls_c2l2_sr' has no band or alias 'nir09'; "
        r"allowed: red \(SR_B4, band_4\), nir08 \(SR_B5, band_5, nir\)",
    ):
        NDVISeasonal(nir_band="nir09").validate_product(product)
    # an alias is a name of the band, as in dc.load
    assert NDVISeasonal(nir_band="nir").ndvi_inputs(product).bands[1] == "nir08"
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


# -- block-skipping window reads on a tiny tiled GeoTIFF (16 px blocks) -----------------------
@pytest.fixture(scope="module")
def tiled_tif(tmp_path_factory):
    import rasterio
    from affine import Affine

    path = tmp_path_factory.mktemp("tiled") / "band.tif"
    values = np.random.default_rng(3).integers(1, 60000, (50, 70), dtype=np.uint16)
    profile = dict(
        driver="GTiff", width=70, height=50, count=1, dtype="uint16", nodata=0, tiled=True,
        blockxsize=16, blockysize=16, compress="deflate", crs="EPSG:3577",
        transform=Affine(30, 0, 0, 0, -30, 0),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path, values


def _need(shape: tuple[int, int], pattern: str) -> np.ndarray:
    need = np.zeros(shape, dtype=bool)
    if pattern == "all":
        need[:] = True
    elif pattern == "one pixel":
        need[shape[0] // 2, shape[1] // 3] = True
    elif pattern == "corners":
        need[0, 0] = need[-1, -1] = True
    elif pattern == "stripe":
        need[:, 5:9] = True
    elif pattern == "checker":
        need[::7, ::11] = True
    return need


@pytest.mark.parametrize(
    "window",
    [(0, 0, 70, 50), (5, 3, 40, 30), (17, 16, 16, 16), (-6, -4, 30, 25), (60, 40, 25, 20),
     (100, 0, 10, 10)],
)  # fmt: skip
@pytest.mark.parametrize("pattern", ["none", "all", "one pixel", "corners", "stripe", "checker"])
def test_window_read_decodes_only_needed_blocks_and_fills_the_rest(tiled_tif, window, pattern):
    import rasterio
    from rasterio.windows import Window

    from odc_ndvi_plugin.load._rio import _read_window

    path, values = tiled_tif
    col, row, w, h = window
    win = Window(col, row, w, h)
    need = _need((h, w), pattern)
    # reference: numpy on the full raster, padded with the fill value outside the file
    padded = np.full((50 + 2 * 100, 70 + 2 * 100), 7, dtype=np.uint16)
    padded[100:150, 100:170] = values
    full = padded[100 + row : 100 + row + h, 100 + col : 100 + col + w]
    with rasterio.open(path) as src:
        got = _read_window(src, win, 7, need)
        whole = _read_window(src, win, 7)
    np.testing.assert_array_equal(whole, full)
    np.testing.assert_array_equal(got[need], full[need])  # every needed pixel is exact
    # pixels of blocks holding no needed pixel stay the fill value (those were not read)
    rows = np.arange(row, row + h)[:, None] // 16
    cols = np.arange(col, col + w)[None, :] // 16
    block_id = rows * 1000 + cols
    inside = (np.arange(row, row + h)[:, None] >= 0) & (np.arange(row, row + h)[:, None] < 50)
    inside = (
        inside & (np.arange(col, col + w)[None, :] >= 0) & (np.arange(col, col + w)[None, :] < 70)
    )
    needed_blocks = np.isin(block_id, block_id[need & inside])
    assert (got[~needed_blocks] == 7).all()
    np.testing.assert_array_equal(got[needed_blocks], full[needed_blocks])
