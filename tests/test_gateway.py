"""The gateway cluster room against a real dask-gateway-server on 127.0.0.1.

Config parsing tests need no server; the others (marked ``servers``) share the
session's ``gateway_server`` (and the moto server its workers talk to).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
import traceback
from pathlib import Path

import pytest

from odc_ndvi_plugin.ops.gateway import (
    AdaptConfig,
    GatewayAuthError,
    GatewayClusterConfig,
    GatewayClusterFailed,
    GatewayWorkersTimeout,
    close_gateway,
    describe_options,
    open_gateway_cluster,
)

YAML = Path(__file__).resolve().parents[1] / "cfg" / "gateway-cluster.yaml"
GiB = 2**30
#: deadline (s) of every wait for something the gateway does (a cluster or its workers
#: starting, a cluster going away): generous, because CI machines are often heavily loaded;
#: the waits end as soon as their condition holds, so they cost nothing when it does
GENEROUS = 300.0


def _cfg(**kw) -> GatewayClusterConfig:
    kw.setdefault("wait_timeout", GENEROUS)
    return GatewayClusterConfig.from_mapping(kw, source="test")


def _active(server) -> dict[str, str]:
    with server.gateway() as gw:
        return {r.name: r.status.name for r in gw.list_clusters()}


def _cluster_processes(server, name: str) -> list:
    """Live scheduler/worker processes of cluster ``name`` under the gateway."""
    import psutil

    out = []
    for proc in psutil.Process(server.pid).children(recursive=True):
        try:
            if proc.environ().get("DASK_GATEWAY_CLUSTER_NAME") == name:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _assert_gone(server, name: str, *, processes: bool = False, timeout: float = GENEROUS) -> None:
    """The gateway no longer lists ``name`` as pending/running; with ``processes``,
    its scheduler and worker processes have exited too (takes a few seconds more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in _active(server) and not (processes and _cluster_processes(server, name)):
            return
        time.sleep(0.2)
    raise AssertionError(
        f"cluster {name} still there: {_active(server)}, {_cluster_processes(server, name)}"
    )


# ------------------------------------------------------------------ config (no server)


def test_yaml_loads_with_documented_defaults():
    cfg = GatewayClusterConfig.from_yaml(YAML)
    assert cfg.connect == "new" and cfg.workers == 2 and cfg.shutdown is True
    assert cfg.address is None  # found like dask_gateway.Gateway() finds it
    assert dict(cfg.cluster_options) == {
        "worker_cores": 1,
        "worker_threads": 1,
        "worker_memory": 1.0,
    }
    assert cfg.expected_workers == 2
    with pytest.raises(TypeError):
        cfg.cluster_options["worker_cores"] = 2  # frozen all the way down
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"wokers": 2}, "unknown key 'wokers' (did you mean 'workers'?); allowed keys: address"),
        ({"adapt": {"min": 1}}, "adapt: unknown key 'min' (did you mean 'minimum'?)"),
        ({"auth": {"password": "x"}}, "auth: unknown key 'password'"),
        ({"connect": "any"}, "connect: 'any' is not allowed; allowed: new, existing, first"),
        ({"connect": "exsting"}, "connect: 'exsting' is not allowed (did you mean 'existing'?)"),
        ({"connect": "existing"}, "connect: existing needs cluster_name"),
        ({"cluster_name": "abc"}, "cluster_name is only used with connect: existing"),
        ({"workers": 2, "adapt": {"minimum": 1}}, "either workers or adapt"),
        ({"workers": -1}, "workers: expected an integer >= 0, got -1"),
        ({"workers": True}, "workers: expected an integer >= 0, got True"),
        ({"workers": "2"}, "workers: expected an integer >= 0, got '2'"),
        ({"adapt": {"minimum": 3, "maximum": 2}}, "smaller than adapt.minimum"),
        ({"wait_timeout": 0}, "wait_timeout (seconds): expected a positive number, got 0"),
        ({"wait_timeout": "soon"}, "wait_timeout (seconds): expected a positive number"),
        ({"cluster_options": {"worker_cores": [1]}}, "'worker_cores' must be a string, number"),
        (
            {"cluster_options": ["worker_cores"]},
            "cluster_options: expected a mapping of option name to value",
        ),
        ({"shutdown_on_exit": "yes"}, "shutdown_on_exit: expected true or false, got 'yes'"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ValueError, match="^my.yaml: ") as info:
        GatewayClusterConfig.from_mapping(data, source="my.yaml")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kw", "target", "expected", "shutdown"),
    [
        ({}, 1, 1, True),
        ({"workers": 3}, 3, 3, True),
        ({"workers": 0}, 0, 0, True),
        ({"adapt": AdaptConfig(minimum=2, maximum=4)}, None, 2, True),
        ({"adapt": AdaptConfig()}, None, 0, True),
        ({"workers": 3, "wait_for_workers": 1}, 3, 1, True),
        ({"connect": "existing", "cluster_name": "c1"}, None, 1, False),
        ({"connect": "first", "workers": 2}, 2, 2, False),
        ({"connect": "first", "shutdown_on_exit": True}, None, 1, True),
        ({"shutdown_on_exit": False}, 1, 1, False),
    ],
)
def test_derived_scaling_and_shutdown(kw, target, expected, shutdown):
    cfg = GatewayClusterConfig(**kw)
    assert (cfg.target_workers, cfg.expected_workers, cfg.shutdown) == (
        target,
        expected,
        shutdown,
    )


