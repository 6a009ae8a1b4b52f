"""The gateway cluster room: run the NDVI statistics on a dask-gateway cluster.

A yaml file (``cfg/gateway-cluster.yaml`` documents every key) becomes a frozen
:class:`GatewayClusterConfig`; :func:`open_gateway_cluster` turns it into a running
cluster and a connected ``distributed.Client``::

    cfg = GatewayClusterConfig.from_yaml("cfg/gateway-cluster.yaml")
    with open_gateway_cluster(cfg) as (cluster, client):
        client.submit(...)

It finds the gateway (``address`` in the file, else dask config ``gateway.address`` /
``DASK_GATEWAY__ADDRESS``, exactly as ``dask_gateway.Gateway()`` does), creates a
cluster with the given options (or connects to an existing one by name, or to the
oldest running one), scales it to ``workers`` or makes it adaptive, waits until the
workers have arrived, and shuts the cluster down on the way out -- also after an
exception or Ctrl-C -- unless told to keep it.

Errors say what went wrong and where, without secrets: wrong credentials raise
:class:`GatewayAuthError` ("gateway at X rejected the credentials for user Y"),
workers that never come raise :class:`GatewayWorkersTimeout` ("0 of 2 workers after
30 s on cluster NAME at X"), a cluster that fails raises :class:`GatewayClusterFailed`.
Option values are shown through :func:`describe_options`, which redacts secrets with
:mod:`odc_ndvi_plugin._redact`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, get_args

from .._redact import redact_mapping, redact_url, register_secret
from .._validate import (
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    did_you_mean,
)
from ..errors import ConfigError, NDVIPluginError
from .signals import interrupts_deferred

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dask_gateway import Gateway, GatewayCluster
    from distributed import Client

__all__ = [
    "AdaptConfig",
    "ConnectMode",
    "GatewayAuthConfig",
    "GatewayAuthError",
    "GatewayClusterConfig",
    "GatewayClusterFailed",
    "GatewayClusterNotFound",
    "GatewayRefused",
    "GatewayUnreachable",
    "GatewayWorkersTimeout",
    "close_gateway",
    "describe_options",
    "open_gateway_cluster",
]

log = logging.getLogger(__name__)

ConnectMode = Literal["new", "existing", "first"]
CONNECT_MODES: tuple[str, ...] = get_args(ConnectMode)
_OPTION_TYPES = (str, int, float, bool)
_POLL = 0.2  # seconds between checks while waiting
_STATUS_EVERY = 1.0  # seconds between cluster-status checks while waiting for workers


class GatewayAuthError(NDVIPluginError, PermissionError):
    """The gateway rejected the credentials (HTTP 401) or the user's rights (403)."""


class GatewayWorkersTimeout(NDVIPluginError, TimeoutError):
    """The cluster did not start, or its workers did not arrive, within the timeout."""


class GatewayClusterFailed(NDVIPluginError, RuntimeError):
    """The cluster failed or stopped while starting or waiting for workers."""


class GatewayUnreachable(NDVIPluginError, ConnectionError):
    """No dask-gateway answers at the address."""


class GatewayRefused(NDVIPluginError, ValueError):
    """The gateway refused what was asked: a cluster option, the address or the auth set-up."""


class GatewayClusterNotFound(NDVIPluginError, LookupError):
    """No cluster to connect to (``connect: existing`` / ``first``)."""


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class AdaptConfig:
    """Adaptive scaling bounds (``maximum=None``: no upper bound but the gateway's)."""

    minimum: int = 0
    maximum: int | None = None

    def __post_init__(self) -> None:
        check_int(self.minimum, "adapt.minimum", minimum=0)
        if self.maximum is not None:
            check_int(self.maximum, "adapt.maximum", minimum=1)
            if self.maximum < self.minimum:
                raise ValueError(
                    f"adapt.maximum ({self.maximum}) is smaller than adapt.minimum ({self.minimum})"
                )


@dataclass(frozen=True, kw_only=True)
class GatewayAuthConfig:
    """How to authenticate; the password itself never lives in the file.

    ``type``: ``basic``, ``kerberos``, ``jupyterhub`` or a dotted class path.
    ``username``: for basic auth (default: dask config, then the login name).
    ``password_env``: name of the environment variable holding the basic-auth
    password (default: dask config ``gateway.auth.kwargs.password``).
    """

    type: str = "basic"
    username: str | None = None
    password_env: str | None = None

    def __post_init__(self) -> None:
        check_str(self.type, "auth.type")
        if self.username is not None:
            check_str(self.username, "auth.username")
        if self.password_env is not None:
            check_str(self.password_env, "auth.password_env")


