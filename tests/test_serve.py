"""Outputs served the way the ecosystem serves them, by the real services on loopback (no
mocks): datacube-ows (WMS GetCapabilities / GetMap, WCS GetCoverage), datacube-explorer
(product page, STAC API, metadata audit), and the map page in a real headless chromium.

The world (tests/fixtures/archives.py ``seasonal_world("postgis")``, shared with the
index-driver smoke): the tiny USGS archive in a datacube on the postgis driver, the real
``odc-stats save-tasks`` with the shipped seasonal config (4 periods), our runner; then
``dev.serve.serve`` (outputs indexed, ``datacube-ows-update``, ``cubedash-gen``, services).
Expected values come from the COGs and the style's ramp applied here in numpy, not from
the services.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from odc_ndvi_plugin.dev.index import select_binaries
from odc_ndvi_plugin.ows import RAMPS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PERIODS = ["2019-12-01", "2020-03-01", "2020-06-01", "2020-09-01"]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory, seasonal_world):
    if not select_binaries().postgis:
        pytest.skip("no PostGIS: run scripts/bootstrap (postgresql-15-postgis-3)")
    pytest.importorskip("datacube_ows")
    pytest.importorskip("cubedash")
    from odc_ndvi_plugin.dev.serve import serve
    from odc_ndvi_plugin.plugin import NDVISeasonal

    # datacube's postgis driver: the direction ODC is moving (the postgres driver is the
    # demo's, served by hand in the closing note)
    world = seasonal_world("postgis")
    mapping = world.run_config
    runs = [(NDVISeasonal(**mapping["plugin_config"]), mapping["product"])]
    workdir = tmp_path_factory.mktemp("serve")
    with serve(world.env, runs, world.out, workdir, progress=lambda line: None) as s:
        yield {"s": s, "out": world.out, "archive": world.archive,
               "product": mapping["product"]["name"]}  # fmt: skip
    # leaving serve() (as Ctrl-C does in odc-ndvi serve) stops all three servers
    for url in (f"{s.ows}/ping", f"{s.explorer}/products", s.map_page):
        with pytest.raises(urllib.error.URLError):
            _get(url)


def _get(url: str, **params) -> bytes:
    full = url + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(full, timeout=120) as resp:  # noqa: S310 - loopback
        return resp.read()


def _cog(served, tile, period: str, band: str) -> tuple[np.ndarray, object]:
    x, y = tile
    (path,) = served["out"].rglob(f"x{x:+04d}/y{y:+05d}/{period}--P3M/*_{band}.tif")
    with rasterio.open(path) as src:
        return src.read(1), src


def _ramp_rgba(values: np.ndarray, ramp: list[dict]) -> np.ndarray:
    """The style's ramp applied in numpy: linear per channel between the stops, ends
    clamped, 8 bit by truncation (value * 255); NaN transparent."""
    stops = [n["value"] for n in ramp]
    rgb = [[int(n["color"][i : i + 2], 16) / 255 for i in (1, 3, 5)] for n in ramp]
    out = np.zeros((*values.shape, 4), dtype=np.uint8)
    ok = np.isfinite(values)
    for c in range(3):
        out[..., c][ok] = (np.interp(values[ok], stops, [v[c] for v in rgb]) * 255).astype(np.uint8)
    out[..., 3][ok] = 255
    return out


def _png(data: bytes) -> np.ndarray:
    with MemoryFile(data) as mem, mem.open() as src:
        assert src.count == 4, src.count
        return np.moveaxis(src.read(), 0, -1)


def test_capabilities_list_the_layer_its_styles_and_periods(served):
    caps = _get(
        f"{served['s'].ows}/wms", service="WMS", request="GetCapabilities", version="1.3.0"
    ).decode()
    name = served["product"]
    assert f"<Name>{name}</Name>" in caps
    for style in ("ndvi_mean", "clear_count"):
        assert f"<Name>{style}</Name>" in caps
    (times,) = re.findall(r'<Dimension name="time"[^>]*>([^<]*)</Dimension>', caps)
    assert times.split(",") == PERIODS
    wcs = _get(
        f"{served['s'].ows}/wcs", service="WCS", request="GetCapabilities", version="2.0.1"
    ).decode()
    assert name in wcs


@pytest.mark.parametrize("band, period", [("ndvi_mean", "2020-03"), ("clear_count", "2019-12")])
def test_getmap_colours_are_the_ramp_of_the_cog_values(served, band, period):
    """GetMap on the tile's own grid (native CRS, one image pixel per COG pixel): every
    pixel is the style's ramp at the COG's value, nodata (NaN; 65535 for counts)
    transparent, 0 clear observations grey."""
    tile, geobox = next(iter(served["archive"].spec.tiles().items()))
    values, src = _cog(served, tile, period, band)
    x0, y0, x1, y1 = geobox.extent.boundingbox
    png = _get(
        f"{served['s'].ows}/wms", service="WMS", version="1.3.0", request="GetMap",
        layers=served["product"], styles=band, crs=str(geobox.crs), bbox=f"{x0},{y0},{x1},{y1}",
        width=geobox.width, height=geobox.height, format="image/png", transparent="true",
        time=f"{period}-01",
    )  # fmt: skip
    got = _png(png)
    floats = values.astype("float64")
    if band == "clear_count":
        floats[values == src.nodata] = np.nan
        assert (values == 0).any() and (values > 0).any()  # no observation, and some
        kind = "count"
    else:
        assert np.isnan(floats).any() and np.isfinite(floats).any()  # nodata, and data
        kind = "ndvi"
    want = _ramp_rgba(floats, RAMPS[kind])
    assert (got[..., 3] == want[..., 3]).all()
    diff = np.abs(got.astype(int) - want.astype(int))[np.isfinite(floats)]
    assert diff.max() <= 1, diff.max()


def test_wcs_getcoverage_returns_the_cog_values(served):
    tile, geobox = next(iter(served["archive"].spec.tiles().items()))
    x0, y0, x1, y1 = geobox.extent.boundingbox
    tif = _get(
        f"{served['s'].ows}/wcs", service="WCS", version="1.0.0", request="GetCoverage",
        coverage=served["product"], crs=str(geobox.crs), bbox=f"{x0},{y0},{x1},{y1}",
        width=geobox.width, height=geobox.height, format="GeoTIFF", time="2020-06-01",
        measurements="ndvi_mean,clear_count",
    )  # fmt: skip
    with MemoryFile(tif) as mem, mem.open() as got:
        assert got.crs == geobox.crs
        assert got.transform.almost_equals(geobox.transform)
        by_name = dict(zip(got.descriptions, range(1, got.count + 1), strict=True))
        for band in ("ndvi_mean", "clear_count"):
            want, _ = _cog(served, tile, "2020-06", band)
            np.testing.assert_array_equal(got.read(by_name[band]), want, err_msg=band)


def test_explorer_product_page_stac_search_and_no_metadata_problems(served):
    s, name = served["s"], served["product"]
    page = _get(f"{s.explorer}/products/{name}").decode()
    assert name in page
    paths = {}
    for path in served["out"].rglob("*.stac-item.json"):
        paths[json.loads(path.read_text())["id"]] = path
    by_id = {i: json.loads(p.read_text()) for i, p in paths.items()}
    found = json.loads(_get(f"{s.explorer}/stac/search", collections=name, limit=100))
    features = found["features"]
    assert sorted(f["id"] for f in features) == sorted(by_id)
    for feature in features:
        ours = by_id[feature["id"]]
        np.testing.assert_allclose(feature["bbox"], ours["bbox"], atol=1e-6)
        props, mine = feature["properties"], ours["properties"]
        assert props["datetime"] == mine["datetime"]
        assert props["start_datetime"][:19] == mine["dtr:start_datetime"][:19]
        assert props["end_datetime"][:19] == mine["dtr:end_datetime"][:19]
        stac_file = paths[feature["id"]]
        for band, asset in ours["assets"].items():
            href = feature["assets"][band]["href"]
            path = Path(urllib.parse.unquote(urllib.parse.urlparse(href).path))
            assert path == stac_file.parent / asset["href"], href
            assert path.is_file()
    audit = _get(f"{s.explorer}/audit/datasets-metadata").decode()
    row = re.search(rf"<tr[^>]*data-missing-footprint=\"(\d+)\"\s*data-missing-srid=\"(\d+)\" "
                    rf"data-missing-region=\"(\d+)\"[^>]*>\s*<td>[^\n]*{name}", audit)  # fmt: skip
    assert row is not None, "product not in Explorer's metadata audit"
    assert row.groups() == ("0", "0", "0"), "Explorer reports missing footprint/CRS/region"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium: run scripts/bootstrap")
def test_a_real_browser_shows_the_layer_on_the_map_page(served, tmp_path):
    """Debian's chromium (headless, fresh profile, no network beyond loopback) opens the
    map page: it says the GetMap image was drawn, and the screenshot shows the NDVI ramp's
    colours over the region, not a blank or an error."""
    s = served["s"]
    url = f"{s.map_page}#style=ndvi_mean"
    base = ["chromium", *CHROMIUM_FLAGS, "--virtual-time-budget=20000", "--window-size=1000,760"]
    dom = subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "- drawn" in dom.stdout, dom.stdout[-2000:] + dom.stderr[-2000:]
    shot = tmp_path / "map.png"
    subprocess.run(
        [*base, f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    with rasterio.open(shot) as src:
        rgb = np.moveaxis(src.read()[:3], 0, -1).reshape(-1, 3).astype(int)
    ramp = np.array([[int(n["color"][i : i + 2], 16) for i in (1, 3, 5)] for n in RAMPS["ndvi"]])
    # pixels within a few levels of the ramp's line segments: the map is drawn
    near = np.zeros(len(rgb), dtype=bool)
    for a, b in zip(ramp[:-1], ramp[1:], strict=True):
        t = np.clip(((rgb - a) @ (b - a)) / max(1, (b - a) @ (b - a)), 0, 1)
        near |= np.abs(rgb - (a + t[:, None] * (b - a))).max(axis=1) <= 3
    assert near.sum() > 20_000, near.sum()  # the page is 1000x760; the map ~768 wide
    assert len(np.unique(rgb[near], axis=0)) > 50  # many NDVI values, not one flat colour