def test_describe_options_redacts_plain_mapping():
    text = describe_options(
        {"worker_cores": 2, "aws_secret_access_key": "hunter2-secret", "image": "local"}
    )
    assert "hunter2-secret" not in text
    assert "aws_secret_access_key : '***'" in text
    assert "worker_cores          : 2" in text


def test_missing_address_is_explained(monkeypatch):
    import dask.config
    import dask_gateway  # noqa: F401  (load gateway.* defaults before dask.config.set)

    monkeypatch.delenv("DASK_GATEWAY__ADDRESS", raising=False)
    with dask.config.set({"gateway.address": None}):
        with pytest.raises(ValueError, match="no dask-gateway address.*DASK_GATEWAY__ADDRESS"):
            with open_gateway_cluster(_cfg()):
                pass


def test_unreachable_gateway_is_a_connection_error():
    from tests.fixtures.servers import free_port

    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ConnectionError, match=f"^cannot reach the dask-gateway at {address}"):
        with open_gateway_cluster(_cfg(), address=address, username="u", password="dummy-password"):
            pass


# ----------------------------------------------------------------------- with server


@pytest.mark.servers
def test_gateway_found_from_environment(gateway_env):
    from dask_gateway import Gateway

    gw = Gateway()  # no arguments: DASK_GATEWAY__* only
    try:
        assert gw.address == gateway_env.address
        assert gw.proxy_address == gateway_env.proxy_address
        assert gw.auth.username == gateway_env.username
        assert gw.list_clusters() == []
        options = gw.cluster_options()
        assert set(options) == {
            "worker_cores",
            "worker_threads",
            "worker_memory",
            "image",
            "aws_secret_access_key",
        }
    finally:
        close_gateway(gw)


@pytest.mark.servers
def test_describe_options_redacts_gateway_secret(gateway_server):
    with gateway_server.gateway() as gw:
        options = gw.cluster_options()
    options["aws_secret_access_key"] = "s3cr3t-from-a-user"
    options["worker_cores"] = 2
    text = describe_options(options)
    assert "s3cr3t-from-a-user" not in text
    assert "'***'" in text and "worker_cores" in text and ": 2" in text