@dataclass(frozen=True, kw_only=True)
class GatewayClusterConfig:
    """Which gateway, which cluster, how many workers, how long to wait.

    See ``cfg/gateway-cluster.yaml`` for the meaning of every field. Build it with
    :meth:`from_yaml` / :meth:`from_mapping` (unknown keys are rejected there) or
    directly with keyword arguments.
    """

    address: str | None = None
    proxy_address: str | None = None
    auth: GatewayAuthConfig | None = None
    cluster_options: Mapping[str, Any] = field(default_factory=dict)
    connect: ConnectMode = "new"
    cluster_name: str | None = None
    workers: int | None = None
    adapt: AdaptConfig | None = None
    wait_for_workers: int | None = None
    wait_timeout: float = 120.0
    shutdown_on_exit: bool | None = None

    def __post_init__(self) -> None:
        if self.address is not None:
            check_str(self.address, "address")
        if self.proxy_address is not None:
            check_str(self.proxy_address, "proxy_address")
        check_choice(self.connect, "connect", CONNECT_MODES)
        if self.connect == "existing" and not self.cluster_name:
            raise ValueError("connect: existing needs cluster_name")
        if self.cluster_name is not None:
            check_str(self.cluster_name, "cluster_name")
            if self.connect != "existing":
                raise ValueError(
                    f"cluster_name is only used with connect: existing (connect is "
                    f"{self.connect!r})"
                )
        check_mapping(
            self.cluster_options, "cluster_options", what="a mapping of option name to value"
        )
        for name, value in self.cluster_options.items():
            if not isinstance(name, str):
                raise ValueError(f"cluster option names must be strings, got {name!r}")
            if not isinstance(value, _OPTION_TYPES):
                raise ValueError(
                    f"cluster option {name!r} must be a string, number or boolean, got "
                    f"{type(value).__name__}"
                )
        # freeze the mapping too
        object.__setattr__(self, "cluster_options", MappingProxyType(dict(self.cluster_options)))
        if self.workers is not None and self.adapt is not None:
            raise ValueError("give either workers or adapt, not both")
        if self.workers is not None:
            check_int(self.workers, "workers", minimum=0)
        if self.wait_for_workers is not None:
            check_int(self.wait_for_workers, "wait_for_workers", minimum=0)
        check_number(self.wait_timeout, "wait_timeout (seconds)", positive=True)
        if self.shutdown_on_exit is not None:
            check_bool(self.shutdown_on_exit, "shutdown_on_exit")

    # -- derived settings

    @property
    def target_workers(self) -> int | None:
        """Workers to scale to: ``workers``; 1 for a new cluster without ``adapt``;
        ``None`` (leave the scaling alone) when connecting without either."""
        if self.workers is not None:
            return self.workers
        if self.adapt is None and self.connect == "new":
            return 1
        return None

    @property
    def expected_workers(self) -> int:
        """Workers to wait for: ``wait_for_workers``, else the scale target, else
        ``adapt.minimum``, else 1 (an existing cluster needs at least one)."""
        if self.wait_for_workers is not None:
            return self.wait_for_workers
        if self.target_workers is not None:
            return self.target_workers
        if self.adapt is not None:
            return self.adapt.minimum
        return 1

    @property
    def shutdown(self) -> bool:
        """Whether the cluster is shut down on exit: ``shutdown_on_exit``, by default
        only for clusters this context created (``connect: new``)."""
        if self.shutdown_on_exit is not None:
            return self.shutdown_on_exit
        return self.connect == "new"

    # -- loading

    @classmethod
    def allowed_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "gateway cluster config"
    ) -> GatewayClusterConfig:
        """Build from a plain mapping (as read from yaml); unknown keys -> ValueError."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(source, f"expected a mapping at the top, got {type(data).__name__}")
        check_keys(data, cls.allowed_keys(), source)
        kwargs = dict(data)
        if kwargs.get("auth") is not None:
            kwargs["auth"] = _sub_config(GatewayAuthConfig, kwargs["auth"], "auth", source)
        if kwargs.get("adapt") is not None:
            kwargs["adapt"] = _sub_config(AdaptConfig, kwargs["adapt"], "adapt", source)
        if kwargs.get("cluster_options") is None:
            kwargs["cluster_options"] = {}
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ConfigError(source, str(exc)) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> GatewayClusterConfig:
        """Read ``path`` (yaml); see ``cfg/gateway-cluster.yaml``. A file that cannot be
        read or parsed is a :class:`~odc_ndvi_plugin._validate.ConfigError` naming it."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(
                f"gateway config {str(path)!r}", f"cannot read it: {err.strerror}"
            ) from err
        except yaml.YAMLError as err:
            raise ConfigError(f"gateway config {str(path)!r}", f"not valid YAML: {err}") from err
        return cls.from_mapping(data or {}, source=str(path))


