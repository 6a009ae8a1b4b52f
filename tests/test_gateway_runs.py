"""The runner on real servers: a dask-gateway cluster (2 workers), S3 and SQS on moto.

Everything runs in-process (``execute(...)`` with a client from ``open_gateway_cluster``);
one gateway cluster is shared by the module. The archive is a small synthetic USGS C2 one
(2 tiles -> 2 tasks), indexed in the embedded PostgreSQL, its task db made by the real
``odc-stats save-tasks``; SQS messages are published with odc-stats' own publish-tasks.
Leases are short (10 s, renewed 5 s before they run out) so that nothing waits long.

Every test ends with a scan of what it wrote and logged (S3 objects, STAC items, local
files, caplog, capsys, worker and scheduler logs) for the secret values: the moto
``AWS_SECRET_ACCESS_KEY`` and the gateway password.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import rasterio
import yaml
from distributed import get_task_stream
from odc.stats.tasks import render_sqs
from rasterio.io import MemoryFile

from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from odc_ndvi_plugin.ops.gateway import GatewayClusterConfig, open_gateway_cluster
from odc_ndvi_plugin.ops.runconfig import load_run_config
from odc_ndvi_plugin.ops.session import execute
from tests.conftest import CFG_DIR
from tests.fixtures.archives import index_with_year_tasks
from tests.helpers.lines import CLI, LineReader, child_env, wait_until

pytestmark = pytest.mark.servers

SQS_CONFIG = CFG_DIR / "run-usgs-c2-year-sqs.yaml"
TIMINGS: dict[str, float] = {}
#: deadline (s) of every wait on a condition (a process starting, a message moving, a task
#: finishing): generous, because CI machines are often heavily loaded; the waits end as soon
#: as their condition holds, so they cost nothing when it does. Orderings the tests need
#: ("B submits while A still computes") come from gates (files the slowed reductions wait
#: for, see SLOW_WORKERS), never from sleeps racing a process's start-up.
GENEROUS = 300.0


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def usgs(tmp_path_factory, datacube_env_module):
    """A small USGS C2 archive, indexed, with a 12-month (Dec..Nov) task db: 2 tiles ->
    2 tasks. Three paths (not tiny's two) so that the western path's scenes lie on the
    first tile only; one row per path and a 64-day revisit (6 dates, every season
    observed) keep it at 18 scenes, 12 per task."""
    from odc.stats.tasks import TaskReader

    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("gwruns")
    spec = ArchiveSpec.tiny(flavour="usgs_c2", n_paths=3, rows_per_path=1, revisit_days=64)
    archive = generate_archive(spec, root / "archive")
    db, window = index_with_year_tasks(
        archive,
        datacube_env_module,
        root / "tasks" / "year.db",
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
    )
    reader = TaskReader(str(db))
    try:  # (tile, datasets) of both tasks
        tiles = {tidx: reader.datasets(tidx) for tidx in reader.all_tiles}
    finally:
        reader.cache.close()  # lmdb: one open per file and process, the runs open it next
    assert len(tiles) == 2
    TIMINGS["archive+index+save-tasks"] = time.monotonic() - t0
    return {"root": root, "db": db, "tiles": list(tiles), "datasets": tiles}


def _run_cfg(usgs, output_location: str, **overrides):
    """The shipped SQS run config with a short lease (tests must not wait 300 s)."""
    mapping = yaml.safe_load(SQS_CONFIG.read_text())
    overrides.setdefault("job_queue_max_lease", 10)
    overrides.setdefault("renew_safety_margin", 5)
    overrides.setdefault("future_poll_interval", 1)
    cfg, _ = load_run_config(
        mapping, filedb=str(usgs["db"]), output_location=output_location, **overrides
    )
    return cfg


@pytest.fixture(scope="module")
def local_run(usgs):
    """The reference: the same task db on a local (in-process) cluster, to file://."""
    out = usgs["root"] / "local-out"
    t0 = time.monotonic()
    summary = execute(_run_cfg(usgs, f"file://{out}", threads=2), tasks=[])
    TIMINGS["local run"] = time.monotonic() - t0
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    return out


@pytest.fixture(scope="module")
def gw_client(gateway_server):
    """One 2-worker gateway cluster for the module (1 thread, 1 GiB each)."""
    cfg = GatewayClusterConfig(
        cluster_options={"worker_cores": 1, "worker_threads": 1, "worker_memory": 1.0},
        workers=2,
        wait_timeout=GENEROUS,
    )
    t0 = time.monotonic()
    with open_gateway_cluster(
        cfg,
        address=gateway_server.address,
        proxy_address=gateway_server.proxy_address,
        auth=gateway_server.auth,
    ) as (_cluster, client):
        # import the plugin on the workers once (seconds), not inside the first task;
        # a builtin: functions of this module do not unpickle on the workers
        assert set(client.run(exec, "import odc_ndvi_plugin.plugin").values()) == {None}
        TIMINGS["gateway cluster (2 workers) ready"] = time.monotonic() - t0
        yield client


@pytest.fixture(scope="module", autouse=True)
def _report_timings():
    yield
    if TIMINGS:
        print("\n" + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))


