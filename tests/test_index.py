"""The datacube index room: embedded PostgreSQL, user-config detection, products, datasets,
and the env plumbing for ``odc-stats save-tasks`` subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from odc_ndvi_plugin import _redact
from odc_ndvi_plugin.dev import index as idx
from odc_ndvi_plugin.dev.index import (
    DatacubeEnv,
    IndexingError,
    add_products,
    embedded_postgres,
    find_user_datacube,
    index_datasets,
    init_index,
    open_index,
    redact_url,
)

PRODUCT = "ndvi_index_test"
X0, Y0 = 1_500_000.0, -3_900_000.0  # EPSG:3577 (Australian Albers), somewhere in NSW


# ----------------------------------------------------------------------------- helpers


def write_product(directory: Path, name: str = PRODUCT, *, nodata: int = -999) -> Path:
    doc = {
        "name": name,
        "description": "tiny eo3 product for index tests",
        "metadata_type": "eo3",
        "license": "CC-BY-4.0",
        "metadata": {"product": {"name": name}},
        "measurements": [
            {"name": "red", "dtype": "int16", "nodata": nodata, "units": "1"},
            {"name": "nir", "dtype": "int16", "nodata": nodata, "units": "1"},
        ],
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_dataset(directory: Path, i: int, *, product: str = PRODUCT, size: int = 64) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    ds_dir = directory / f"ds{i}"
    ds_dir.mkdir(parents=True, exist_ok=True)
    x0, y0 = X0 + i * 960.0, Y0
    transform = from_origin(x0, y0, 30, 30)
    for band, value in (("red", 500 + i), ("nir", 3000 + i)):
        with rasterio.open(
            ds_dir / f"{band}.tif", "w", driver="GTiff", width=size, height=size, count=1,
            dtype="int16", crs="EPSG:3577", transform=transform, nodata=-999,
        ) as dst:  # fmt: skip
            dst.write(np.full((1, size, size), value, dtype="int16"))
    doc = {
        "$schema": "https://schemas.opendatacube.org/dataset",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{product}/{i}")),
        "product": {"name": product},
        "crs": "epsg:3577",
        "grids": {"default": {"shape": [size, size], "transform": list(transform)[:6] + [0, 0, 1]}},
        "measurements": {"red": {"path": "red.tif"}, "nir": {"path": "nir.tif"}},
        "properties": {
            "datetime": (datetime(2020, 1, 1) + timedelta(days=i)).strftime("%Y-%m-%dT00:00:00Z"),
            "odc:processing_datetime": "2020-02-01T00:00:00Z",
            "odc:file_format": "GeoTIFF",
        },
        "lineage": {},
    }
    path = ds_dir / "odc-metadata.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _clear_datacube_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = {"DATACUBE_DB_URL", "DB_HOSTNAME", "DB_PORT", "DB_DATABASE", "DB_USERNAME"}
    for key in list(os.environ):
        if key.startswith(("ODC_", "DATACUBE_")) or key in legacy or key == "DB_PASSWORD":
            monkeypatch.delenv(key)


def _default_config_files() -> list[str]:
    return [p for p in idx._default_search_path() if Path(p).expanduser().is_file()]


# ----------------------------------------------------------------------------- unit


def test_redact_url() -> None:
    assert redact_url("postgresql://u:s3cr3t@db:5432/dc") == "postgresql://u:***@db:5432/dc"
    assert redact_url("postgresql+psycopg2://u:p@ss@h/dc") == "postgresql+psycopg2://u:***@h/dc"
    assert redact_url("postgresql://u@/dc?host=/tmp/x") == "postgresql://u@/dc?host=/tmp/x"
    assert (
        redact_url("postgresql://h/dc?user=u&password=pw")
        == "postgresql://h/dc?user=u&password=***"
    )
    env = DatacubeEnv(db_url="postgresql+psycopg2://u:hunter2@h/dc")
    assert "hunter2" not in repr(env) and "hunter2" not in env.display_url
    # one place for redaction rules: the index room uses the core's redact_url
    assert redact_url is _redact.redact_url
    for bad in ("mysql://u:hunter2@h/dc", "host=h password=hunter2"):
        with pytest.raises(ValueError, match="not a postgresql URL") as err:
            DatacubeEnv(db_url=bad)
        assert "hunter2" not in str(err.value)


def test_find_user_datacube_sources(tmp_path: Path) -> None:
    none: list[str] = []
    assert find_user_datacube({}, search_path=none) is None
    # a user name or password alone does not locate an index
    assert find_user_datacube({"DB_PASSWORD": "x", "DB_USERNAME": "u"}, search_path=none) is None

    env = find_user_datacube({"ODC_DEFAULT_DB_URL": "postgresql://h/dc"}, search_path=none)
    assert env is not None and env.is_user_config and env.name == "default"
    assert "ODC_DEFAULT_DB_URL" in env.source
    # the active environment decides which ODC_<ENV>_ variables count
    assert find_user_datacube({"ODC_PROD_DB_URL": "postgresql://h/dc"}, search_path=none) is None
    env = find_user_datacube(
        {"ODC_ENVIRONMENT": "prod", "ODC_PROD_DB_HOSTNAME": "h"}, search_path=none
    )
    assert env is not None and env.name == "prod"
    assert find_user_datacube({"DATACUBE_DB_URL": "postgresql://h/dc"}, search_path=none)
    assert find_user_datacube({"ODC_ALL_DB_DATABASE": "dc"}, search_path=none)

    cfg = tmp_path / "datacube.conf"
    cfg.write_text("datacube:\n  db_hostname: h\n")
    env = find_user_datacube({}, search_path=[tmp_path / "missing.conf", cfg])
    assert env is not None and env.config_path == cfg and env.name == "datacube"
    assert env.environ() == {"ODC_ENVIRONMENT": "datacube", "ODC_CONFIG_PATH": str(cfg)}
    env = find_user_datacube({"ODC_CONFIG_PATH": f"/nonexistent:{cfg}"}, search_path=none)
    assert env is not None and env.config_path == cfg
    with pytest.raises(idx.DatacubeConfigError, match="ODC_CONFIG_PATH"):
        find_user_datacube({"ODC_CONFIG_PATH": "/nonexistent.conf"}, search_path=none)
    env = find_user_datacube({"ODC_CONFIG": "default:\n  db_hostname: h\n"}, search_path=[cfg])
    assert env is not None and env.source == "$ODC_CONFIG" and env.config_path is None


def test_datacube_env_environ_overrides_inherited_config() -> None:
    url = "postgresql+psycopg2://postgres@/dc?host=/tmp/odcpg-x&port=5432"
    env = DatacubeEnv(db_url=url)
    extra = env.environ()
    assert extra["ODC_ENVIRONMENT"] == "default"
    assert extra["ODC_DEFAULT_DB_URL"] == url
    assert extra["ODC_DEFAULT_INDEX_DRIVER"] == "postgres"
    assert json.loads(extra["ODC_CONFIG"]) == {
        "default": {"index_driver": "postgres", "db_url": url}
    }
    inherited = {"PATH": "/bin", "DATACUBE_DB_URL": "postgresql://other/db", "ODC_ALL_DB_URL": "x",
                 "ODC_CONFIG_PATH": "/etc/x.conf", "ODC_DEFAULT_DB_IAM_AUTHENTICATION": "yes"}  # fmt: skip
    full = env.subprocess_env(inherited)
    assert full["PATH"] == "/bin"
    for gone in (
        "DATACUBE_DB_URL",
        "ODC_ALL_DB_URL",
        "ODC_CONFIG_PATH",
        "ODC_DEFAULT_DB_IAM_AUTHENTICATION",
    ):
        assert gone not in full
    with pytest.raises(ValueError):
        DatacubeEnv(name="Bad-Name", db_url=url)


# ----------------------------------------------------------------------------- embedded server


def test_embedded_server_is_up_socket_only(pg_server: idx.PgServer) -> None:
    sock = pg_server.socket_dir
    assert len(str(sock / ".s.PGSQL.5432")) <= 107
    assert (sock / ".s.PGSQL.5432").is_socket()
    assert oct(sock.stat().st_mode & 0o777) == "0o700"
    with pg_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone() == ("",)
        # durable=False is per start (-c), not written into the cluster's configuration
        cur.execute("SELECT setting, source FROM pg_settings WHERE name = 'fsync'")
        assert cur.fetchone() == ("off", "command line")
    assert (pg_server.data_dir / "PG_VERSION").exists()
    # the postmaster runs unprivileged (as embedded_postgres when we are root), and not in
    # the root group either (subprocess user= alone, as embedded-postgres does, keeps gid 0)
    owner = psutil.Process(pg_server.pid).username()
    assert owner != "root"
    assert 0 not in psutil.Process(pg_server.pid).gids()
    status = Path(f"/proc/{pg_server.pid}/status").read_text().splitlines()
    assert "0" not in next(line.split()[1:] for line in status if line.startswith("Groups:"))
    assert not [c for c in psutil.Process(pg_server.pid).net_connections("inet")]


def test_init_index_is_idempotent(pg_server: idx.PgServer, datacube_env: DatacubeEnv) -> None:
    # datacube_env is a copy of a database that init_index created (it returned True there)
    assert init_index(datacube_env) is False
    assert init_index(datacube_env) is False
    with datacube_env.index() as index:
        assert index.metadata_types.get_by_name("eo3") is not None
    # and a brand-new empty database gets initialised once
    name = f"raw_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    try:
        raw = pg_server.datacube_env(name)
        assert init_index(raw) is True
        assert init_index(raw) is False
    finally:
        pg_server.drop_database(name)


def test_products_and_datasets_indexed_idempotently(
    datacube_env: DatacubeEnv, tmp_path: Path
) -> None:
    product = write_product(tmp_path)
    report = add_products(datacube_env, [product])
    assert report.added == (PRODUCT,)
    assert add_products(datacube_env, [product]).unchanged == (PRODUCT,)

    docs = [write_dataset(tmp_path, i) for i in range(2)]
    seen: list[tuple[int, int]] = []
    first = index_datasets(datacube_env, docs, progress=lambda d, t: seen.append((d, t)))
    assert len(first.added) == 2 and first.skipped == ()
    assert seen[-1] == (2, 2)
    again = index_datasets(datacube_env, docs)
    assert again.added == () and sorted(again.skipped) == sorted(first.added)

    with datacube_env.datacube() as dc:
        found = dc.find_datasets(product=PRODUCT)
        assert sorted(str(d.id) for d in found) == sorted(first.added)
        data = dc.load(product=PRODUCT, measurements=["red", "nir"], output_crs="EPSG:3577",
                       resolution=(-30, 30), time=("2020-01-01", "2020-01-31"))  # fmt: skip
        assert data.sizes["time"] == 2
        assert int(data.nir.isel(time=0).max()) == 3000


def test_product_update_and_errors_name_the_file(datacube_env: DatacubeEnv, tmp_path: Path) -> None:
    add_products(datacube_env, [write_product(tmp_path)])
    changed = write_product(tmp_path, nodata=-1)  # nodata change: unsafe
    with pytest.raises(IndexingError, match=f"{changed}.*unsafe"):
        add_products(datacube_env, [changed])

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(IndexingError, match=str(bad)):
        add_products(datacube_env, [bad])

    orphan = write_dataset(tmp_path / "o", 0, product="no_such_product")
    good = write_dataset(tmp_path, 1)
    with pytest.raises(IndexingError, match=str(orphan)) as err:
        index_datasets(datacube_env, [good, orphan, tmp_path / "missing.yaml"])
    assert "missing.yaml: no such dataset file" in str(err.value)
    with datacube_env.index() as index:  # nothing was added
        assert index.datasets.count(product=PRODUCT) == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_odc_stats_save_tasks_subprocess_uses_env(
    datacube_env: DatacubeEnv, tmp_path: Path
) -> None:
    if shutil.which("odc-stats") is None:
        pytest.skip("odc-stats CLI not on PATH")
    add_products(datacube_env, [write_product(tmp_path)])
    index_datasets(datacube_env, [write_dataset(tmp_path, i) for i in range(2)])
    out = tmp_path / "tasks.db"
    # odc-stats 1.9.7 needs a time range: without one, odc.dscache's ordered_dss raises
    # "Need time range in the query" (exit 2)
    cmd = ["odc-stats", "save-tasks", "--grid", "epsg:3577;30;64", "--frequency", "all",
           "--temporal-range", "2020-01--P1M", "--input-products", PRODUCT, str(out)]  # fmt: skip
    t0 = time.monotonic()
    res = subprocess.run(
        cmd, env=datacube_env.subprocess_env(), cwd=tmp_path, capture_output=True, text=True,
        timeout=170, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert out.exists() and out.stat().st_size > 0
    assert "Total of 2 unique dataset IDs" in res.stdout, res.stdout
    print(f"odc-stats save-tasks subprocess: {elapsed:.1f}s")


# ----------------------------------------------------------------------------- user config


def test_open_index_uses_user_config_and_starts_nothing(
    datacube_env: DatacubeEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _default_config_files():
        pytest.skip(f"a datacube config file exists: {_default_config_files()}")
    _clear_datacube_environ(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert datacube_env.db_url is not None
    monkeypatch.setenv("ODC_DEFAULT_DB_URL", datacube_env.db_url)

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("open_index started an embedded server despite a user config")

    monkeypatch.setattr(idx._indexing, "embedded_postgres", no_server)
    with open_index(tmp_path / "work") as env:
        assert env.is_user_config and "ODC_DEFAULT_DB_URL" in env.source
        assert env.environ() == {"ODC_ENVIRONMENT": "default"}
        with env.datacube() as dc:
            assert dc.index.metadata_types.get_by_name("eo3") is not None
    assert not (tmp_path / "work").exists()

    # a config file named by ODC_CONFIG_PATH works the same way
    monkeypatch.delenv("ODC_DEFAULT_DB_URL")
    cfg = tmp_path / "user.conf"
    cfg.write_text(f"[default]\ndb_url: {datacube_env.db_url}\nindex_driver: postgres\n")
    monkeypatch.setenv("ODC_CONFIG_PATH", str(cfg))
    with open_index(tmp_path / "work", init=True) as env:
        assert env.config_path == cfg
        with env.datacube() as dc:
            assert dc.index.metadata_types.get_by_name("eo3") is not None


# ----------------------------------------------------------------------------- lifecycle


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running")


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_restart_reuse_stale_pid_interrupt_and_sharing(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    with embedded_postgres(data, db_name="keep", durable=False) as s1:
        assert s1.initialised and s1.started
        version_mtime = (data / "PG_VERSION").stat().st_mtime_ns
        # nested use of the same data dir shares the server; the last user stops it
        with embedded_postgres(data, db_name="keep", durable=False) as s2:
            assert not s2.started and s2.pid == s1.pid
        assert s1.running
        first_pid, first_sock = s1.pid, s1.socket_dir
    _wait_gone(first_pid)
    assert not first_sock.exists()

    # rerun: no initdb, data kept
    with embedded_postgres(data, db_name="keep", durable=False) as s:
        assert not s.initialised and s.database_exists("keep")
        os.kill(s.pid, signal.SIGKILL)  # the server dies under us: postmaster.pid goes stale
        _wait_gone(s.pid)
    assert (data / "postmaster.pid").exists()
    with embedded_postgres(data, db_name="keep", durable=False) as s:
        assert s.started and not s.initialised and s.database_exists("keep")
    assert (data / "PG_VERSION").stat().st_mtime_ns == version_mtime

    # a postmaster.pid naming a live process that is not our postgres (pid reuse)
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n0\n5432\n/tmp\n\n0 0\nready\n")
    with embedded_postgres(data, db_name="keep", durable=False) as s:
        assert s.started and s.pid != os.getpid()

    # KeyboardInterrupt inside the context still stops the server
    with (
        pytest.raises(KeyboardInterrupt),
        embedded_postgres(data, db_name="keep", durable=False) as s,
    ):
        pid, sock = s.pid, s.socket_dir
        raise KeyboardInterrupt
    _wait_gone(pid)
    assert not sock.exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_killed_run_leaves_server_that_next_run_adopts_and_stops(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from odc_ndvi_plugin.dev.index import embedded_postgres
        with embedded_postgres(Path({str(data)!r}), durable=False) as s:
            print(s.pid, flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pg_pid = int(proc.stdout.readline())
    finally:
        proc.kill()  # the run is killed: no cleanup happens
        proc.wait()
    assert psutil.Process(pg_pid).is_running()
    with embedded_postgres(data, durable=False) as s:
        assert s.pid == pg_pid and not s.started and s.database_exists("datacube")
    _wait_gone(pg_pid)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_open_index_embedded_when_nothing_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _default_config_files():
        pytest.skip(f"a datacube config file exists: {_default_config_files()}")
    _clear_datacube_environ(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with open_index(tmp_path / "work", durable=False, init=True) as env:
        assert not env.is_user_config
        assert (tmp_path / "work" / "pgdata" / "PG_VERSION").exists()
        assert env.environ()["ODC_DEFAULT_INDEX_DRIVER"] == "postgres"
        assert init_index(env) is False