def _sub_config(kind: type, data: Any, name: str, source: str) -> Any:
    if isinstance(data, kind):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(source, f"{name} must be a mapping, got {type(data).__name__}")
    allowed = tuple(f.name for f in fields(kind))
    check_keys(data, allowed, f"{source}: {name}")
    try:
        return kind(**data)
    except ValueError as exc:
        raise ConfigError(source, str(exc)) from None


# ---------------------------------------------------------------------------- display


def describe_options(options: Mapping[str, Any]) -> str:
    """One ``name: value`` line per cluster option, secret-looking values redacted.

    Accepts a plain mapping or a ``dask_gateway.options.Options``.
    """
    shown = redact_mapping({str(k): options[k] for k in options})
    if not shown:
        return "(no cluster options)"
    width = max(map(len, shown))
    return "\n".join(f"{name:<{width}} : {value!r}" for name, value in shown.items())


# ----------------------------------------------------------------------------- runtime


def _auth_user(auth: Any) -> str:
    user = getattr(auth, "username", None)
    return str(user) if user else type(auth).__name__


@contextlib.contextmanager
def _gateway_errors(address: str, user: str) -> Iterator[None]:
    """Translate HTTP/connection errors from dask_gateway into clear ones.

    The originals are not chained: aiohttp's request info carries the Authorization
    header (base64 ``user:password``).
    """
    import aiohttp

    try:
        yield
    except aiohttp.ClientResponseError as exc:
        if exc.status == 401:
            err: Exception = GatewayAuthError(
                f"gateway at {address} rejected the credentials for user {user!r} (HTTP 401)"
            )
        elif exc.status == 403:
            err = GatewayAuthError(f"gateway at {address} refused user {user!r} access (HTTP 403)")
        else:
            err = GatewayClusterFailed(
                f"gateway at {address} answered HTTP {exc.status}: {exc.message}"
            )
        raise err from None
    except aiohttp.ClientConnectionError as exc:
        raise GatewayUnreachable(f"cannot reach the dask-gateway at {address}: {exc}") from None


def _make_gateway(
    cfg: GatewayClusterConfig,
    *,
    address: str | None,
    proxy_address: str | None,
    auth: Any,
    username: str | None,
    password: str | None,
) -> Gateway:
    import dask.config
    from dask_gateway import BasicAuth, Gateway
    from dask_gateway.utils import format_template

    auth_cfg = cfg.auth
    if auth is None and auth_cfg is None and (username is not None or password is not None):
        auth_cfg = GatewayAuthConfig()
    if auth is None:
        auth_type = (
            auth_cfg.type if auth_cfg is not None else dask.config.get("gateway.auth.type", None)
        )
        if auth_type == "basic":
            # Built here rather than by dask_gateway.get_auth: dask parses DASK_* values
            # as Python literals, so a numeric password arrives as an int, which
            # BasicAuth cannot encode.
            kwargs = {
                k: format_template(v)
                for k, v in (dask.config.get("gateway.auth.kwargs", None) or {}).items()
            }
            user = username or (auth_cfg and auth_cfg.username) or kwargs.get("username")
            if password is None and auth_cfg is not None and auth_cfg.password_env:
                if auth_cfg.password_env not in os.environ:
                    raise GatewayRefused(
                        f"auth.password_env names {auth_cfg.password_env!r}, which is not set"
                    )
                password = os.environ[auth_cfg.password_env]
            if password is None:
                password = kwargs.get("password")
            auth = BasicAuth(
                username=None if user is None else str(user),
                password=None if password is None else str(password),
            )
        elif auth_cfg is not None:
            auth = auth_cfg.type
    if password is not None:
        register_secret(str(password))
    try:
        return Gateway(
            address=address or cfg.address,
            proxy_address=proxy_address or cfg.proxy_address,
            auth=auth,
        )
    except ValueError as exc:
        if "address" in str(exc):
            raise GatewayRefused(
                "no dask-gateway address: set `address` in the cluster config, pass "
                "address=..., or set DASK_GATEWAY__ADDRESS (dask config gateway.address)"
            ) from None
        raise