# ----------------------------------------------------------------------------- helpers


def _s3_keys(moto, bucket: str, prefix: str) -> list[str]:
    s3 = moto.client("s3")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def _read_cog(data: bytes | Path):
    if isinstance(data, Path):
        with rasterio.open(data) as src:
            return src.read(1), src.profile["dtype"], src.nodata, tuple(src.transform)
    with MemoryFile(data) as mem, mem.open() as src:
        return src.read(1), src.profile["dtype"], src.nodata, tuple(src.transform)


def _s3_rasters(moto, bucket: str, prefix: str) -> dict[str, tuple]:
    s3 = moto.client("s3")
    out = {}
    for key in _s3_keys(moto, bucket, prefix):
        if key.endswith(".tif"):
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            out[key[len(prefix) :].lstrip("/")] = _read_cog(body)
    return out


def _local_rasters(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): _read_cog(p) for p in sorted(root.rglob("*.tif"))}


def _assert_same_rasters(got: dict[str, tuple], expected: dict[str, tuple]) -> None:
    assert got.keys() == expected.keys()
    assert len(expected) == 2 * (8 + 1)  # 2 tasks x (4 seasons x mean/count + rgba)
    for name, (data, dtype, nodata, transform) in expected.items():
        g_data, g_dtype, g_nodata, g_transform = got[name]
        assert (g_dtype, g_transform) == (dtype, transform), name
        assert g_nodata == nodata or (np.isnan(g_nodata) and np.isnan(nodata)), name
        assert np.array_equal(g_data, data, equal_nan=data.dtype.kind == "f"), name


def _stac_items(moto, bucket: str, prefix: str) -> dict[str, dict]:
    s3 = moto.client("s3")
    return {
        key: json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        for key in _s3_keys(moto, bucket, prefix)
        if key.endswith(".stac-item.json")
    }


def _queue_counts(moto, url: str) -> tuple[int, int]:
    attrs = moto.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def _publish(usgs, queue_name: str) -> None:
    """odc-stats' own ``publish-tasks`` (in-process): every task of the db."""
    from odc.stats._cli_publish_tasks import publish_tasks

    publish_tasks(str(usgs["db"]), "", None, False, queue_name)


def _tile_dir(tidx) -> str:
    period, x, y = tidx
    return f"x{x:+04d}/y{y:+05d}/{period}"


