"""Real product definitions, real scenes, inputs on S3: the plugin as an adopter runs it.

Each test indexes REAL product definitions and REAL dataset documents / STAC items
(tests/data/real, unmodified) into the embedded PostgreSQL datacube, writes synthetic
pixels at exactly the documents' grids into an S3 bucket named as in production (moto on
loopback, behind :class:`tests.fixtures.s3gate.S3Gate`, which enforces the bucket's
policy: public, private or requester pays), runs the real ``odc-stats save-tasks`` and
``odc-ndvi run`` (child processes, credentials only as the mode under test provides
them), and compares every output pixel with numpy truth (tests/helpers/realworld.py:
``make_mask`` on the product's real flags_definition).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely.affinity
import shapely.geometry
import yaml
from odc.dscache.tools.tiling import parse_gridspec_with_name
from odc.geo.geom import Geometry

from odc_ndvi_plugin.dev.demo import save_tasks
from odc_ndvi_plugin.dev.index import add_products
from tests.fixtures.s3gate import BucketPolicy
from tests.helpers.lines import CLI
from tests.helpers.realworld import (
    DATA,
    FAMILIES,
    RealScene,
    dea_record,
    paint,
    product_bands,
    product_definition,
    read_docs,
    scene_ndvi,
    solar_days,
    usgs_item_to_deafrica,
    usgs_item_to_eo3,
)
from tests.helpers.truth import nan_stat

pytestmark = [pytest.mark.integration, pytest.mark.servers]

#: odc-stats tiles of 256 px (7.7 km) on the DEA Albers grid: a few hundred tasks per scene
GRID_AU = "epsg:3577;30;256"
#: the same on EASE-Grid 2.0 (EPSG:6933, DE Africa's grid), for scenes outside Australia
GRID_GLOBAL = "epsg:6933;30;256"
EXAMPLES = DATA.parents[2] / "cfg" / "examples"
SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}
DEA_GOOD = {"fmask": "valid"}
C2_GOOD = {
    "nodata": False,
    "cloud": "not_high_confidence",
    "cloud_shadow": "not_high_confidence",
    "water": "land_or_cloud",
}


# ------------------------------------------------------------------------------- helpers


def _bucket(moto, name: str, *, public: bool = False) -> None:
    """A bucket named as in production; ``public``: anyone may read objects (the bucket
    policy of dea-public-data), which moto enforces for unsigned requests."""
    s3 = moto.client("s3")
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    if public:
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject"],
            "Resource": f"arn:aws:s3:::{name}/*",
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))


def _put(moto):
    s3 = moto.client("s3")

    def put(uri: str, data: bytes) -> None:
        bucket, _, key = uri[len("s3://") :].partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=data)

    return put


def _index(env, scenes: Sequence[RealScene]) -> None:
    """Index the documents as they are, at their S3 locations (as s3-to-dc would)."""
    from datacube.index.hl import Doc2Dataset

    with env.index() as index:
        resolve = Doc2Dataset(index, skip_lineage=True)  # as DEA indexes ARD (no level 1)
        for scene in scenes:
            dataset, err = resolve(dict(scene.doc), scene.uri)
            assert dataset is not None, err
            index.datasets.add(dataset)


def _tile_in(footprints: Sequence[Geometry], grid: str):
    """(tile index, geobox) of the ``grid`` tile around a point well inside every footprint."""
    _, gs = parse_gridspec_with_name(grid)
    common = footprints[0].to_crs(gs.crs)
    for fp in footprints[1:]:
        common = common & fp.to_crs(gs.crs)
    point = common.buffer(-1.5 * gs.tile_size.x).centroid
    assert not point.is_empty, "the footprints do not overlap enough"
    x, y = point.coords[0]
    idx = gs.pt2idx(x, y)
    return (idx.x, idx.y), gs.tile_geobox(idx)


def _footprint(scene: RealScene) -> Geometry:
    return Geometry(scene.doc["geometry"], crs=scene.crs)


def _child_env(moto, gate, *, credentials: dict[str, str] | None, home: Path) -> dict[str, str]:
    """An environment with nothing AWS from this machine: the gate, a region, and only the
    credentials the mode under test provides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GDAL_", "CPL_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(gate.gdal_environ())
    env.update(
        {
            "AWS_DEFAULT_REGION": moto.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
            "HOME": str(home),
        }
    )
    env.update(credentials or {})
    return env