def close_gateway(gateway: Any) -> None:
    """Close a ``dask_gateway.Gateway`` client once, quietly.

    With dask-gateway 2026.3 and distributed 2025.7, ``Gateway.__del__`` calls
    ``close()`` again and that raises on the stopped loop; marking the closed client
    asynchronous makes ``__del__`` skip it.
    """
    if gateway is None or getattr(gateway, "_ndvi_closed", False):
        return
    with contextlib.suppress(Exception):
        gateway.close()
    with contextlib.suppress(Exception):
        gateway._asynchronous = True
        gateway._ndvi_closed = True


def _checked_options(gateway: Gateway, cfg: GatewayClusterConfig, where: str) -> Any:
    """The gateway's cluster options with the config's values set (names checked)."""
    options = gateway.cluster_options()
    allowed = tuple(options)
    for name, value in cfg.cluster_options.items():
        if name not in allowed:
            raise GatewayRefused(
                f"unknown cluster option {name!r}{did_you_mean(name, allowed)} for the gateway at "
                f"{where}; allowed options: {', '.join(allowed)}"
            )
        try:
            options[name] = value
        except (TypeError, ValueError) as exc:
            shown = redact_mapping({name: value})[name]
            detail = "" if shown != value else f": {exc}"
            raise GatewayRefused(
                f"cluster option {name!r} = {shown!r} is invalid{detail}"
            ) from None
    return options


def _wait_running(
    gateway: Gateway, name: str, *, where: str, deadline: float, started: float
) -> None:
    from dask_gateway.client import ClusterStatus

    while True:
        report = gateway.get_cluster(name)
        if report.status == ClusterStatus.RUNNING:
            return
        if report.status in (ClusterStatus.FAILED, ClusterStatus.STOPPED, ClusterStatus.STOPPING):
            raise GatewayClusterFailed(
                f"cluster {name} at {where} is {report.status.name.lower()} "
                f"instead of running (see the gateway's logs)"
            )
        if time.monotonic() >= deadline:
            raise GatewayWorkersTimeout(
                f"cluster {name} at {where} still "
                f"{report.status.name.lower()} after {time.monotonic() - started:.0f} s"
            )
        time.sleep(_POLL)


def _acquire(
    gateway: Gateway,
    cfg: GatewayClusterConfig,
    *,
    where: str,
    deadline: float,
    started: float,
    state: dict[str, Any],
) -> GatewayCluster:
    if cfg.connect == "new":
        options = _checked_options(gateway, cfg, where)
        log.info("creating a cluster at %s with options:\n%s", where, describe_options(options))
        # held until the name is known: an interrupt inside submit() could leave a
        # cluster on the gateway that nothing here knows to shut down
        with interrupts_deferred():
            state["name"] = name = gateway.submit(options)
    elif cfg.connect == "existing":
        name = str(cfg.cluster_name)
        try:
            gateway.get_cluster(name)
        except ValueError:
            running = sorted(r.name for r in gateway.list_clusters())
            raise GatewayClusterNotFound(
                f"no cluster named {name!r} at {where}; active clusters: "
                f"{', '.join(running) or 'none'}"
            ) from None
    else:  # first
        reports = sorted(gateway.list_clusters(), key=lambda r: (r.start_time, r.name))
        if not reports:
            raise GatewayClusterNotFound(
                f"no active cluster at {where} for user "
                f"{_auth_user(gateway.auth)!r} to connect to (connect: first)"
            )
        name = reports[0].name
    _wait_running(gateway, name, where=where, deadline=deadline, started=started)
    cluster = gateway.connect(name, shutdown_on_close=False)
    log.info("connected to cluster %s at %s", name, where)
    return cluster


def _count_workers(cluster: GatewayCluster) -> int:
    # Pushed by the scheduler (worker-status subscription): no RPC that could hang on
    # a scheduler that has just gone away.
    return len(cluster.scheduler_info.get("workers", {}))


def _wait_for_workers(
    gateway: Gateway,
    cluster: GatewayCluster,
    *,
    where: str,
    expected: int,
    deadline: float,
    started: float,
    timeout: float,
    notes: list[str],
) -> None:
    from dask_gateway.client import ClusterStatus

    next_status = 0.0
    while True:
        have = _count_workers(cluster)
        if have >= expected:
            log.info("%d of %d workers on cluster %s", have, expected, cluster.name)
            return
        now = time.monotonic()
        if now >= next_status:
            status = gateway.get_cluster(cluster.name).status
            if status != ClusterStatus.RUNNING:
                raise GatewayClusterFailed(
                    f"cluster {cluster.name} at {where} is {status.name.lower()} "
                    f"with {have} of {expected} workers after {now - started:.0f} s"
                    + "".join(f"; {n}" for n in notes)
                    + " (see the gateway's logs)"
                )
            next_status = now + _STATUS_EVERY
        if now >= deadline:
            raise GatewayWorkersTimeout(
                f"{have} of {expected} workers after {timeout:g} s on cluster {cluster.name} "
                f"at {where}" + "".join(f"; {n}" for n in notes)
            )
        time.sleep(_POLL)


