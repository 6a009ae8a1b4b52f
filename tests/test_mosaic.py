"""``odc-ndvi mosaic``: a run's tiles stitched per season, read from the COG overviews.

The run: a small synthetic USGS C2 archive of 2 x 1 tiles of 512 px (the smallest tiles
odc-geo writes overviews for: factors 2..32), 6 solar days, through the shipped year config
with our runner. References are the COGs read with plain rasterio and pasted by their own
geotransforms: full resolution, or the overview level itself.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from odc_ndvi_plugin.mosaic import find_outputs, read_mosaic, write_mosaics
from tests.conftest import CFG_DIR
from tests.fixtures.archives import index_with_year_tasks

pytestmark = pytest.mark.integration

SEASONS = ("djf", "mam", "jja", "son")


@pytest.fixture(scope="module")
def run_outputs(tmp_path_factory, datacube_env_module):
    from odc_ndvi_plugin.ops.runconfig import load_run_config
    from odc_ndvi_plugin.ops.session import execute

    root = tmp_path_factory.mktemp("mosaic")
    spec = ArchiveSpec.tiny(tiles=(2, 1), tile_px=512, revisit_days=64, rows_per_path=1)
    archive = generate_archive(spec, root / "archive")
    db, _ = index_with_year_tasks(
        archive,
        datacube_env_module,
        root / "tasks.db",
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
    )
    out = root / "out"
    cfg, _ = load_run_config(
        yaml.safe_load((CFG_DIR / "run-usgs-c2-year.yaml").read_text()),
        filedb=str(db),
        output_location=f"file://{out}",
        threads=2,
    )
    summary = execute(cfg, max_in_flight=2)
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    return out


def _pasted(out, band: str, *, overview_level: int | None = None) -> np.ndarray:
    """Every tile's ``band`` (or its overview) pasted by its own geotransform."""
    tiles = []
    for path in sorted(out.rglob(f"*_{band}.tif")):
        kwargs = {} if overview_level is None else {"overview_level": overview_level}
        with rasterio.open(path, **kwargs) as src:
            tiles.append((src.transform, src.read(1), src.nodata))
    left = min(t.c for t, _, _ in tiles)
    top = max(t.f for t, _, _ in tiles)
    res = tiles[0][0].a
    height = max(round((top - t.f) / res) + a.shape[0] for t, a, _ in tiles)
    width = max(round((t.c - left) / res) + a.shape[1] for t, a, _ in tiles)
    canvas = np.full((height, width), tiles[0][2], dtype=tiles[0][1].dtype)
    for t, a, _ in tiles:
        r, c = round((top - t.f) / res), round((t.c - left) / res)
        canvas[r : r + a.shape[0], c : c + a.shape[1]] = a
    return canvas


@pytest.mark.parametrize("band", ["ndvi_mean_djf", "clear_count_jja"])
def test_full_resolution_mosaic_is_the_tiles_side_by_side(run_outputs, band):
    outputs = find_outputs(f"file://{run_outputs}")
    mosaic = read_mosaic(outputs, band, max_px=4096)
    assert (mosaic.decimation, mosaic.tiles, mosaic.data.shape) == (1, 2, (512, 1024))
    np.testing.assert_array_equal(mosaic.data, _pasted(run_outputs, band))
    assert np.isfinite(mosaic.data).mean() > 0.5  # tiles are not empty


@pytest.mark.parametrize("band", ["ndvi_mean_son", "clear_count_djf"])
def test_a_decimated_mosaic_is_read_from_the_overviews(run_outputs, band):
    mosaic = read_mosaic(find_outputs(str(run_outputs)), band, max_px=256)
    assert (mosaic.decimation, mosaic.data.shape) == (4, (128, 256))
    assert mosaic.transform.a == 4 * 30
    # overviews are [2, 4, 8, 16, 32]: level 1 is the 1:4 one
    np.testing.assert_array_equal(mosaic.data, _pasted(run_outputs, band, overview_level=1))