def _run_config(path: Path, plugin_config: dict[str, Any], *, example: str, **top: Any) -> Path:
    """The shipped example ``cfg/examples/<example>.yaml`` (a dea-config style single
    file), as a user would run it: only the plugin_config keys under test changed, and
    local threads."""
    doc = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    doc["plugin_config"] = {**doc["plugin_config"], **plugin_config}
    doc.update(threads=2, output_location="file:///unused", **top)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _save_tasks(env, tmp: Path, example: str, grid: str, window: str) -> Path:
    """The real odc-stats save-tasks on the example file (its input_products), on a grid of
    smaller tiles than production's so that a test's tile stays small."""
    return save_tasks(
        env.environ(),
        config=EXAMPLES / f"{example}.yaml",
        grid=grid,
        temporal_range=window,
        output=tmp / "tasks.db",
    )


def _odc_ndvi_run(env: dict[str, str], config: Path, db: Path, out: Path, task: str):
    cmd = [sys.executable, "-c", CLI, "run", "--config", str(config)]
    cmd += ["--location", f"file://{out}", "--threads", "2", str(db), task]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _assert_outputs_equal_truth(out: Path, tile, window: str, days) -> None:
    x, y = tile
    task_dir = out / f"x{x:+04d}" / f"y{y:+05d}" / window
    for season, months in SEASONS.items():
        sel = [v for d, v in days if d.astype(object).month in months]
        stack = np.stack(sel) if sel else np.full((0, *days[0][1].shape), np.nan)
        for stat, band in (("mean", f"ndvi_mean_{season}"), ("count", f"clear_count_{season}")):
            (cog,) = task_dir.glob(f"*_{band}.tif")
            with rasterio.open(cog) as src:
                got = src.read(1)
            expected = nan_stat(stack, stat)
            if stat == "count":
                np.testing.assert_array_equal(got, expected, err_msg=band)
            else:
                np.testing.assert_allclose(got, expected, atol=1e-5, equal_nan=True, err_msg=band)


def _truth(painted, tile, family, product_docs: dict[str, dict], mask_bands: dict[str, str], good):
    layers = []
    for p in painted:
        product = p.scene.doc["product"]["name"]
        flags = {m["name"]: m for m in product_docs[product]["measurements"]}[mask_bands[product]][
            "flags_definition"
        ]
        layers.append(
            (
                p.scene,
                scene_ndvi(p, tile, family=family, flags_definition=flags, good_pixel_flags=good),
            )
        )
    return solar_days(layers, tile)


# --------------------------------------------------------------------------------- DEA C3


def _world(
    env,
    moto,
    tmp: Path,
    scenes: Sequence[RealScene],
    *,
    definitions: Sequence[str],
    bands: dict[str, tuple[str, str, str]],
    example: str,
    family: str,
    good: dict[str, Any],
    grid: str,
    window: str,
    footprints: Sequence[RealScene] | None = None,
) -> dict[str, Any]:
    """Paint ``scenes`` at their locations, index them with the real definitions, save the
    tasks of ``window`` on ``grid``, and compute the truth of one tile inside every
    footprint (of ``footprints``, default all scenes)."""
    tile, geobox = _tile_in([_footprint(s) for s in footprints or scenes], grid)
    fam = FAMILIES[family]
    painted = [
        paint(s, geobox, family=fam, bands=bands[s.doc["product"]["name"]], put=_put(moto))
        for s in scenes
    ]
    add_products(env, [DATA / "products" / n for n in definitions])
    _index(env, scenes)
    products = sorted(bands)
    db = _save_tasks(env, tmp, example, grid, window)
    docs = {p: product_definition(p) for p in products}
    days = _truth(painted, geobox, fam, docs, {p: b[2] for p, b in bands.items()}, good)
    assert all(np.isfinite(v).any() for _, v in days), "a day without a clear pixel tests little"
    x, y = tile
    task = f"x{x}/y{y}/{window}"
    return {
        "tile": tile,
        "task": task,
        "db": db,
        "window": window,
        "days": days,
        "example": example,
    }