def _scale(cluster: GatewayCluster, cfg: GatewayClusterConfig, notes: list[str]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cfg.adapt is not None:
            cluster.adapt(minimum=cfg.adapt.minimum, maximum=cfg.adapt.maximum)
        elif cfg.target_workers is not None:
            cluster.scale(cfg.target_workers)
    for w in caught:
        note = f"gateway: {w.message}"
        notes.append(note)
        log.warning("cluster %s: %s", cluster.name, note)


@contextlib.contextmanager
def open_gateway_cluster(
    cfg: GatewayClusterConfig | str | os.PathLike[str],
    *,
    address: str | None = None,
    proxy_address: str | None = None,
    auth: Any = None,
    username: str | None = None,
    password: str | None = None,
    wait_timeout: float | None = None,
    shutdown_on_exit: bool | None = None,
) -> Iterator[tuple[GatewayCluster, Client]]:
    """Open the cluster that ``cfg`` describes and yield ``(cluster, client)``.

    ``cfg`` is a :class:`GatewayClusterConfig` or the path of its yaml file. Keyword
    arguments override the file: ``address``/``proxy_address``; ``auth`` (a
    ``dask_gateway`` auth object or type name) or ``username``/``password`` for basic
    auth; ``wait_timeout`` and ``shutdown_on_exit``.

    Raises :class:`GatewayAuthError`, ``ConnectionError``, ``LookupError`` (no such
    cluster), ``ValueError`` (unknown/invalid cluster options),
    :class:`GatewayWorkersTimeout` or :class:`GatewayClusterFailed` before yielding.
    On exit the client is closed and -- if ``shutdown`` applies -- the cluster is
    shut down, whatever ended the block (including ``KeyboardInterrupt``).
    """
    if not isinstance(cfg, GatewayClusterConfig):
        cfg = GatewayClusterConfig.from_yaml(cfg)
    timeout = float(cfg.wait_timeout if wait_timeout is None else wait_timeout)
    shutdown = cfg.shutdown if shutdown_on_exit is None else bool(shutdown_on_exit)
    gateway = _make_gateway(
        cfg,
        address=address,
        proxy_address=proxy_address,
        auth=auth,
        username=username,
        password=password,
    )
    where = redact_url(gateway.address)
    user = _auth_user(gateway.auth)
    state: dict[str, Any] = {}
    cluster = client = None
    try:
        started = time.monotonic()
        deadline = started + timeout
        with _gateway_errors(where, user):
            cluster = _acquire(
                gateway, cfg, where=where, deadline=deadline, started=started, state=state
            )
            # held until the client is ours: an interrupt inside get_client() would leave
            # a connected Client that nothing closes, and at exit its __del__ waits 60 s
            # on a cluster already shut down, then prints a traceback
            with interrupts_deferred():
                client = cluster.get_client(set_as_default=False)
            notes: list[str] = []
            _scale(cluster, cfg, notes)
            _wait_for_workers(
                gateway,
                cluster,
                where=where,
                expected=cfg.expected_workers,
                deadline=deadline,
                started=started,
                timeout=timeout,
                notes=notes,
            )
        yield cluster, client
    finally:
        _release(gateway, cluster, client, state.get("name"), shutdown=shutdown)


def _release(
    gateway: Gateway,
    cluster: GatewayCluster | None,
    client: Client | None,
    submitted: str | None,
    *,
    shutdown: bool,
) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
    name = cluster.name if cluster is not None else submitted
    if cluster is not None:
        try:
            cluster.close(shutdown=shutdown)
        except Exception:
            log.warning("closing cluster %s failed", name, exc_info=True)
        close_gateway(cluster.gateway)
    elif submitted is not None and shutdown:
        try:
            gateway.stop_cluster(submitted)
        except Exception:
            log.warning("stopping cluster %s failed", submitted, exc_info=True)
    if name is not None:
        log.info("cluster %s %s", name, "shut down" if shutdown else "left running")
    close_gateway(gateway)