def _assert_no_secrets(moto, gateway, *, texts=(), buckets=(), dirs=(), client=None) -> None:
    """No secret value (nor the base64 basic-auth header) in anything given."""
    secrets = [
        moto.secret_access_key,
        gateway.password,
        base64.b64encode(f"{gateway.username}:{gateway.password}".encode()).decode(),
    ]
    blobs: list[tuple[str, bytes]] = [(f"text #{i}", t.encode()) for i, t in enumerate(texts)]
    s3 = moto.client("s3")
    for bucket in buckets:
        for key in _s3_keys(moto, bucket, ""):
            blobs.append(
                (f"s3://{bucket}/{key}", s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            )
    for root in dirs:
        blobs += [(str(p), p.read_bytes()) for p in Path(root).rglob("*") if p.is_file()]
    if client is not None:
        logs = {"scheduler": client.get_scheduler_logs(n=10_000)}
        logs.update(client.get_worker_logs(n=10_000))
        blobs += [(f"log of {who}", repr(lines).encode()) for who, lines in logs.items()]
    assert len(blobs) > 0
    for where, blob in blobs:
        for secret in secrets:
            assert secret.encode() not in blob, f"a secret value is in {where}"


# ------------------------------------------------------------------------------- tests


def test_gateway_run_to_s3_is_pixel_identical_to_a_local_run(
    usgs, local_run, gw_client, moto_env, gateway_server, s3_bucket, caplog, capsys
):
    caplog.set_level(logging.INFO)
    cfg = _run_cfg(usgs, f"s3://{s3_bucket}/a")
    t0 = time.monotonic()
    with get_task_stream(client=gw_client) as stream:
        summary = execute(cfg, tasks=[], client=gw_client, max_in_flight=2, progress=print)
    TIMINGS["gateway run (2 tasks)"] = time.monotonic() - t0
    assert (summary.done, summary.failed, summary.skipped) == (2, 0, 0), summary.errors

    _assert_same_rasters(_s3_rasters(moto_env, s3_bucket, "a"), _local_rasters(local_run))
    items = _stac_items(moto_env, s3_bucket, "a")
    assert sorted(k.rsplit("/", 1)[0] for k in items) == sorted(
        f"a/{_tile_dir(t)}" for t in usgs["tiles"]
    )
    keys = set(_s3_keys(moto_env, s3_bucket, "a"))
    for key, item in items.items():  # every asset is a file beside the item
        folder = key.rsplit("/", 1)[0]
        hrefs = {a["href"] for a in item["assets"].values()}
        assert len(hrefs) == 8
        for href in hrefs:
            if "://" in href:
                assert href.startswith(f"s3://{s3_bucket}/{folder}/"), href
                href = href[len(f"s3://{s3_bucket}/{folder}/") :]
            assert f"{folder}/{href.removeprefix('./')}" in keys, href

    # the gateway's workers computed and encoded every COG (nothing in this process)
    assert "Started local dask" not in caplog.text
    encoded = [t for t in stream.data if "to_cog-" in str(t["key"])]
    assert len(encoded) == 2 * (8 + 1), sorted({str(t["key"])[:30] for t in stream.data})
    assert {t["worker"] for t in stream.data} <= set(gw_client.scheduler_info()["workers"])
    # a rerun skips both tasks: the STAC items on S3 say "done"
    again = execute(cfg, tasks=[], client=gw_client, max_in_flight=2)
    assert (again.done, again.skipped) == (0, 2)

    _assert_no_secrets(
        moto_env,
        gateway_server,
        texts=[caplog.text, *capsys.readouterr()],
        buckets=[s3_bucket],
        dirs=[local_run],
        client=gw_client,
    )


def test_sqs_queue_is_drained_by_a_gateway_run(
    usgs,
    local_run,
    gw_client,
    moto_env,
    gateway_server,
    s3_bucket,
    sqs_queue_factory,
    caplog,
    capsys,
):
    caplog.set_level(logging.INFO)
    queue = sqs_queue_factory(max_receive_count=2, visibility_timeout=30)
    _publish(usgs, queue.name)
    assert _queue_counts(moto_env, queue.url) == (2, 0)

    cfg = _run_cfg(usgs, f"s3://{s3_bucket}/b")
    t0 = time.monotonic()
    summary = execute(cfg, from_sqs=queue.url, client=gw_client, max_in_flight=2, progress=print)
    TIMINGS["gateway SQS run (2 tasks)"] = time.monotonic() - t0
    assert (summary.done, summary.failed, summary.skipped) == (2, 0, 0), summary.errors

    assert _queue_counts(moto_env, queue.url) == (0, 0)
    assert _queue_counts(moto_env, queue.dlq_url) == (0, 0)
    _assert_same_rasters(_s3_rasters(moto_env, s3_bucket, "b"), _local_rasters(local_run))
    assert len(_stac_items(moto_env, s3_bucket, "b")) == 2

    _assert_no_secrets(
        moto_env,
        gateway_server,
        texts=[caplog.text, *capsys.readouterr()],
        buckets=[s3_bucket],
        client=gw_client,
    )


@pytest.fixture
def corrupt_cog(usgs):
    """Truncate one COG (nir) of a scene that only the first task reads; restored after."""
    from odc_ndvi_plugin.load import measurement_uri

    first, second = (usgs["datasets"][t] for t in usgs["tiles"])
    only_first = sorted({ds.id for ds in first} - {ds.id for ds in second})
    assert only_first, "no scene is on the first tile only"
    ds = next(ds for ds in first if ds.id == only_first[0])
    path = Path(urlparse(measurement_uri(ds, "nir08")).path)
    original = path.read_bytes()
    os.truncate(path, len(original) // 2)
    try:
        yield ds, path
    finally:
        path.write_bytes(original)


def test_corrupt_input_fails_its_task_only_and_goes_to_the_dlq(
    usgs,
    corrupt_cog,
    gw_client,
    moto_env,
    gateway_server,
    s3_bucket,
    sqs_queue_factory,
    caplog,
    capsys,
):
    caplog.set_level(logging.INFO)
    ds, path = corrupt_cog
    bad, good = usgs["tiles"]
    queue = sqs_queue_factory(max_receive_count=2, visibility_timeout=30)
    _publish(usgs, queue.name)
    cfg = _run_cfg(usgs, f"s3://{s3_bucket}/c")

    t0 = time.monotonic()
    first = execute(cfg, from_sqs=queue.url, client=gw_client, max_in_flight=2, progress=print)
    TIMINGS["SQS run with a corrupt input"] = time.monotonic() - t0
    # the failing task is named with its dataset and file; the other one finished. The
    # failed message is released at once and received again (by this runner: it keeps
    # taking work while the queue is not drained); the second failure makes its receive
    # count 2 = maxReceiveCount, so the next receive moves it to the dead-letter queue
    assert (first.done, first.failed) == (1, 2), first.errors
    assert {location for location, _ in first.errors} == {_tile_dir(bad)}  # its folder
    for _, error in first.errors:
        assert str(ds.id) in error and str(path) in error, error
    assert str(path) in caplog.text
    keys = _s3_keys(moto_env, s3_bucket, "c/")
    assert not [k for k in keys if k.startswith(f"c/{_tile_dir(bad)}/")]  # nothing of it
    assert [k for k in keys if k.startswith(f"c/{_tile_dir(good)}/") and k.endswith(".json")]
    # the successful message is deleted, the failing one is in the dead-letter queue
    assert _queue_counts(moto_env, queue.url) == (0, 0)
    assert _queue_counts(moto_env, queue.dlq_url) == (1, 0)
    (msg,) = moto_env.client("sqs").receive_message(QueueUrl=queue.dlq_url)["Messages"]
    assert json.loads(msg["Body"]) == render_sqs(bad, str(usgs["db"]))
    # a rerun finds nothing to do
    rerun = execute(cfg, from_sqs=queue.url, client=gw_client, max_in_flight=2)
    assert (rerun.done, rerun.failed, rerun.skipped) == (0, 0, 0)
    assert not [
        k for k in _s3_keys(moto_env, s3_bucket, "c/") if k.startswith(f"c/{_tile_dir(bad)}/")
    ]

    _assert_no_secrets(
        moto_env,
        gateway_server,
        texts=[caplog.text, *capsys.readouterr()],
        buckets=[s3_bucket],
        client=gw_client,
    )


def test_cli_with_a_wrong_gateway_password_is_a_clear_error(
    usgs, gateway_server, moto_env, tmp_path, monkeypatch, caplog
):
    from click.testing import CliRunner

    from odc_ndvi_plugin.cli import main

    caplog.set_level(logging.DEBUG, logger="odc_ndvi_plugin")
    wrong = "wrong-" + gateway_server.password[::-1]
    monkeypatch.setenv("NDVI_TEST_GATEWAY_PASSWORD", wrong)
    gateway_yaml = gateway_server.write_cluster_config(
        tmp_path / "gateway.yaml", "NDVI_TEST_GATEWAY_PASSWORD", workers=1, wait_timeout=30
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(SQS_CONFIG),
            "--location",
            f"file://{out}",
            "--gateway-config",
            str(gateway_yaml),
            str(usgs["db"]),
        ],
    )
    TIMINGS["CLI wrong password"] = time.monotonic() - t0
    assert result.exit_code == 1, result.output
    assert (
        f"Error: gateway at {gateway_server.address} rejected the credentials for user "
        f"'{gateway_server.username}' (HTTP 401)"
    ) in result.output
    assert not list(out.rglob("*.json"))  # no task ran
    basic = base64.b64encode(f"{gateway_server.username}:{wrong}".encode()).decode()
    for text in (result.output, caplog.text):
        assert wrong not in text and basic not in text
    _assert_no_secrets(moto_env, gateway_server, texts=[result.output, caplog.text])


def test_the_secret_scan_finds_a_planted_secret(moto_server, gateway_server, s3_bucket, tmp_path):
    """The scan used above is not vacuous: each secret is found in each kind of place."""
    (tmp_path / "item.json").write_text(json.dumps({"leak": gateway_server.password}))
    moto_server.client("s3").put_object(
        Bucket=s3_bucket, Key="x/item.json", Body=moto_server.secret_access_key.encode()
    )
    for kw in (
        {"texts": [f"log line {moto_server.secret_access_key}"]},
        {"dirs": [tmp_path]},
        {"buckets": [s3_bucket]},
    ):
        with pytest.raises(AssertionError, match="a secret value is in"):
            _assert_no_secrets(moto_server, gateway_server, **kw)


# ------------------------------------------------------------------- faults on the gateway
#
# Tasks are slowed on the workers by patching ``odc_ndvi_plugin.reduce._kernels._finish_group`` (looked
# up at call time by both reductions, streaming and stacked, once per season and block, so no
# cached function object gets in the way) through
# ``client.run(exec, code, {})``: functions of this module do not unpickle on the workers.
# ``_ndvi_test_calls`` counts the calls (a worker with calls > 0 is inside a task). With a
# gate (a file path), every call from the ``gate_from``-th on first creates ``<gate>.reached``
# and waits until the test creates the gate file: a task is then held inside its reduction
# for exactly as long as the test needs, however slowly the machine runs (the wait gives up
# after GENEROUS seconds only so that a failed test cannot hold a worker for ever).

SLOW_WORKERS = """
import os
import time
import odc_ndvi_plugin.reduce._kernels as st
if not hasattr(st, "_ndvi_test_orig"):
    st._ndvi_test_orig = st._finish_group
    def _slow(*args, **kwargs):
        st._ndvi_test_calls += 1
        if st._ndvi_test_gate is not None and st._ndvi_test_calls >= st._ndvi_test_gate_from:
            open(st._ndvi_test_gate + ".reached", "a").close()
            give_up = time.monotonic() + st._ndvi_test_gate_deadline
            while not os.path.exists(st._ndvi_test_gate) and time.monotonic() < give_up:
                time.sleep(0.05)
        time.sleep(st._ndvi_test_delay)
        return st._ndvi_test_orig(*args, **kwargs)
    st._finish_group = _slow
st._ndvi_test_calls = 0
st._ndvi_test_delay = {delay!r}
st._ndvi_test_gate = {gate!r}
st._ndvi_test_gate_from = {gate_from!r}
st._ndvi_test_gate_deadline = {deadline!r}
"""


def _slow_code(delay: float, gate: Path | None = None, gate_from: int = 1) -> str:
    """SLOW_WORKERS for ``delay`` seconds per reduction call, the ``gate_from``-th call and
    later ones only once ``gate`` exists."""
    return SLOW_WORKERS.format(
        delay=delay,
        gate=None if gate is None else str(gate),
        gate_from=gate_from,
        deadline=GENEROUS,
    )


def _reached(gate: Path) -> Path:
    """The file a reduction creates when it arrives at ``gate`` (and waits there)."""
    return gate.with_name(gate.name + ".reached")


#: ``odc-ndvi`` in a child process (the console script may be missing in a plain checkout)
_CALLS = "__import__('odc_ndvi_plugin.reduce._kernels').reduce._kernels.__dict__.get('_ndvi_test_calls', 0)"


@pytest.fixture
def slow_workers(gw_client):
    """``slow(delay, gate=None)``: every seasonal reduction on the module's workers waits
    for ``gate`` (a file) to exist, then sleeps ``delay`` s; undone after the test."""

    def slow(delay: float, gate: Path | None = None) -> None:
        assert set(gw_client.run(exec, _slow_code(delay, gate), {}).values()) == {None}

    yield slow
    with contextlib.suppress(Exception):
        slow(0.0)


def _worker_calls(client) -> dict[str, int]:
    return client.run(eval, _CALLS)


def _cog_errors(data: bytes, tmp: Path) -> list[str]:
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    path = tmp / f"check-{uuid.uuid4().hex[:8]}.tif"
    path.write_bytes(data)
    try:
        _, errors, _ = validate(str(path), full_check=True)
    finally:
        path.unlink()
    # odc-geo writes overview IFDs before the main IFD; GDAL 3.6's validator flags that only
    return [e for e in errors if "offset of" not in e.lower()]


def _send_task(moto, queue, usgs, tidx) -> None:
    """One message, as odc-stats' publish-tasks writes it, for the task ``tidx``."""
    body = json.dumps(render_sqs(tidx, str(usgs["db"])))
    moto.client("sqs").send_message(QueueUrl=queue.url, MessageBody=body)


def _in_thread(fn, *args, **kwargs):
    """Run ``fn`` in a thread; returns (thread, box) with box["result"] / box["error"]."""
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _start_cli(
    code: str, *args: str, **env: str
) -> tuple[subprocess.Popen, LineReader, LineReader]:
    """``odc-ndvi run -v ARGS`` in a child running ``code`` (the CLI, or the CLI after a
    snippet that slows the workers); its stdout/stderr lines are read in threads."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "run", "-v", *args],
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, LineReader(proc.stdout), LineReader(proc.stderr)


def _start_sqs_runner(
    code: str, config: Path, location: str, queue_url: str, **lease: int
) -> tuple[subprocess.Popen, LineReader, LineReader]:
    """Another runner process: the shipped SQS run config with ``lease`` settings written
    to ``config``, draining ``queue_url`` into ``location`` on a 1-thread local dask."""
    config.write_text(yaml.safe_dump({**yaml.safe_load(SQS_CONFIG.read_text()), **lease}))
    return _start_cli(
        code,
        "--config",
        str(config),
        "--location",
        location,
        "--from-sqs",
        queue_url,
        "--threads",
        "1",
    )


def test_sqs_message_delivered_twice_is_computed_twice_into_the_same_whole_files(
    usgs,
    local_run,
    gw_client,
    slow_workers,
    moto_env,
    gateway_server,
    s3_bucket,
    sqs_queue_factory,
    tmp_path,
    caplog,
):
    """Runner A (gateway, held inside its reduction by a gate) holds a 2 s lease that it does
    not renew in time; SQS hands the message to runner B (another process, ``odc-ndvi run
    --from-sqs``, local dask), which computes the same task into the same keys while A is
    still at it. The gate opens once B has submitted, however long B took to start."""
    caplog.set_level(logging.INFO)
    tidx = usgs["tiles"][0]
    queue = sqs_queue_factory(max_receive_count=5, visibility_timeout=30)
    _send_task(moto_env, queue, usgs, tidx)
    gate_a = tmp_path / "gate-a"  # A's reductions wait until this exists
    slow_workers(0.0, gate=gate_a)
    t0 = time.monotonic()
    location = f"s3://{s3_bucket}/d"
    cfg_a = _run_cfg(
        usgs, location, job_queue_max_lease=2, renew_safety_margin=0, future_poll_interval=30
    )
    run_a, box_a = _in_thread(execute, cfg_a, from_sqs=queue.url, client=gw_client)
    proc_b = None
    try:
        # A received the message and its task waits at the gate on a worker ...
        assert wait_until(_reached(gate_a).exists, GENEROUS)
        # ... and its unrenewed 2 s lease lapsed: the message is visible again
        assert wait_until(lambda: _queue_counts(moto_env, queue.url) == (1, 0), GENEROUS)
        assert run_a.is_alive() and not _s3_keys(moto_env, s3_bucket, "d/")
        proc_b, out_b, err_b = _start_sqs_runner(
            CLI,
            tmp_path / "run-b.yaml",
            location,
            queue.url,
            job_queue_max_lease=30,
            renew_safety_margin=5,
            future_poll_interval=1,
        )
        assert err_b.wait_for("Submitting", GENEROUS), err_b.text()[-3000:]
        # B found no STAC item and submitted while A was still computing
        a_was_running = run_a.is_alive()
        gate_a.touch()
        proc_b.wait(timeout=GENEROUS)
    finally:
        gate_a.touch()  # never leave A's workers held
        if proc_b is not None and proc_b.poll() is None:
            proc_b.kill()
            proc_b.wait()
    assert proc_b.returncode == 0, err_b.text()[-3000:]
    assert a_was_running, "A finished before B started: B did not compute the task again"
    run_a.join(timeout=GENEROUS)
    assert not run_a.is_alive()
    TIMINGS["SQS message delivered twice"] = time.monotonic() - t0
    assert "error" not in box_a, box_a
    a = box_a["result"]
    # both computed it (B found no STAC item), neither failed
    assert (a.done, a.failed) == (1, 0), a
    assert "Tasks: done 1, skipped 0, failed 0" in out_b.text(), out_b.text()
    assert _queue_counts(moto_env, queue.url) == (0, 0)
    assert _queue_counts(moto_env, queue.dlq_url) == (0, 0)

    folder = f"d/{_tile_dir(tidx)}"
    keys = _s3_keys(moto_env, s3_bucket, "d/")
    assert all(k.startswith(folder + "/") for k in keys), keys
    expected = {k: v for k, v in _local_rasters(local_run).items() if k.startswith(_tile_dir(tidx))}
    got = _s3_rasters(moto_env, s3_bucket, "d")
    assert got.keys() == expected.keys() and len(got) == 9
    s3 = moto_env.client("s3")
    for name, (data, dtype, _nodata, transform) in expected.items():
        g_data, g_dtype, _, g_transform = got[name]
        assert (g_dtype, g_transform) == (dtype, transform), name
        assert np.array_equal(g_data, data, equal_nan=data.dtype.kind == "f"), name
        body = s3.get_object(Bucket=s3_bucket, Key=f"d/{name}")["Body"].read()
        assert not _cog_errors(body, tmp_path), name
    ((key, item),) = _stac_items(moto_env, s3_bucket, "d").items()
    for asset in item["assets"].values():
        assert f"{folder}/{Path(asset['href']).name}" in keys, asset["href"]
    _assert_no_secrets(
        moto_env,
        gateway_server,
        texts=[caplog.text, out_b.text(), err_b.text()],
        buckets=[s3_bucket],
    )


#: ``odc-ndvi`` whose runs slow the workers of the client they are given (SLOW_WORKERS)
SLOW_GATEWAY_CLI = """
import odc_ndvi_plugin.ops.session as session
_execute = session.execute
def execute(cfg, *, client=None, **kwargs):
    if client is not None:
        client.run(exec, {code!r}, {{}})
    return _execute(cfg, client=client, **kwargs)
session.execute = execute
from odc_ndvi_plugin.cli import main
main(prog_name="odc-ndvi")
"""


def _running_clusters(gateway_server) -> set[str]:
    with gateway_server.gateway() as gw:
        return {c.name for c in gw.list_clusters()}


def test_sigterm_to_a_gateway_cli_run_stops_it_and_shuts_its_cluster_down(
    usgs, local_run, gw_client, moto_env, gateway_server, s3_bucket, tmp_path
):
    """``odc-ndvi run --gateway-config`` (its own 1-worker cluster, one task at a time) gets
    SIGTERM after the first task, while the second one computes (held inside its reduction
    by a gate that never opens): it exits 130 within seconds, its cluster is gone, only the
    finished task's files are there; a rerun computes exactly the other task."""
    before = _running_clusters(gateway_server)  # the module's cluster
    gateway_yaml = gateway_server.write_cluster_config(
        tmp_path / "gateway.yaml",
        "NDVI_TEST_GATEWAY_PASSWORD",
        cluster_options={"worker_cores": 1, "worker_threads": 1, "worker_memory": 1.0},
        workers=1,
        wait_timeout=60,
    )
    location = f"s3://{s3_bucket}/e"
    # the first task's reductions (one block x four seasons) pass, the second task's wait
    gate = tmp_path / "gate-second-task"
    code = SLOW_GATEWAY_CLI.format(code=_slow_code(0.0, gate=gate, gate_from=5))
    t0 = time.monotonic()
    proc, out, err = _start_cli(
        code,
        "--config",
        str(SQS_CONFIG),
        "--location",
        location,
        "--gateway-config",
        str(gateway_yaml),
        "--max-in-flight",
        "1",
        str(usgs["db"]),
        NDVI_TEST_GATEWAY_PASSWORD=gateway_server.password,
    )
    try:
        assert err.wait_for(" done", GENEROUS), err.text()[-3000:]
        # the second task is submitted and computing, held at the gate on the cluster's worker
        assert wait_until(lambda: sum("Submitting" in line for line in err.lines) == 2, GENEROUS)
        assert wait_until(_reached(gate).exists, GENEROUS), err.text()[-3000:]
        during = _running_clusters(gateway_server)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=GENEROUS)
        stop_seconds = time.monotonic() - t_term
    finally:
        gate.touch()  # never leave the worker held (its cluster should be gone anyway)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    TIMINGS["gateway CLI until SIGTERM + stop"] = time.monotonic() - t0
    stderr = err.text()
    assert proc.returncode == 130, stderr[-3000:]
    assert stop_seconds < 20, stop_seconds
    assert "interrupted" in stderr
    assert len(during - before) == 1, (during, before)  # the run's own cluster
    # the run's cluster is shut down, the module's is left alone
    assert wait_until(lambda: _running_clusters(gateway_server) == before, GENEROUS), (
        _running_clusters(gateway_server),
        before,
    )

    # only the finished task is there, whole: its STAC item and all its assets
    items = _stac_items(moto_env, s3_bucket, "e")
    assert len(items) == 1, sorted(items)
    ((key, item),) = items.items()
    folder = key.rsplit("/", 1)[0]
    keys = _s3_keys(moto_env, s3_bucket, "e/")
    assert all(k.startswith(folder + "/") for k in keys), keys  # nothing of the other task
    for asset in item["assets"].values():
        assert f"{folder}/{Path(asset['href']).name}" in keys, asset["href"]

    rerun = execute(_run_cfg(usgs, location), tasks=[], client=gw_client, max_in_flight=2)
    assert (rerun.skipped, rerun.done, rerun.failed) == (1, 1, 0), rerun.errors
    _assert_same_rasters(_s3_rasters(moto_env, s3_bucket, "e"), _local_rasters(local_run))
    assert len(_stac_items(moto_env, s3_bucket, "e")) == 2
    _assert_no_secrets(moto_env, gateway_server, texts=[out.text(), stderr], buckets=[s3_bucket])