def test_cli_writes_one_png_per_season_and_skips_staging(run_outputs, tmp_path):
    from matplotlib.image import imread

    from odc_ndvi_plugin.cli import main

    # an unfinished attempt's files under .staging/ are not outputs
    item = next(run_outputs.rglob("*.stac-item.json"))
    staged = run_outputs / ".staging" / "attempt" / item.parent.name
    staged.mkdir(parents=True)
    shutil.copy(item, staged / item.name)
    assert len(find_outputs(str(run_outputs))) == 2

    result = CliRunner().invoke(
        main, ["mosaic", f"file://{run_outputs}", "--out", str(tmp_path), "--max-px", "300"]
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(tmp_path.glob("*.png"))
    assert [p.stem.rsplit("_", 1)[-1] for p in pngs] == sorted(SEASONS)
    for png in pngs:
        pixels = imread(png)[..., :3].reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 50  # a picture, not a blank canvas
    result = CliRunner().invoke(
        main, ["mosaic", str(run_outputs), "--out", str(tmp_path), "--band", "clear_count"]
    )
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*clear_count_*.png"))) == 4
    result = CliRunner().invoke(main, ["mosaic", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no finished task" in result.output


@pytest.mark.servers
def test_s3_outputs_make_the_same_mosaic(run_outputs, moto_env, s3_bucket, tmp_path):
    s3 = moto_env.client("s3")
    for path in run_outputs.rglob("*"):
        if path.is_file() and ".staging" not in path.parts:
            key = f"run/{path.relative_to(run_outputs)}"
            s3.upload_file(str(path), s3_bucket, key)
    remote = read_mosaic(find_outputs(f"s3://{s3_bucket}/run"), "ndvi_mean_djf", max_px=256)
    local = read_mosaic(find_outputs(str(run_outputs)), "ndvi_mean_djf", max_px=256)
    np.testing.assert_array_equal(remote.data, local.data)
    assert remote.transform == local.transform
    pngs = write_mosaics(f"s3://{s3_bucket}/run", tmp_path, max_px=256)
    assert len(pngs) == 4


def test_anomaly_mosaics_are_diverging_around_zero_and_years_are_counts():
    """The mosaic's colours by band name (no run needed: a Mosaic of known values)."""
    import matplotlib.pyplot as plt
    from affine import Affine

    from odc_ndvi_plugin.mosaic import Mosaic, TaskOutput, mosaic_figure, select_bands

    grid = Affine(30, 0, 0, 0, -30, 0)
    values = np.array([[-0.6, -0.1, 0.0, np.nan, 0.1, 0.6]], dtype=np.float32)
    for band, limit in (("ndvi_anomaly", 0.3), ("ndvi_std_anomaly", 3.0)):
        fig = mosaic_figure(Mosaic(values, grid, "EPSG:32655", None, 1, 1), title="t", band=band)
        try:
            (image,) = fig.axes[0].images
            assert (image.get_cmap().name, image.get_clim()) == ("BrBG", (-limit, limit))
            np.testing.assert_array_equal(np.ma.getdata(image.get_array()), values)
            assert image.get_cmap().get_bad()[3] == 0  # NaN transparent: the grey shows
            assert fig.axes[0].get_facecolor()[:3] == pytest.approx((0xD0 / 255,) * 3)
        finally:
            plt.close(fig)
    years = np.array([[0, 3, 12]], dtype=np.uint16)
    fig = mosaic_figure(
        Mosaic(years, grid, "EPSG:32655", 0, 1, 1), title="t", band="baseline_years"
    )
    try:
        (image,) = fig.axes[0].images
        assert image.get_cmap().name == "viridis" and image.get_clim() == (0, 12)
        assert np.ma.getmaskarray(image.get_array()).tolist() == [[True, False, False]]
        assert fig.axes[1].get_ylabel() == "baseline years"
    finally:
        plt.close(fig)

    def output(*bands):
        return TaskOutput(
            "u", "p", "1", "2023--P3M", "EPSG:32655", grid, (1, 1), dict.fromkeys(bands)
        )

    anomaly = [
        output("ndvi_mean", "clear_count", "ndvi_anomaly", "ndvi_std_anomaly", "baseline_years")
    ]
    assert select_bands(anomaly, "ndvi_std") == []  # not a season "anomaly" of ndvi_std
    assert select_bands(anomaly, "ndvi_std_anomaly") == ["ndvi_std_anomaly"]
    clim = [
        output(*(f"{b}_{s}" for s in SEASONS for b in ("ndvi_mean", "ndvi_std", "clear_years")))
    ]
    assert select_bands(clim, "ndvi_std") == [f"ndvi_std_{s}" for s in SEASONS]