@pytest.mark.servers
def test_new_cluster_from_yaml_scales_to_two_and_computes(
    gateway_env, moto_server, s3_bucket, caplog
):
    import dask.array as da
    import psutil

    secret = "worker-secret-via-option"
    cfg = GatewayClusterConfig.from_yaml(YAML)
    cfg = dataclasses.replace(
        cfg,
        wait_timeout=GENEROUS,
        cluster_options={**cfg.cluster_options, "aws_secret_access_key": secret},
    )
    caplog.set_level(logging.INFO, logger="odc_ndvi_plugin.ops.gateway")
    t0 = time.monotonic()
    with open_gateway_cluster(cfg) as (cluster, client):
        ready = time.monotonic() - t0
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        # the yaml's options reached the workers: 1 thread, 1 GiB
        assert {w["nthreads"] for w in workers.values()} == {1}
        assert {w["memory_limit"] for w in workers.values()} == {1 * GiB}
        x = da.arange(1_000_000, chunks=100_000)
        assert client.compute(x.sum()).result() == 999_999 * 1_000_000 // 2

        # workers reach moto through the inherited environment ...
        def probe():
            import os

            from odc.aws.s3_client import S3Client

            url = f"s3://{s3_bucket}/from-worker/{os.getpid()}.txt"
            return os.environ.get("AWS_SECRET_ACCESS_KEY"), S3Client().dump(b"hi", url)

        results = client.run(probe)
        assert {r[0] for r in results.values()} == {secret}  # the option became env
        assert all(r[1][1] for r in results.values())

        # ... and import the package (PYTHONPATH); once: the import takes seconds
        def import_plugin():
            import odc_ndvi_plugin

            return odc_ndvi_plugin.__file__

        origin = client.run(import_plugin, workers=list(workers)[:1])
        assert list(origin.values()) == [str(YAML.parents[1] / "odc_ndvi_plugin" / "__init__.py")]
        listing = moto_server.client("s3").list_objects_v2(Bucket=s3_bucket)
        assert listing["KeyCount"] == 2

        # everything the gateway started listens on loopback only
        procs = [psutil.Process(gateway_env.pid)]
        procs += procs[0].children(recursive=True)
        listening = {
            (p.pid, c.laddr.ip)
            for p in procs
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening and {ip for _, ip in listening} == {"127.0.0.1"}
        name = cluster.name
        assert name in _active(gateway_env)
    print(f"\nnew cluster + 2 workers ready in {ready:.1f} s")
    _assert_gone(gateway_env, name, processes=True)
    assert secret not in caplog.text
    assert "aws_secret_access_key" in caplog.text and "***" in caplog.text


@pytest.mark.servers
def test_connect_existing_and_first(gateway_env):
    outer_cfg = _cfg(adapt={"minimum": 1, "maximum": 2})
    with open_gateway_cluster(outer_cfg) as (cluster, client):
        name = cluster.name
        assert len(client.nthreads()) >= 1
        with open_gateway_cluster(_cfg(connect="existing", cluster_name=name)) as (c2, cl2):
            assert c2.name == name
            assert cl2.submit(sum, [1, 2, 3]).result() == 6
        assert name in _active(gateway_env)  # connecting does not shut it down
        with open_gateway_cluster(_cfg(connect="first")) as (c3, _):
            assert c3.name == name
        assert name in _active(gateway_env)
        with pytest.raises(
            LookupError, match=f"no cluster named 'nope' at .*active clusters: {name}"
        ):
            with open_gateway_cluster(_cfg(connect="existing", cluster_name="nope")):
                pass
    _assert_gone(gateway_env, name)
    with pytest.raises(LookupError, match=r"no active cluster at .*\(connect: first\)"):
        with open_gateway_cluster(_cfg(connect="first")):
            pass


@pytest.mark.servers
def test_wrong_password_is_a_clear_error_without_the_password(gateway_server, caplog):
    wrong = "not-the-password-42"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GatewayAuthError) as info:
        with open_gateway_cluster(
            _cfg(),
            address=gateway_server.address,
            proxy_address=gateway_server.proxy_address,
            username="ndvi-tester",
            password=wrong,
        ):
            pytest.fail("must not get here")
    message = str(info.value)
    assert message == (
        f"gateway at {gateway_server.address} rejected the credentials for user "
        f"'ndvi-tester' (HTTP 401)"
    )
    shown = "".join(traceback.format_exception(info.value))
    basic = base64.b64encode(f"ndvi-tester:{wrong}".encode()).decode()
    for text in (message, shown, caplog.text):
        assert wrong not in text and basic not in text
    assert _active(gateway_server) == {}


@pytest.mark.servers
def test_unknown_cluster_option_lists_the_allowed_ones(gateway_env):
    with pytest.raises(ValueError) as info:
        with open_gateway_cluster(_cfg(cluster_options={"worker_mem": 2.0})):
            pass
    assert str(info.value) == (
        f"unknown cluster option 'worker_mem' (did you mean 'worker_memory'?) for the gateway "
        f"at {gateway_env.address}; allowed options: worker_cores, worker_threads, "
        f"worker_memory, image, aws_secret_access_key"
    )
    with pytest.raises(ValueError, match=r"'worker_memory' = 64.0 is invalid: .*<= 8"):
        with open_gateway_cluster(_cfg(cluster_options={"worker_memory": 64.0})):
            pass
    with pytest.raises(ValueError) as info:
        with open_gateway_cluster(_cfg(cluster_options={"aws_secret_access_key": 12345678})):
            pass
    assert "12345678" not in str(info.value) and "'***'" in str(info.value)
    assert _active(gateway_env) == {}


