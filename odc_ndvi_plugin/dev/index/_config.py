"""Where the index lives: the user's datacube config (datacube 1.9's files and variables) or an
embedded server's database, as one :class:`DatacubeEnv`."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..._redact import redact_text, redact_url
from ...errors import DatacubeUnavailable, NDVIPluginError

if TYPE_CHECKING:
    from datacube import Datacube
    from datacube.cfg import ODCEnvironment
    from datacube.index.abstract import AbstractIndex


DEFAULT_ENV_NAME = "default"
"""ODC environment name used for embedded databases."""

INDEX_DRIVERS = ("postgres", "postgis")
"""datacube 1.9 index drivers our own databases can use (``postgis`` needs PostGIS)."""

DEFAULT_INDEX_DRIVER = "postgres"
"""datacube's own default, and what most deployed indexes (DEA, DE Africa) still use."""


_ENV_NAME_RE = re.compile(r"[a-z][a-z0-9]*")
_APP = "odc-ndvi"


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


class DatacubeConfigError(NDVIPluginError, RuntimeError):
    """The user's datacube configuration is set but unusable."""


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

    @contextlib.contextmanager
    def reachable(self) -> Iterator[None]:
        """The database's connection failures (a dead port, a refused login, a server gone
        mid-work: sqlalchemy's or the driver's ``OperationalError``/``InterfaceError``) as
        :class:`~odc_ndvi_plugin.errors.DatacubeUnavailable`, one line naming this index
        (password redacted)."""
        try:
            yield
        except Exception as err:
            names = {cls.__name__ for cls in type(err).__mro__}
            if not names & {"OperationalError", "InterfaceError"}:
                raise
            reason = getattr(err, "orig", None) or err
            text = (str(reason).strip().splitlines() or [""])[0]
            raise DatacubeUnavailable(
                f"datacube index {self.display_url} cannot be reached: "
                f"{type(reason).__name__}: {redact_text(text)}"
            ) from err

    def datacube(self, *, app: str = _APP) -> Datacube:
        """An in-process ``datacube.Datacube`` on this index (close it, or use ``with``)."""
        from datacube import Datacube

        with self.reachable():
            return Datacube(env=self.odc_environment(), app=app)

    @contextlib.contextmanager
    def index(self, *, app: str = _APP, validate: bool = True) -> Iterator[AbstractIndex]:
        """A datacube index connection, closed on exit; connection failures are
        :class:`~odc_ndvi_plugin.errors.DatacubeUnavailable` (:meth:`reachable`)."""
        from datacube.index import index_connect

        with self.reachable():
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
