"""The synthetic Landsat archive: presets, determinism, encodings, files, EO3 documents, truth."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
from click.testing import CliRunner
from datacube.utils import masking

from odc_ndvi_plugin.dev import synthetic as sy
from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, Condition, LandCover

C = Condition
FLAVOURS = ("usgs_c2", "dea_ard")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, sy.Archive]:
    root = tmp_path_factory.mktemp("synthetic")
    return {f: sy.generate_archive(ArchiveSpec.tiny(flavour=f), root / f) for f in FLAVOURS}


@pytest.fixture(scope="session")
def scene_data(archives) -> dict[str, list[tuple[sy.Scene, sy.SceneTruth, dict[str, np.ndarray]]]]:
    """Per flavour: (scene, its truth on its own grid, the arrays read from its COGs)."""
    out = {}
    for flavour, archive in archives.items():
        rows = []
        for scene in archive.scenes:
            (st,) = archive.truth(scene.geobox, dates=[scene.solar_date]).scenes_for(scene)
            rows.append((scene, st, _scene_arrays(scene)))
        out[flavour] = rows
    return out


@pytest.fixture(scope="session")
def product_docs() -> dict[str, dict]:
    return {f: yaml.safe_load(sy.product_definition_path(f).read_text()) for f in FLAVOURS}


def _flags(doc: dict, name: str) -> dict:
    (m,) = [m for m in doc["measurements"] if m["name"] == name]
    return m["flags_definition"]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _scene_arrays(scene: sy.Scene) -> dict[str, np.ndarray]:
    return {m: _read(scene.directory / f) for m, f in scene.measurement_files}


def _make_mask(values: np.ndarray, flags: dict, **query) -> np.ndarray:
    da = xr.DataArray(values, dims=("y", "x"), attrs={"flags_definition": flags})
    return masking.make_mask(da, **query).values


# --- specification & presets -------------------------------------------------------------------


def test_tiny_preset_covers_every_season_across_the_year_boundary():
    spec = ArchiveSpec.tiny()
    assert len(spec.dates) == 12
    assert spec.dates[0] == dt.date(2019, 12, 5)
    months = [d.month for d in spec.dates]
    for season in ((12, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)):
        assert sum(m in season for m in months) == 3
    assert spec.width_px == 128 and spec.height_px == 64 and spec.tile_px == 64
    assert len(spec.tiles()) == 2
    assert spec.gridspec == "epsg:3577;30;64"


@pytest.mark.parametrize("preset", [ArchiveSpec.tiny, ArchiveSpec.demo])
def test_no_acquisition_on_the_first_of_a_month(preset):
    # UTC time is the evening before the solar day: on the 1st the UTC month would differ
    spec = preset()
    assert all(d.day != 1 for d in spec.dates)


def test_demo_preset_shape(tmp_path):
    spec = ArchiveSpec.demo()
    archive = sy.plan_archive(spec, tmp_path)
    assert len(spec.dates) == 23
    assert len(archive.scenes) == 46
    assert len(spec.tiles()) == 4
    assert spec.width_px == spec.height_px == 1024
    assert not any(tmp_path.iterdir())  # planning writes nothing


@pytest.mark.parametrize(
    ("tiles", "tile_px"), [((1, 1), 64), ((2, 1), 64), ((3, 2), 32), ((2, 2), 512), ((1, 3), 100)]
)
def test_region_is_aligned_to_odc_stats_tiles(tiles, tile_px):
    from odc.dscache.tools.tiling import parse_gridspec

    spec = ArchiveSpec.for_tiles(tiles=tiles, tile_px=tile_px)
    gs = parse_gridspec(spec.gridspec)
    got = spec.tiles()
    assert len(got) == tiles[0] * tiles[1]
    region = spec.region_geobox
    area = 0.0
    for idx, gbox in got.items():
        assert gbox == gs.tile_geobox(idx)
        assert gbox.extent.intersection(region.extent).area == pytest.approx(gbox.extent.area)
        area += gbox.extent.area
    assert area == pytest.approx(region.extent.area)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flavour": "sentinel"},
        {"x0": 1474561.0},
        {"y0": -15.0},
        {"width_px": 0},
        {"start": dt.date(2021, 1, 1), "end": dt.date(2020, 1, 1)},
        {"revisit_days": 0},
        {"n_paths": 0},
        {"rows_per_path": 0},
        {"cloudiness": 1.5},
        {"same_day_spread": -0.1},
        {"same_day_spread": 0.6},
        {"band_nodata_fraction": 1.0},
        {"extra_dates": ("2021-03-01",)},
    ],
)
def test_spec_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ArchiveSpec(**kwargs)


def test_spec_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        ArchiveSpec("usgs_c2")  # type: ignore[misc]
    spec = ArchiveSpec.tiny()
    with pytest.raises(AttributeError):
        spec.seed = 1  # type: ignore[misc]
    assert ArchiveSpec.from_dict(spec.to_dict()) == spec


#: ArchiveSpec's fields before the opt-in hard cases existed: a spec using none of them must
#: serialise to exactly these, or its digest -- part of every dataset id -- and spec file change
FIELDS_BEFORE_HARD_CASES = {
    "flavour", "crs", "resolution", "x0", "y0", "width_px", "height_px", "tile_px", "start",
    "end", "revisit_days", "n_paths", "rows_per_path", "first_path", "first_row", "seed",
    "cloudiness", "platform",
}  # fmt: skip
HARD = {
    "same_day_spread": 0.1,
    "band_nodata_fraction": 0.06,
    "extra_dates": ("2020-03-01",),
    "simultaneous_scenes": True,
}


@pytest.mark.parametrize("preset", [ArchiveSpec.tiny, ArchiveSpec.demo])
def test_hard_cases_are_opt_in_and_round_trip(preset):
    plain = preset()
    assert set(plain.to_dict()) == FIELDS_BEFORE_HARD_CASES
    hard = preset(**HARD)
    assert set(hard.to_dict()) == FIELDS_BEFORE_HARD_CASES | set(HARD)
    assert ArchiveSpec.from_dict(hard.to_dict()) == hard
    assert hard.digest != plain.digest
    assert hard.extra_dates == (dt.date(2020, 3, 1),)
    assert set(hard.dates) == set(plain.dates) | {dt.date(2020, 3, 1)}
    assert list(hard.dates) == sorted(hard.dates)


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 + 5])
def test_truth_is_deterministic_by_seed(tmp_path, seed):
    spec = ArchiveSpec.tiny(seed=seed)
    gbox = spec.region_geobox
    t1 = sy.plan_archive(spec, tmp_path).truth(gbox)
    t2 = sy.plan_archive(spec, tmp_path / "other").truth(gbox)
    assert [s.scene.name for s in t1.scenes] == [s.scene.name for s in t2.scenes]
    for a, b in zip(t1.scenes, t2.scenes, strict=True):
        np.testing.assert_array_equal(a.red, b.red)
        np.testing.assert_array_equal(a.condition, b.condition)
        assert a.scene.id == b.scene.id
        assert a.scene.footprint == b.scene.footprint


@pytest.mark.parametrize(("seed_a", "seed_b"), [(0, 1), (42, 43), (7, 700)])
def test_different_seeds_differ(tmp_path, seed_a, seed_b):
    gbox = ArchiveSpec.tiny().region_geobox
    ta = sy.plan_archive(ArchiveSpec.tiny(seed=seed_a), tmp_path).truth(gbox)
    tb = sy.plan_archive(ArchiveSpec.tiny(seed=seed_b), tmp_path).truth(gbox)
    assert not np.array_equal(ta.landcover, tb.landcover)
    assert {s.scene.id for s in ta.scenes}.isdisjoint({s.scene.id for s in tb.scenes})


def test_files_are_byte_identical_across_runs(archives, tmp_path):
    again = sy.generate_archive(archives["usgs_c2"].spec, tmp_path)

    def digests(root: Path) -> dict[Path, str]:
        return {
            p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*")
            if p.is_file()
        }

    assert digests(archives["usgs_c2"].root) == digests(again.root)


def test_generation_is_idempotent_and_reports_progress(archives):
    archive = archives["dea_ard"]
    mtimes = {p: p.stat().st_mtime_ns for p in archive.root.rglob("*") if p.is_file()}
    seen: list[tuple[int, int, str]] = []
    sy.generate_archive(archive.spec, archive.root, progress=lambda *a: seen.append(a))
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert len(seen) == len(archive.scenes)
    assert seen[-1][:2] == (len(archive.scenes), len(archive.scenes))
    assert all(msg.startswith("exists") for *_, msg in seen)


def test_refuses_to_mix_specs(archives):
    archive = archives["usgs_c2"]
    with pytest.raises(ValueError, match="different spec"):
        sy.generate_archive(ArchiveSpec.tiny(seed=1), archive.root)


def test_load_archive_round_trip(archives):
    for archive in archives.values():
        again = sy.load_archive(archive.root)
        assert again.spec == archive.spec
        assert again.dataset_paths == archive.dataset_paths
        assert again.product_definition.exists()


# --- encodings ---------------------------------------------------------------------------------

# Real USGS C2 L2 QA_PIXEL values for the conditions (land surface; water: +128 where set).
USGS_VALUES = {
    C.NODATA: 1,
    C.CLEAR_LAND: 21824,
    C.WATER: 21952,
    C.SNOW: 30048,
    C.CLOUD_HIGH: 22280,
    C.CLOUD_MEDIUM: 22080,
    C.CLOUD_DILATED_RING: 21762,
    C.SHADOW: 23888,
    C.CIRRUS: 54596,
}


@pytest.mark.parametrize("cond", list(C))
def test_qa_pixel_values_are_real_usgs_values(cond):
    assert sy.QA_PIXEL_BY_CONDITION[cond] == USGS_VALUES[cond]
    land = sy.encode_qa_pixel(np.array([cond]), np.array([False]))[0]
    water = sy.encode_qa_pixel(np.array([cond]), np.array([True]))[0]
    assert land == USGS_VALUES[cond]
    if cond in (C.NODATA, C.CLOUD_HIGH):
        assert water == USGS_VALUES[cond]
    else:
        assert water == USGS_VALUES[cond] | 128


_LOW = {
    "cloud_confidence": "low",
    "cloud_shadow_confidence": "low",
    "snow_ice_confidence": "low",
    "cirrus_confidence": "low",
}
_NOT = {
    "nodata": False,
    "dilated_cloud": "not_dilated",
    "cirrus": "not_high_confidence",
    "cloud": "not_high_confidence",
    "cloud_shadow": "not_high_confidence",
    "snow": "not_high_confidence",
}
EXPECTED_FLAGS: dict[Condition, dict] = {
    C.NODATA: {
        **_NOT,
        "nodata": True,
        "clear": False,
        "cloud_confidence": "none",
        "cloud_shadow_confidence": "none",
        "snow_ice_confidence": "none",
        "cirrus_confidence": "none",
    },
    C.CLEAR_LAND: {**_NOT, **_LOW, "clear": True},
    C.WATER: {**_NOT, **_LOW, "clear": True},
    C.SNOW: {
        **_NOT,
        **_LOW,
        "clear": True,
        "snow": "high_confidence",
        "snow_ice_confidence": "high",
    },
    C.CLOUD_HIGH: {
        **_NOT,
        **_LOW,
        "clear": False,
        "cloud": "high_confidence",
        "cloud_confidence": "high",
    },
    C.CLOUD_MEDIUM: {**_NOT, **_LOW, "clear": True, "cloud_confidence": "medium"},
    C.CLOUD_DILATED_RING: {**_NOT, **_LOW, "clear": False, "dilated_cloud": "dilated"},
    C.SHADOW: {
        **_NOT,
        **_LOW,
        "clear": True,
        "cloud_shadow": "high_confidence",
        "cloud_shadow_confidence": "high",
    },
    C.CIRRUS: {
        **_NOT,
        **_LOW,
        "clear": True,
        "cirrus": "high_confidence",
        "cirrus_confidence": "high",
    },
}


@pytest.mark.parametrize("water", [False, True], ids=["land", "water"])
@pytest.mark.parametrize("cond", list(C))
def test_qa_pixel_decodes_with_the_product_flags(product_docs, cond, water):
    flags = _flags(product_docs["usgs_c2"], "qa_pixel")
    surface_water = water or cond == C.WATER
    qa = sy.encode_qa_pixel(np.array([[cond]]), np.array([[surface_water]]))
    expected = dict(EXPECTED_FLAGS[cond])
    water_bit = surface_water and cond not in (C.NODATA, C.CLOUD_HIGH)
    expected["water"] = "water" if water_bit else "land_or_cloud"
    assert set(expected) == set(flags)
    for flag, value in expected.items():
        assert _make_mask(qa, flags, **{flag: value})[0, 0], (cond.name, flag, value)


FMASK_NAMES = {
    C.NODATA: "nodata",
    C.CLEAR_LAND: "valid",
    C.WATER: "water",
    C.SNOW: "snow",
    C.CLOUD_HIGH: "cloud",
    C.CLOUD_MEDIUM: "cloud",
    C.CLOUD_DILATED_RING: "cloud",
    C.SHADOW: "shadow",
    C.CIRRUS: "cloud",
}


@pytest.mark.parametrize("cond", list(C))
def test_fmask_decodes_with_the_product_flags(product_docs, cond):
    flags = _flags(product_docs["dea_ard"], "oa_fmask")
    fm = sy.encode_fmask(np.array([[cond]]))
    for name in ("nodata", "valid", "cloud", "shadow", "snow", "water"):
        assert _make_mask(fm, flags, fmask=name)[0, 0] == (name == FMASK_NAMES[cond])


@pytest.mark.parametrize(
    ("flavour", "rho"),
    [
        ("usgs_c2", 0.0),
        ("usgs_c2", 0.05),
        ("usgs_c2", 0.4321),
        ("usgs_c2", -0.1),
        ("usgs_c2", 1.5),
        ("dea_ard", 0.0),
        ("dea_ard", 0.05),
        ("dea_ard", 0.4321),
        ("dea_ard", -0.05),
        ("dea_ard", 1.2),
    ],
)
def test_reflectance_round_trip(flavour, rho):
    info = sy._FLAVOUR_INFO[flavour]
    dn = sy._encode_reflectance(info, np.array([rho]))
    assert dn.dtype == np.dtype(info.dtype)
    assert dn[0] != info.nodata
    back = sy.decode(flavour, dn)[0]
    assert abs(back - rho) <= info.scale / 2 + 1e-12
    assert back == dn[0].astype(np.float64) * info.scale + info.offset


@pytest.mark.parametrize(
    ("flavour", "dn", "expected"),
    [
        ("usgs_c2", 0, math.nan),
        ("usgs_c2", 1, 1 * 0.0000275 - 0.2),
        ("usgs_c2", 7273, 7273 * 0.0000275 - 0.2),
        ("usgs_c2", 65535, 65535 * 0.0000275 - 0.2),
        ("dea_ard", -999, math.nan),
        ("dea_ard", -998, -0.0998),
        ("dea_ard", 0, 0.0),
        ("dea_ard", 2500, 0.25),
    ],
)
def test_decode_matches_product_scaling(product_docs, flavour, dn, expected):
    info = sy._FLAVOUR_INFO[flavour]
    red = [m for m in product_docs[flavour]["measurements"] if m["name"] == info.red][0]
    assert (red["scale_factor"], red.get("add_offset", 0)) == (info.scale, info.offset)
    assert red["nodata"] == info.nodata and red["dtype"] == info.dtype
    got = sy.decode(flavour, np.array([dn], dtype=info.dtype))[0]
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


# --- written files against truth ---------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_scene_file_equals_truth(scene_data, flavour):
    info = sy._FLAVOUR_INFO[flavour]
    for scene, st, arr in scene_data[flavour]:
        np.testing.assert_array_equal(sy.decode(flavour, arr[info.red]), st.red)
        np.testing.assert_array_equal(sy.decode(flavour, arr[info.nir]), st.nir)
        if flavour == "usgs_c2":
            np.testing.assert_array_equal(
                arr[info.mask], sy.encode_qa_pixel(st.condition, st.water)
            )
        else:
            np.testing.assert_array_equal(arr[info.mask], sy.encode_fmask(st.condition))
        # footprint: nodata in every band exactly outside it, and it is not axis aligned
        nod = st.condition == C.NODATA
        assert nod.any() and (~nod).any()
        assert np.array_equal(nod, ~scene.footprint_mask)
        assert np.all(arr[info.red][nod] == info.nodata)
        assert np.all(arr[info.nir][nod] == info.nodata)
        assert np.all(arr[info.mask][nod] == info.mask_nodata)
        assert np.all(arr[info.red][~nod] != info.nodata)
        first_valid = np.argmax(~nod, axis=1)
        last_valid = nod.shape[1] - np.argmax(~nod[:, ::-1], axis=1)
        assert len(set(first_valid)) > 1 or len(set(last_valid)) > 1


@pytest.fixture(scope="session")
def hard_archives(tmp_path_factory) -> dict[str, sy.Archive]:
    """Per flavour, a short tiny archive (5 solar dates, one of them the 1st of March) with
    every hard case except simultaneous scenes."""
    root = tmp_path_factory.mktemp("synthetic-hard")
    opts = {k: v for k, v in HARD.items() if k != "simultaneous_scenes"}
    return {
        f: sy.generate_archive(ArchiveSpec.tiny(flavour=f, end="2020-03-31", **opts), root / f)
        for f in FLAVOURS
    }


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_band_nodata_under_unchanged_mask_values_is_in_files_and_truth(hard_archives, flavour):
    archive = hard_archives[flavour]
    info = sy._FLAVOUR_INFO[flavour]
    encode = (
        (lambda st: sy.encode_qa_pixel(st.condition, st.water))
        if flavour == "usgs_c2"
        else (lambda st: sy.encode_fmask(st.condition))
    )
    kinds = {"red only": 0, "nir only": 0, "both": 0}
    clear_land, inside = 0, 0
    for scene in archive.scenes:
        (st,) = archive.truth(scene.geobox, dates=[scene.solar_date]).scenes_for(scene)
        arr = _scene_arrays(scene)
        # the files hold exactly the truth: NaN reflectance where a band is nodata
        np.testing.assert_array_equal(sy.decode(flavour, arr[info.red]), st.red)
        np.testing.assert_array_equal(sy.decode(flavour, arr[info.nir]), st.nir)
        np.testing.assert_array_equal(arr[info.mask], encode(st))
        red_gone = st.valid & (arr[info.red] == info.nodata)
        nir_gone = st.valid & (arr[info.nir] == info.nodata)
        kinds["red only"] += int((red_gone & ~nir_gone).sum())
        kinds["nir only"] += int((nir_gone & ~red_gone).sum())
        kinds["both"] += int((red_gone & nir_gone).sum())
        clear_land += int(((red_gone | nir_gone) & (st.condition == C.CLEAR_LAND)).sum())
        inside += int(st.valid.sum())
    # a third of the fraction each, the mask value kept (clear land among them)
    for kind, n in kinds.items():
        assert n / inside == pytest.approx(0.02, abs=0.005), kind
    assert clear_land > 0.2 * sum(kinds.values())


def test_overlapping_scenes_of_a_day_disagree_with_their_calibrations(hard_archives):
    archive = hard_archives["usgs_c2"]
    region = archive.spec.region_geobox
    for day in archive.solar_dates:
        scenes = archive.truth(region, dates=[day]).scenes
        factors = [st.scene.calibration for st in scenes]
        assert len(set(factors)) == len(scenes) == 4  # every scene its own calibration
        # the first scene of a day (by time) is not always the greenest or always the browner
        for a, b in itertools.combinations(scenes, 2):
            both = a.valid & b.valid & np.isfinite(a.red + a.nir + b.red + b.nir)
            if not both.any():
                continue
            np.testing.assert_array_equal(a.condition[both], b.condition[both])  # same sky
            ratio_a = a.nir[both] / a.red[both]
            ratio_b = b.nir[both] / b.red[both]
            # NIR/red of one surface differs by the scenes' factor ratios (up to quantising)
            expected = (b.scene.calibration[1] / b.scene.calibration[0]) / (
                a.scene.calibration[1] / a.scene.calibration[0]
            )
            np.testing.assert_allclose(ratio_b / ratio_a, expected, rtol=0.01)
            assert abs(expected - 1) > 0.04
    firsts = [
        min(archive.truth(region, dates=[d]).scenes, key=lambda st: st.scene.datetime)
        for d in archive.solar_dates
    ]
    assert len({st.scene.calibration[1] > 1 for st in firsts}) == 2


def test_extra_dates_are_observed_the_utc_evening_before(hard_archives):
    archive = hard_archives["usgs_c2"]
    first_of_march = [s for s in archive.scenes if s.solar_date == dt.date(2020, 3, 1)]
    assert len(first_of_march) == 4
    for scene in archive.scenes:
        assert scene.datetime.date() == scene.solar_date - dt.timedelta(days=1)
    assert {s.datetime.month for s in first_of_march} == {2}


def test_simultaneous_scenes_share_their_centre_time(tmp_path):
    spec = ArchiveSpec.tiny(simultaneous_scenes=True)
    archive = sy.plan_archive(spec, tmp_path)
    for day in spec.dates:
        assert len({s.datetime for s in archive.scenes if s.solar_date == day}) == 1
    plain = sy.plan_archive(ArchiveSpec.tiny(), tmp_path)
    assert len({s.datetime for s in plain.scenes if s.solar_date == spec.dates[0]}) == 4


QA_PREDICATES = [
    ({"nodata": True}, lambda c, w: c == C.NODATA),
    ({"cloud": "high_confidence"}, lambda c, w: c == C.CLOUD_HIGH),
    ({"cloud_confidence": "high"}, lambda c, w: c == C.CLOUD_HIGH),
    ({"cloud_confidence": "medium"}, lambda c, w: c == C.CLOUD_MEDIUM),
    ({"dilated_cloud": "dilated"}, lambda c, w: c == C.CLOUD_DILATED_RING),
    ({"cloud_shadow": "high_confidence"}, lambda c, w: c == C.SHADOW),
    ({"snow": "high_confidence"}, lambda c, w: c == C.SNOW),
    ({"cirrus": "high_confidence"}, lambda c, w: c == C.CIRRUS),
    ({"water": "water"}, lambda c, w: w & ~np.isin(c, [C.NODATA, C.CLOUD_HIGH])),
    ({"clear": True}, lambda c, w: ~np.isin(c, [C.NODATA, C.CLOUD_HIGH, C.CLOUD_DILATED_RING])),
    (
        {"nodata": False, "cloud": "not_high_confidence", "cloud_shadow": "not_high_confidence"},
        lambda c, w: ~np.isin(c, [C.NODATA, C.CLOUD_HIGH, C.SHADOW]),
    ),
]


@pytest.mark.parametrize(("query", "predicate"), QA_PREDICATES, ids=lambda v: str(v))
def test_stored_qa_pixel_flags_match_conditions(scene_data, product_docs, query, predicate):
    flags = _flags(product_docs["usgs_c2"], "qa_pixel")
    hits = 0
    for _, st, arrays in scene_data["usgs_c2"]:
        qa = arrays["qa_pixel"]
        want = predicate(st.condition, st.water)
        np.testing.assert_array_equal(_make_mask(qa, flags, **query), want)
        hits += int(want.sum())
    assert hits > 0


@pytest.mark.parametrize("name", ["nodata", "valid", "cloud", "shadow", "snow", "water"])
def test_stored_fmask_matches_conditions(scene_data, product_docs, name):
    flags = _flags(product_docs["dea_ard"], "oa_fmask")
    want_codes = [c for c, n in FMASK_NAMES.items() if n == name]
    hits = 0
    for _, st, arrays in scene_data["dea_ard"]:
        fm = arrays["oa_fmask"]
        want = np.isin(st.condition, want_codes)
        np.testing.assert_array_equal(_make_mask(fm, flags, fmask=name), want)
        hits += int(want.sum())
    assert hits > 0


def test_overlapping_scenes_of_a_day_agree(archives):
    archive = archives["usgs_c2"]
    region = archive.spec.region_geobox
    pairs = differing = 0
    for day in archive.solar_dates:
        truth = archive.truth(region, dates=[day])
        assert len(truth.scenes) == 4
        arrays = {}
        for st in truth.scenes:
            r0, c0, h, w = st.scene.window
            full = {
                m: np.full(region.shape, -1, dtype=np.int64) for m in ("red", "nir08", "qa_pixel")
            }
            for m, a in _scene_arrays(st.scene).items():
                full[m][r0 : r0 + h, c0 : c0 + w] = a
            arrays[st.scene.name] = (full, st.valid)
        names = sorted(arrays)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                (fa, va), (fb, vb) = arrays[a], arrays[b]
                both = va & vb
                if not both.any():
                    continue
                pairs += 1
                differing += int(np.any(va != vb))
                for m in fa:
                    np.testing.assert_array_equal(fa[m][both], fb[m][both])
        # the scenes of a day cover the whole region
        day_truth = truth.days()[0]
        assert day_truth.valid.all()
    assert pairs >= 4 * len(archive.solar_dates)
    assert differing == pairs  # overlapping footprints never coincide


def test_all_conditions_and_classes_occur(archives):
    archive = archives["usgs_c2"]
    truth = archive.truth(archive.spec.region_geobox)
    seen = set()
    for st in truth.scenes:
        seen |= {int(v) for v in np.unique(st.condition)}
    assert seen == {int(c) for c in C}
    assert {int(v) for v in np.unique(truth.landcover)} == {int(c) for c in LandCover}


def test_every_tile_and_season_has_clear_observations(archives):
    archive = archives["usgs_c2"]
    seasons = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
    for gbox in archive.tiles().values():
        days = archive.truth(gbox).days()
        for months in seasons.values():
            clear = sum(
                (d.condition == C.CLEAR_LAND).sum() for d in days if d.solar_date.month in months
            )
            assert clear > 0.1 * gbox.shape[0] * gbox.shape[1]


def test_seasonal_ndvi_cycle_of_crops(tmp_path):
    # southern-hemisphere winter crops: green in spring (SON), senesced in summer (DJF)
    spec = ArchiveSpec.tiny(tiles=(1, 1), tile_px=256, cloudiness=0.0, revisit_days=16)
    archive = sy.plan_archive(spec, tmp_path)
    truth = archive.truth(spec.region_geobox)
    crop = truth.landcover == LandCover.CROP
    assert crop.mean() > 0.05
    means = {}
    for d in truth.days():
        with np.errstate(invalid="ignore"):
            ndvi = (d.nir - d.red) / (d.nir + d.red)
        means[d.solar_date] = float(np.nanmean(ndvi[crop & (d.condition == C.CLEAR_LAND)]))
    son = np.mean([v for k, v in means.items() if k.month in (9, 10)])
    djf = np.mean([v for k, v in means.items() if k.month in (12, 1, 2)])
    assert son > djf + 0.3
    assert all(-1 < v < 1 for v in means.values())


@pytest.mark.parametrize(
    "window",
    [(0, 0, 64, 64), (0, 64, 64, 64), (10, 37, 20, 50), (-8, -8, 40, 40), (44, 110, 30, 28)],
)
def test_truth_on_any_window_is_a_slice_of_the_region_truth(archives, window):
    archive = archives["usgs_c2"]
    region = archive.spec.region_geobox
    big = region.pad(10)
    full = archive.truth(big)
    r0, c0, h, w = window
    sub = archive.truth(big[r0 + 10 : r0 + 10 + h, c0 + 10 : c0 + 10 + w])
    fulls = {s.scene.name: s for s in full.scenes}
    sl = (slice(r0 + 10, r0 + 10 + h), slice(c0 + 10, c0 + 10 + w))
    assert sub.exact and full.exact
    for st in sub.scenes:
        ref = fulls[st.scene.name]
        np.testing.assert_array_equal(st.red, ref.red[sl])
        np.testing.assert_array_equal(st.nir, ref.nir[sl])
        np.testing.assert_array_equal(st.condition, ref.condition[sl])
    np.testing.assert_array_equal(sub.landcover, full.landcover[sl])
    # outside the region nothing is observed
    outside = full.landcover == 255
    assert outside.sum() == big.shape[0] * big.shape[1] - region.shape[0] * region.shape[1]
    for st in full.scenes:
        assert np.all(st.condition[outside] == C.NODATA)


# --- EO3 documents, COGs, datacube -------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_eo3_documents_validate(archives, product_docs, flavour):
    import eodatasets3.validate as ev

    archive = archives[flavour]
    ids = set()
    for i, scene in enumerate(archive.scenes):
        doc = yaml.safe_load(scene.dataset_yaml.read_text())
        assert doc["$schema"] == "https://schemas.opendatacube.org/dataset"
        assert doc["product"] == {"name": sy.PRODUCT_NAMES[flavour]}
        assert doc["lineage"] == {}
        assert doc["id"] == str(scene.id)
        ids.add(doc["id"])
        props = doc["properties"]
        assert (
            props["odc:region_code"]
            == f"{props['landsat:wrs_path']:03d}{props['landsat:wrs_row']:03d}"
        )
        assert props["eo:platform"] == "landsat-8" and props["eo:instrument"] == "OLI_TIRS"
        assert 0 <= props["eo:cloud_cover"] <= 100
        assert set(doc["measurements"]) == set(sy.MEASUREMENTS[flavour])
        for m in doc["measurements"].values():
            assert (scene.directory / m["path"]).exists()
        # the acquisition is around 23:50 UTC of the evening before the solar day
        when = dt.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
        lon = scene.footprint.centroid.to_crs("EPSG:4326").coords[0][0]
        assert (when + dt.timedelta(hours=lon / 15)).date() == scene.solar_date
        assert when.date() == scene.solar_date - dt.timedelta(days=1)
        if i % 4 == 0:  # the thorough check reads the files: sample it
            msgs = list(
                ev.validate_dataset(
                    doc,
                    product_definition=product_docs[flavour],
                    readable_location=scene.dataset_yaml,
                    thorough=True,
                )
            )
            assert msgs == [], [str(m) for m in msgs]
    assert len(ids) == len(archive.scenes)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_eo3_geometry_holds_the_valid_pixels(archives, flavour):
    from odc.geo.geom import point

    archive = archives[flavour]
    region = archive.spec.region_geobox.extent
    for scene in archive.scenes[:8]:
        doc = yaml.safe_load(scene.dataset_yaml.read_text())
        assert doc["crs"] == "epsg:3577"
        assert doc["grids"]["default"]["shape"] == list(scene.geobox.shape)
        geom = scene.footprint
        assert geom.geom_type == "Polygon" and geom.is_valid
        assert geom.difference(region).area < 1e-3
        mask = scene.footprint_mask
        aff = scene.geobox.affine
        rows, cols = np.nonzero(mask)
        for r, c in list(zip(rows, cols, strict=True))[:: max(1, len(rows) // 50)]:
            x, y = aff * (c + 0.5, r + 0.5)
            assert geom.contains(point(x, y, geom.crs))
        rows, cols = np.nonzero(~mask)
        for r, c in list(zip(rows, cols, strict=True))[:: max(1, len(rows) // 50)]:
            x, y = aff * (c + 0.5, r + 0.5)
            assert not geom.contains(point(x, y, geom.crs))


def test_product_definitions_load(product_docs):
    from datacube.index.abstract import default_metadata_type_docs
    from datacube.model import MetadataType, Product

    eo3 = {d["name"]: d for d in default_metadata_type_docs()}["eo3"]
    for flavour, doc in product_docs.items():
        Product.validate(doc)
        product = Product(MetadataType(eo3), doc)
        assert product.name == sy.PRODUCT_NAMES[flavour]
        red, nir, mask = sy.MEASUREMENTS[flavour]
        assert list(product.measurements) == [red, nir, mask]
        assert product.measurements[red]["scale_factor"] == sy._FLAVOUR_INFO[flavour].scale
        assert "flags_definition" in product.measurements[mask]
        # the usual short names resolve through aliases in both flavours
        assert [product.canonical_measurement(n) for n in ("red", "nir")] == [red, nir]


def test_cogs_are_valid_cloud_optimised_geotiffs(archives, tmp_path):
    from osgeo_utils.samples import validate_cloud_optimized_geotiff as vcog

    # one small scene per flavour from the tiny archives, plus a larger one with overviews
    larger = sy.generate_archive(
        ArchiveSpec.tiny(tiles=(1, 1), tile_px=512, end="2019-12-05"), tmp_path
    )
    scenes = [archives[f].scenes[0] for f in FLAVOURS] + [larger.scenes[0]]
    with_overviews = 0
    for scene in scenes:
        for _, name in scene.measurement_files:
            path = scene.directory / name
            errors, warns, _ = vcog.validate(str(path), full_check=True)
            assert errors == [] and warns == [], (path.name, errors, warns)
            with rasterio.open(path) as ds:
                assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate"
                assert ds.crs.to_epsg() == 3577
                if max(ds.shape) > 256:
                    assert ds.overviews(1), path.name
                    with_overviews += 1
    assert with_overviews == 3


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_datacube_solar_day_load_equals_truth(archives, product_docs, flavour):
    from datacube import Datacube
    from datacube.index.abstract import default_metadata_type_docs
    from datacube.index.eo3 import prep_eo3
    from datacube.model import Dataset, MetadataType, Product

    archive = archives[flavour]
    eo3 = {d["name"]: d for d in default_metadata_type_docs()}["eo3"]
    product = Product(MetadataType(eo3), product_docs[flavour])
    datasets = [
        Dataset(product, prep_eo3(yaml.safe_load(p.read_text())), uri=p.as_uri())
        for p in archive.dataset_paths
    ]
    red, nir, mask = sy.MEASUREMENTS[flavour]
    grouped = Datacube.group_datasets(datasets, "solar_day")
    for gbox in archive.tiles().values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = Datacube.load_data(grouped, gbox, product.lookup_measurements([red, nir, mask]))
        days = archive.truth(gbox).days()
        assert data.time.size == len(days)
        for i, day in enumerate(days):
            np.testing.assert_array_equal(sy.decode(flavour, data[red].values[i]), day.red)
            np.testing.assert_array_equal(sy.decode(flavour, data[nir].values[i]), day.nir)
            if flavour == "usgs_c2":
                want = sy.encode_qa_pixel(day.condition, day.water)
            else:
                want = sy.encode_fmask(day.condition)
            np.testing.assert_array_equal(data[mask].values[i], want)


def test_utm_scenes_with_approximate_truth(tmp_path):
    from datacube import Datacube
    from datacube.index.abstract import default_metadata_type_docs
    from datacube.index.eo3 import prep_eo3
    from datacube.model import Dataset, MetadataType, Product

    spec = ArchiveSpec.tiny(crs="EPSG:32755", end="2020-02-28")
    assert not spec.exact
    archive = sy.generate_archive(spec, tmp_path)
    assert all(s.geobox.crs.epsg == 32755 for s in archive.scenes)
    eo3 = {d["name"]: d for d in default_metadata_type_docs()}["eo3"]
    product = Product(MetadataType(eo3), yaml.safe_load(archive.product_definition.read_text()))
    datasets = [
        Dataset(product, prep_eo3(yaml.safe_load(p.read_text())), uri=p.as_uri())
        for p in archive.dataset_paths
    ]
    region = spec.region_geobox.extent
    for ds in datasets:
        assert ds.extent.to_crs("EPSG:3577").difference(region).area < 1.0
    grouped = Datacube.group_datasets(datasets, "solar_day")
    for gbox in archive.tiles().values():
        truth = archive.truth(gbox)
        assert not truth.exact
        data = Datacube.load_data(grouped, gbox, product.lookup_measurements(["red", "qa_pixel"]))
        for i, day in enumerate(truth.days()):
            assert day.valid.mean() > 0.97  # only a few edge pixels of the region are missed
            qa = sy.encode_qa_pixel(day.condition, day.water)
            assert (qa == data.qa_pixel.values[i]).mean() > 0.97


# --- command line ------------------------------------------------------------------------------


def test_synth_command(tmp_path):
    runner = CliRunner()
    out = tmp_path / "arch"
    args = ["--preset", "tiny", "--tiles", "1x1", "--end", "2020-01-31", "--seed", "3"]
    result = runner.invoke(sy.synth_command, [*args, "--out", str(out), "--flavour", "dea_ard"])
    assert result.exit_code == 0, result.output
    archive = sy.load_archive(out)
    assert archive.spec.seed == 3 and archive.spec.flavour == "dea_ard"
    assert len(archive.solar_dates) == 2 and len(archive.spec.tiles()) == 1
    assert all(p.exists() for p in archive.dataset_paths)
    assert "ga_ls_ard_3" in result.output


@pytest.mark.parametrize(
    "bad",
    [["--tiles", "2by2"], ["--flavour", "s2"], ["--preset", "huge"], ["--start", "2021-01-01"]],
)
def test_synth_command_rejects_bad_options(tmp_path, bad):
    result = CliRunner().invoke(
        sy.synth_command, ["--preset", "tiny", "--out", str(tmp_path), *bad]
    )
    assert result.exit_code == 2, result.output