@pytest.mark.servers
def test_workers_larger_than_the_cluster_allows_time_out_clearly(gateway_env):
    # 8 GiB workers are a valid option, but the gateway caps a cluster at 6 GiB
    # (1 GiB scheduler): it scales to 0 workers, and waiting for 1 must time out.
    # The cluster is started first (no workers, a generous wait): the short timeout under
    # test is then spent waiting for the worker, never on the scheduler's start-up, which a
    # loaded machine can make last longer than the timeout.
    with open_gateway_cluster(
        _cfg(cluster_options={"worker_memory": 8.0}, workers=0), shutdown_on_exit=False
    ) as (cluster, _):
        name = cluster.name
    try:
        cfg = _cfg(connect="existing", cluster_name=name, workers=1, wait_timeout=3)
        t0 = time.monotonic()
        with pytest.raises(GatewayWorkersTimeout) as info:
            with open_gateway_cluster(cfg):
                pytest.fail("must not get here")
        waited = time.monotonic() - t0
    finally:
        with gateway_env.gateway() as gw:
            gw.stop_cluster(name)
    # it waited the whole timeout, then gave up instead of waiting on
    assert 3 <= waited < 60, waited
    message = str(info.value)
    assert message.startswith(
        f"0 of 1 workers after 3 s on cluster {name} at {gateway_env.address}; gateway: "
        "Scale request of 1 workers would exceed"
    ), message
    _assert_gone(gateway_env, name)


@pytest.mark.servers
def test_workers_that_cannot_start_fail_the_cluster_clearly(gateway_env):
    # the "broken" image points the workers at a dask that does not exist: the gateway
    # fails the cluster after two failed worker starts, and that failure -- not the end of
    # the (generous) wait -- is what must end the wait
    cfg = _cfg(cluster_options={"image": "broken"}, workers=1)
    t0 = time.monotonic()
    with pytest.raises((GatewayClusterFailed, GatewayWorkersTimeout)) as info:
        with open_gateway_cluster(cfg):
            pytest.fail("must not get here")
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert isinstance(info.value, GatewayClusterFailed), message  # not a timeout
    assert elapsed < cfg.wait_timeout, message
    assert "with 0 of 1 workers after" in message
    assert f"at {gateway_env.address} is " in message
    name = message.split("cluster ")[1].split()[0]
    _assert_gone(gateway_env, name)


@pytest.mark.servers
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=type)
def test_cluster_is_shut_down_when_the_block_raises(gateway_env, exc):
    with pytest.raises(type(exc)):
        with open_gateway_cluster(_cfg(workers=0)) as (cluster, _):
            name = cluster.name
            assert name in _active(gateway_env)
            raise exc
    _assert_gone(gateway_env, name, processes=isinstance(exc, KeyboardInterrupt))


@pytest.mark.servers
def test_cluster_is_shut_down_after_ctrl_c_while_waiting(gateway_env, monkeypatch):
    import odc_ndvi_plugin.ops.gateway as room

    seen = []

    def interrupted(gateway, cluster, **kw):
        seen.append(cluster.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(room, "_wait_for_workers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with open_gateway_cluster(_cfg(workers=1)):
            pytest.fail("must not get here")
    assert len(seen) == 1
    _assert_gone(gateway_env, seen[0], processes=True)


@pytest.mark.servers
def test_password_from_environment_config_is_used_and_registered(gateway_env):
    from odc_ndvi_plugin._redact import redact_text

    with open_gateway_cluster(_cfg(workers=0)) as (cluster, _):
        assert cluster.gateway.auth.username == gateway_env.username
    # the password came from DASK_GATEWAY__AUTH__KWARGS__PASSWORD and is now scrubbed
    assert redact_text(f"pw={gateway_env.password}") == "pw=***"


@pytest.mark.servers
def test_keep_cluster_when_asked(gateway_env):
    with open_gateway_cluster(_cfg(workers=0), shutdown_on_exit=False) as (cluster, _):
        name = cluster.name
    try:
        assert name in _active(gateway_env)
    finally:
        with gateway_env.gateway() as gw:
            gw.stop_cluster(name)
    _assert_gone(gateway_env, name)