def test_a_failed_task_is_computed_afresh_by_a_rerun_with_the_same_client(
    usgs, gw_client, moto_env, s3_bucket
):
    """A run's futures are released when it ends, also those of failed tasks: the client
    kept the exception of a failed future, whose traceback held the runner's frame and the
    future itself, so its erred (deterministic) input keys stayed on the scheduler and a
    rerun with the same client -- an SQS worker's next receive, a driver after the input was
    fixed -- failed at once with the old error, reading nothing."""
    from odc_ndvi_plugin.load import measurement_uri

    first_tile, second_tile = (usgs["datasets"][t] for t in usgs["tiles"])
    only_first = sorted({ds.id for ds in first_tile} - {ds.id for ds in second_tile})
    ds = next(ds for ds in first_tile if ds.id == only_first[0])
    path = Path(urlparse(measurement_uri(ds, "nir08")).path)
    original = path.read_bytes()
    cfg = _run_cfg(usgs, f"s3://{s3_bucket}/g")
    try:
        os.truncate(path, len(original) // 2)
        first = execute(cfg, tasks=[], client=gw_client, max_in_flight=2)
    finally:
        path.write_bytes(original)  # repaired
    assert (first.done, first.failed) == (1, 1), first.errors
    assert not gw_client.futures  # nothing of the run is held
    again = execute(cfg, tasks=[], client=gw_client, max_in_flight=2)
    assert (again.skipped, again.done, again.failed) == (1, 1, 0), again.errors
    assert len(_stac_items(moto_env, s3_bucket, "g")) == 2


def test_a_runner_whose_redelivered_message_was_deleted_by_the_other_one_finishes(
    usgs,
    local_run,
    gw_client,
    slow_workers,
    moto_env,
    gateway_server,
    s3_bucket,
    sqs_queue_factory,
    tmp_path,
    caplog,
):
    """The other order: runner B (another process, held inside its reduction by a gate) lets
    its 2 s lease run out, the gateway runner A receives the message again and renews its own
    short lease every second; B (its gate opened once A's task is inside its reduction)
    finishes first and deletes the message while A is held at its own gate. A's next renewal
    is refused by SQS (the message is gone): A must go on, finish the task and end normally,
    not crash (nor remove the finished outputs)."""
    caplog.set_level(logging.INFO)
    tidx = usgs["tiles"][1]
    queue = sqs_queue_factory(max_receive_count=5, visibility_timeout=30)
    _send_task(moto_env, queue, usgs, tidx)
    gate_a, gate_b = tmp_path / "gate-a", tmp_path / "gate-b"
    slow_workers(0.0, gate=gate_a)
    location = f"s3://{s3_bucket}/h"
    t0 = time.monotonic()
    slow_b = f"exec({_slow_code(0.0, gate=gate_b)!r}, {{}})\n{CLI}"
    proc_b, out_b, err_b = _start_sqs_runner(
        slow_b,
        tmp_path / "run-b.yaml",
        location,
        queue.url,
        job_queue_max_lease=2,
        renew_safety_margin=0,
        future_poll_interval=30,
    )
    try:
        assert err_b.wait_for("Submitting", GENEROUS), err_b.text()[-3000:]
        assert wait_until(_reached(gate_b).exists, GENEROUS), err_b.text()[-3000:]
        assert wait_until(lambda: _queue_counts(moto_env, queue.url) == (1, 0), GENEROUS)
        cfg_a = _run_cfg(
            usgs, location, job_queue_max_lease=3, renew_safety_margin=2, future_poll_interval=1
        )
        run_a, box_a = _in_thread(execute, cfg_a, from_sqs=queue.url, client=gw_client)
        assert wait_until(_reached(gate_a).exists, GENEROUS)  # A holds the message, computing
        gate_b.touch()  # B may finish (and delete the message) now
        proc_b.wait(timeout=GENEROUS)
        b_first = run_a.is_alive()
        gate_a.touch()
    finally:
        gate_a.touch()
        gate_b.touch()
        if proc_b.poll() is None:
            proc_b.kill()
            proc_b.wait()
    run_a.join(timeout=GENEROUS)
    assert not run_a.is_alive()
    TIMINGS["SQS message deleted under a renewing runner"] = time.monotonic() - t0
    assert proc_b.returncode == 0, err_b.text()[-3000:]
    assert "Tasks: done 1, skipped 0, failed 0" in out_b.text(), out_b.text()
    assert "error" not in box_a, box_a
    assert b_first, "A finished before B: the renewal after the delete was not exercised"
    a = box_a["result"]
    assert (a.done, a.failed) == (1, 0), a
    assert "SQS extend_if_needed of a task's message failed (ReceiptHandleIsInvalid" in caplog.text
    # renewing stops at the first refusal (A polls every second: one warning, not one a poll)
    assert caplog.text.count("SQS extend_if_needed of a task's message failed") == 1
    assert caplog.text.count("its SQS lease is lost") == 1
    assert _queue_counts(moto_env, queue.url) == (0, 0)
    assert _queue_counts(moto_env, queue.dlq_url) == (0, 0)
    folder = f"h/{_tile_dir(tidx)}"
    expected = {k: v for k, v in _local_rasters(local_run).items() if k.startswith(_tile_dir(tidx))}
    got = _s3_rasters(moto_env, s3_bucket, "h")
    assert got.keys() == expected.keys() and len(got) == 9
    for name, (data, *_rest) in expected.items():
        assert np.array_equal(got[name][0], data, equal_nan=data.dtype.kind == "f"), name
    ((key, item),) = _stac_items(moto_env, s3_bucket, "h").items()
    keys = _s3_keys(moto_env, s3_bucket, "h/")
    for asset in item["assets"].values():
        assert f"{folder}/{Path(asset['href']).name}" in keys, asset["href"]


def test_a_worker_killed_mid_task_is_retried_by_dask_and_both_tasks_finish_whole(
    usgs, local_run, gw_client, slow_workers, moto_env, gateway_server, s3_bucket, caplog, tmp_path
):
    """Both tasks in flight on the 2 workers (every seasonal reduction held at a gate); one
    worker process is SIGKILLed while it is inside a task. The scheduler reschedules that
    worker's tasks (and recomputes what it held) on the other worker: once the gate opens,
    both tasks finish, pixel-identical to the local run, with nothing half-written. Last in
    this module: the module's cluster may be one worker short afterwards."""
    caplog.set_level(logging.INFO)
    gate = tmp_path / "gate"
    slow_workers(0.0, gate=gate)
    pids = gw_client.run(os.getpid)
    assert len(pids) == 2
    location = f"s3://{s3_bucket}/f"
    t0 = time.monotonic()
    run, box = _in_thread(
        execute, _run_cfg(usgs, location), tasks=[], client=gw_client, max_in_flight=2
    )
    busy: list[str] = []

    def inside_a_task() -> bool:
        busy[:] = [addr for addr, calls in _worker_calls(gw_client).items() if calls > 0]
        return bool(busy)

    try:
        assert wait_until(inside_a_task, GENEROUS, 0.2)
        victim = busy[0]
        os.kill(pids[victim], signal.SIGKILL)
        assert wait_until(lambda: victim not in gw_client.scheduler_info()["workers"], GENEROUS)
        # the kill came before any task finished (every reduction is held at the gate)
        assert not _stac_items(moto_env, s3_bucket, "f")
    finally:
        gate.touch()
    run.join(timeout=GENEROUS)
    assert not run.is_alive()
    TIMINGS["worker killed mid-task"] = time.monotonic() - t0
    assert "error" not in box, box
    summary = box["result"]
    assert (summary.done, summary.failed, summary.skipped) == (2, 0, 0), summary.errors
    _assert_same_rasters(_s3_rasters(moto_env, s3_bucket, "f"), _local_rasters(local_run))
    items = _stac_items(moto_env, s3_bucket, "f")
    assert len(items) == 2
    keys = set(_s3_keys(moto_env, s3_bucket, "f/"))
    for key, item in items.items():
        folder = key.rsplit("/", 1)[0]
        for asset in item["assets"].values():
            assert f"{folder}/{Path(asset['href']).name}" in keys, asset["href"]
    _assert_no_secrets(moto_env, gateway_server, texts=[caplog.text], buckets=[s3_bucket])