def _run_and_check(world, moto, gate, tmp: Path, plugin_config, *, credentials=None, **top):
    tmp.mkdir(parents=True, exist_ok=True)
    config = _run_config(tmp / "run.yaml", plugin_config, example=world["example"], **top)
    env = _child_env(moto, gate, credentials=credentials, home=tmp)
    out = tmp / "out"
    proc = _odc_ndvi_run(env, config, world["db"], out, world["task"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_outputs_equal_truth(out, world["tile"], world["window"], world["days"])
    for path in out.rglob("*"):  # the config's identity, never odc-stats' default (DEA's)
        assert not path.is_file() or b"ga.gov.au" not in path.read_bytes(), path
    return proc


# --------------------------------------------------------------------------------- DEA C3

DEA_BANDS = ("nbart_red", "nbart_nir", "oa_fmask")
DEA_DEFS = (
    "eo3_landsat_ard.odc-type.yaml",
    "ga_ls8c_ard_3.odc-product.yaml",
    "ga_ls9c_ard_3.odc-product.yaml",
)


@pytest.fixture(scope="module")
def dea_pair_world(datacube_env_module, moto_server, tmp_path_factory):
    """ga_ls8c_ard_3 091/079 (EPSG:32656) and 091/080 (EPSG:32655) on five dates (every pair
    on one solar day: 23:54 UTC is the next day at 150 E), at their real s3://dea-public-data
    locations (a public bucket); one au grid tile where both scenes overlap."""
    folder = DATA / "datasets" / "odc-stats_ga_ls8c_ard_3_2015-01--P3M"
    scenes = [RealScene(*dea_record(p.name)) for p in sorted(folder.iterdir())]
    assert {s.crs for s in scenes} == {"epsg:32655", "epsg:32656"}
    _bucket(moto_server, "dea-public-data", public=True)
    world = _world(
        datacube_env_module,
        moto_server,
        tmp_path_factory.mktemp("dea-pair"),
        scenes,
        definitions=DEA_DEFS[:2],
        bands={"ga_ls8c_ard_3": DEA_BANDS},
        example="dea-c3-ls8-ls9-year",
        family="dea",
        good=DEA_GOOD,
        grid=GRID_AU,
        window="2014-12--P12M",
    )
    assert len(world["days"]) == 5
    return world


@pytest.mark.parametrize("loader", ["direct", "odc-stats"])
def test_dea_c3_two_utm_zones_from_a_public_bucket_equal_truth(
    dea_pair_world, moto_server, s3_gate, tmp_path, loader
):
    """Public bucket, no credentials anywhere (aws_unsigned: true): every read is unsigned;
    the two zones are fused per solar day; ``mask_band: fmask`` is DEA's alias."""
    s3_gate.clear()
    config = {"preset": "dea_ard", "mask_band": "fmask", "loader": loader}
    _run_and_check(dea_pair_world, moto_server, s3_gate, tmp_path, config)
    reads = s3_gate.reads_of("ga_ls8c_")
    assert reads and all(r.signer is None for r in reads)  # unsigned, as asked
    rows = {r.key.split("/")[3] for r in reads}  # baseline/ga_ls8c_ard_3/091/<row>/...
    assert rows == {"079", "080"}


def test_transient_read_errors_are_retried_and_a_lasting_one_names_dataset_band_and_url(
    dea_pair_world, moto_server, s3_gate, tmp_path
):
    """The endpoint answers 503 twice and drops a connection twice: the reads are retried
    (GDAL's HTTP retries, ``read_retries``) and the outputs equal the truth. A file that
    keeps failing fails its task in one line naming dataset, band and URL."""
    s3_gate.clear()
    s3_gate.fail("091079_2015-01-09_final_band04.tif", 2, "503")
    s3_gate.fail("091080_2015-01-25_final_fmask.tif", 2, "drop")
    config = {"preset": "dea_ard"}
    _run_and_check(dea_pair_world, moto_server, s3_gate, tmp_path / "a", config)
    failed = [r for r in s3_gate.requests if r.status in (0, 503)]
    assert len(failed) == 4, failed
    s3_gate.clear()
    s3_gate.fail("091080_2015-03-14_final_band05.tif", 10_000, "503")
    (tmp_path / "b").mkdir()
    cfg = _run_config(
        tmp_path / "b" / "run.yaml", {"read_retries": 2}, example="dea-c3-ls8-ls9-year"
    )
    env = _child_env(moto_server, s3_gate, credentials=None, home=tmp_path)
    proc = _odc_ndvi_run(
        env, cfg, dea_pair_world["db"], tmp_path / "b" / "out", dea_pair_world["task"]
    )
    s3_gate.clear()
    assert proc.returncode == 1
    line = next(ln for ln in proc.stderr.splitlines() if ln.strip().startswith("failed "))
    assert "band nbart_nir" in line and "(ga_ls8c_ard_3)" in line, line
    assert "s3://dea-public-data/baseline/ga_ls8c_ard_3/091/080/2015/03/14/" in line, line
    assert not list((tmp_path / "b" / "out").rglob("*.tif"))


def test_landsat_8_and_9_in_one_task_through_plain_odc_stats_run(
    datacube_env_module, moto_server, s3_gate, tmp_path
):
    """ga_ls8c_ard_3 095/074 (2022-07-04) and ga_ls9c_ard_3 095/074 (2022-06-26), 8 days
    apart on the same path as the two satellites fly: `save-tasks --input-products
    ga_ls8c_ard_3-ga_ls9c_ard_3`, then odc-stats' own `run` (the design's entry point)."""
    ls8 = next(
        d
        for d in read_docs(DATA / "datasets" / "ga_ls8c_ard_3-sample.yaml")
        if d["properties"]["odc:region_code"] == "095074"
    )
    (ls9,) = read_docs(
        DATA / "datasets" / "ga_ls9c_ard_3-2-1_095074_2022-06-26_final.odc-metadata.yaml"
    )
    base = "s3://dea-public-data/baseline"
    scenes = [
        RealScene(ls8, f"{base}/ga_ls8c_ard_3/095/074/2022/07/04/{ls8['label']}.odc-metadata.yaml"),
        RealScene(ls9, f"{base}/ga_ls9c_ard_3/095/074/2022/06/26/{ls9['label']}.odc-metadata.yaml"),
    ]
    _bucket(moto_server, "dea-public-data", public=True)
    world = _world(
        datacube_env_module,
        moto_server,
        tmp_path,
        scenes,
        definitions=DEA_DEFS,
        bands={"ga_ls8c_ard_3": DEA_BANDS, "ga_ls9c_ard_3": DEA_BANDS},
        example="dea-c3-ls8-ls9-year",
        family="dea",
        good=DEA_GOOD,
        grid=GRID_AU,
        window="2021-12--P12M",
    )
    assert len(world["days"]) == 2
    config = _run_config(tmp_path / "run.yaml", {}, example="dea-c3-ls8-ls9-year")
    env = _child_env(moto_server, s3_gate, credentials=None, home=tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "odc.stats", "run", "--config", str(config), "--threads", "2"]
    cmd += ["--location", f"file://{out}", str(world["db"]), world["task"]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_outputs_equal_truth(out, world["tile"], world["window"], world["days"])


# ------------------------------------------------------------------------------- USGS C2

C2_DEFS = ("lsX_c2l2_sr.odc-product.yaml",)
ENV_KEY = ("AKIAENVREADER0000001", "env-secret-0f3b9c2d71")
PROFILE_KEY = ("AKIAPROFILEREADER001", "profile-secret-8a6e41c9d0")


def _stac(name: str) -> dict:
    return json.loads((DATA / "stac" / name).read_text())


def test_usgs_c2_from_the_stac_api_on_a_requester_pays_bucket(
    datacube_env_module, moto_server, s3_gate, tmp_path
):
    """A real USGS STAC API item (landsatlook, collection landsat-c2l2-sr) indexed as
    odc-apps-dc-tools does into the community ls8_c2l2_sr (no scaling declared), its files
    on s3://usgs-landsat, which is requester pays: credentials from the environment, the
    preset's C2 scaling, ``red_band: SR_B4`` (an alias). Without ``requester_pays`` the
    task fails naming dataset, band and URL, and no credential appears anywhere."""
    item = _stac("LC08_L2SP_028030_20200114_20200824_02_T1_SR.json")
    doc = usgs_item_to_eo3(item)
    scene = RealScene(doc, f"s3://usgs-landsat/collection02/level-2/{item['id']}_SR_stac.json")
    _bucket(moto_server, "usgs-landsat")
    world = _world(
        datacube_env_module,
        moto_server,
        tmp_path,
        [scene],
        definitions=C2_DEFS,
        bands={"ls8_c2l2_sr": ("red", "nir08", "qa_pixel")},
        example="usgs-c2-stac-year",
        family="c2",
        good=C2_GOOD,
        grid=GRID_GLOBAL,
        window="2019-12--P12M",
    )
    s3_gate.clear()
    s3_gate.policies["usgs-landsat"] = BucketPolicy(private=True, requester_pays=True)
    creds = {"AWS_ACCESS_KEY_ID": ENV_KEY[0], "AWS_SECRET_ACCESS_KEY": ENV_KEY[1]}
    # the example as shipped (preset usgs_c2, requester_pays: true), red named by an alias
    proc = _run_and_check(
        world, moto_server, s3_gate, tmp_path / "pays", {"red_band": "SR_B4"}, credentials=creds
    )
    reads = s3_gate.reads_of("LC08_L2SP_028030")
    assert reads and all(r.requester_pays and r.signer == ENV_KEY[0] for r in reads)
    # the same without requester_pays: refused by the bucket, one line naming it all
    (tmp_path / "no").mkdir()
    cfg = _run_config(
        tmp_path / "no" / "run.yaml", {"requester_pays": False}, example="usgs-c2-stac-year"
    )
    env = _child_env(moto_server, s3_gate, credentials=creds, home=tmp_path)
    failed = _odc_ndvi_run(env, cfg, world["db"], tmp_path / "no" / "out", world["task"])
    s3_gate.clear()
    assert failed.returncode == 1
    line = next(ln for ln in failed.stderr.splitlines() if ln.strip().startswith("failed "))
    assert f"dataset {doc['id']} (ls8_c2l2_sr) band qa_pixel" in line, line
    assert "s3://usgs-landsat/collection02/level-2/standard/oli-tirs/2020/028/030/" in line, line
    for text in (proc.stdout, proc.stderr, failed.stdout, failed.stderr):
        assert ENV_KEY[1] not in text
    for path in (tmp_path / "pays" / "out").rglob("*"):
        if path.is_file():
            assert ENV_KEY[1].encode() not in path.read_bytes()


# ---------------------------------------------------------------------------- DE Africa C2


@pytest.fixture(scope="module")
def deafrica_world(datacube_env_module, moto_server, tmp_path_factory):
    """DE Africa's ls8_sr (canonical SR_B4 / QA_PIXEL, no scaling declared) with the real
    USGS item LC08_L2SP_008059 (EPSG:32618, grid from its MTL) in a private bucket."""
    item = _stac("LC08_L2SP_008059_20191201_20200825_02_T1_SR_stac.json")
    mtl = _stac("LC08_L2SP_008059_20191201_20200825_02_T1_MTL.json")
    doc = usgs_item_to_deafrica(item, product="ls8_sr", bucket=PRIVATE_BUCKET, mtl=mtl)
    scene = RealScene(doc, f"s3://{PRIVATE_BUCKET}/collection02/{item['id']}.odc-metadata.yaml")
    _bucket(moto_server, PRIVATE_BUCKET)
    return _world(
        datacube_env_module,
        moto_server,
        tmp_path_factory.mktemp("deafrica"),
        [scene],
        definitions=("ls8_sr.odc-product.yaml",),
        bands={"ls8_sr": ("SR_B4", "SR_B5", "QA_PIXEL")},
        example="deafrica-c2-ls7-ls8-ls9-year",
        family="c2",
        good=C2_GOOD,
        grid=GRID_GLOBAL,
        window="2019-12--P12M",
    )


PRIVATE_BUCKET = "ndvi-private-landsat"


def _credentials(mode: str, moto, home: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """(environment, signer prefixes the bucket admits) for a credential mode."""
    if mode == "environment":
        return {"AWS_ACCESS_KEY_ID": ENV_KEY[0], "AWS_SECRET_ACCESS_KEY": ENV_KEY[1]}, (ENV_KEY[0],)
    (home / "aws").mkdir(exist_ok=True)
    (home / "aws" / "credentials").write_text(
        f"[reader]\naws_access_key_id = {PROFILE_KEY[0]}\naws_secret_access_key = {PROFILE_KEY[1]}\n"
    )
    (home / "aws" / "config").write_text(
        "[profile reader]\nregion = us-east-1\n"
        "[profile chained]\nrole_arn = arn:aws:iam::123456789012:role/ndvi-reader\n"
        "source_profile = reader\nregion = us-east-1\n"
    )
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
        "AWS_CONFIG_FILE": str(home / "aws" / "config"),
        # STS (for the role) is moto itself; S3 reads go through the gate
        "AWS_ENDPOINT_URL_STS": moto.endpoint,
    }
    if mode == "profile":
        return {**env, "AWS_PROFILE": "reader"}, (PROFILE_KEY[0],)
    return {**env, "AWS_PROFILE": "chained"}, ("ASIA",)  # temporary keys of the assumed role


@pytest.mark.parametrize("mode", ["environment", "profile", "role"])
def test_deafrica_c2_from_a_private_bucket_with_credentials(
    deafrica_world, moto_server, s3_gate, tmp_path, mode
):
    """A private bucket admits only the expected signer: keys from the environment, an AWS
    profile, or the temporary keys of a role assumed through a profile chain (STS)."""
    credentials, signers = _credentials(mode, moto_server, tmp_path)
    s3_gate.clear()
    s3_gate.policies[PRIVATE_BUCKET] = BucketPolicy(private=True, signer_prefixes=signers)
    config = {"preset": "deafrica_c2"}
    proc = _run_and_check(
        deafrica_world,
        moto_server,
        s3_gate,
        tmp_path / "run",
        config,
        aws_unsigned=False,
        credentials=credentials,
    )
    reads = s3_gate.reads_of("LC08_L2SP_008059")
    s3_gate.clear()
    assert reads and all(r.signer and r.signer.startswith(signers) for r in reads)
    assert all(r.session_token == (mode == "role") for r in reads)
    for secret in (ENV_KEY[1], PROFILE_KEY[1]):
        assert secret not in proc.stdout + proc.stderr


def test_deafrica_landsat_7_and_8_with_their_own_band_names_in_one_task(
    datacube_env_module, moto_server, s3_gate, tmp_path
):
    """ls7_sr (red = SR_B3) and ls8_sr (red = SR_B4) in one task, same solar day: the
    preset's aliases find each product's bands, and the scenes are fused like same-day
    paths (first clear wins in time order, across products).

    The Landsat 7 document is the real USGS item LE07_L2SP_044033 (EPSG:32610). No public
    Landsat 8 document of that place exists here: the Landsat 8 one is DERIVED from it
    (grid 100 px east, 23 minutes later, its own id and DE Africa's ls8_sr file names)."""
    item = _stac("LE07_L2SP_044033_20210329_20210424_02_T1_SR.json")
    ls7 = usgs_item_to_deafrica(item, product="ls7_sr")
    ls8 = usgs_item_to_deafrica(item, product="ls8_sr")
    ls8["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "derived-ls8/" + item["id"]))
    transform = ls8["grids"]["default"]["transform"]
    ls8["grids"]["default"]["transform"] = [
        transform[0],
        0.0,
        transform[2] + 3000.0,
        *transform[3:],
    ]
    ls8["geometry"] = shapely.geometry.mapping(
        shapely.affinity.translate(shapely.geometry.shape(ls8["geometry"]), 3000.0, 0.0)
    )
    ls8["properties"]["datetime"] = "2021-03-29T18:20:33.490812Z"
    ls8["properties"]["eo:platform"] = "landsat-8"
    prefix = ls7["measurements"]["QA_PIXEL"]["path"].removesuffix("_QA_PIXEL.TIF")
    ls8["measurements"] = {
        name: {"path": f"{prefix}_L8_{name}.TIF"} for name in product_bands("ls8_sr")
    }
    base = "s3://deafrica-landsat/collection02"
    scenes = [
        RealScene(ls7, f"{base}/{item['id']}.ls7.yaml"),
        RealScene(ls8, f"{base}/{item['id']}.ls8.yaml"),
    ]
    _bucket(moto_server, "deafrica-landsat", public=True)
    world = _world(
        datacube_env_module,
        moto_server,
        tmp_path,
        scenes,
        definitions=("ls7_sr.odc-product.yaml", "ls8_sr.odc-product.yaml"),
        bands={"ls7_sr": ("SR_B3", "SR_B4", "QA_PIXEL"), "ls8_sr": ("SR_B4", "SR_B5", "QA_PIXEL")},
        example="deafrica-c2-ls7-ls8-ls9-year",
        family="c2",
        good=C2_GOOD,
        grid=GRID_GLOBAL,
        window="2020-12--P12M",
    )
    assert len(world["days"]) == 1  # one solar day, two products
    s3_gate.clear()
    _run_and_check(world, moto_server, s3_gate, tmp_path / "run", {})
    keys = {r.key for r in s3_gate.reads_of("LE07_L2SP_044033")}
    s3_gate.clear()
    ls7_red = ls7["measurements"]["SR_B3"]["path"].split("/", 3)[3]
    assert ls7_red in keys, keys  # Landsat 7's red
    assert any(k.endswith("_L8_SR_B4.TIF") for k in keys)  # Landsat 8's red
