"""Index operations: open (the user's index or an embedded one), initialise, add products and
datasets, each problem naming its file."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import NDVIPluginError

if TYPE_CHECKING:
    pass

from ._config import _APP, DEFAULT_INDEX_DRIVER, DatacubeEnv, find_user_datacube
from ._postgres import _check_driver, embedded_postgres

_MAX_REPORTED = 20  # problems listed in one IndexingError

_LOG = logging.getLogger(__name__)


class IndexingError(NDVIPluginError, RuntimeError):
    """A product or dataset document could not be added; the message names the file(s)."""


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
    index_driver: str = DEFAULT_INDEX_DRIVER,
) -> Iterator[DatacubeEnv]:
    """The user's datacube if one is configured, else one of ours in ``workdir/pgdata``
    (Debian's PostgreSQL with PostGIS when installed, else the embedded wheel's), used with
    datacube's ``index_driver`` (``postgres`` or ``postgis``; a user's datacube says its own).

    With ``init=True`` the index schema is initialised (idempotently) before yielding.
    """
    user = find_user_datacube() if use_user_config else None
    if user is not None:
        _LOG.info("using the user's datacube (%s): %s", user.source, user.display_url)
        if init:
            init_index(user)
        yield user
        return
    _check_driver(index_driver)
    with embedded_postgres(Path(workdir) / "pgdata", db_name=db_name, durable=durable) as server:
        env = server.datacube_env(index_driver=index_driver)
        _LOG.info("using embedded datacube index %s", env.display_url)
        if init:
            init_index(env)
        yield env


def init_index(env: DatacubeEnv) -> bool:
    """Idempotent ``datacube system init``. Returns True if the schema was created/updated now.

    An index that already has the current schema is left untouched (no role or grant
    changes, so this is safe on a user's database where we lack admin rights)."""
    from datacube.index.exceptions import IndexSetupError, NoIndexError

    try:
        with env.index(app=_APP, validate=True):
            return False
    except (IndexSetupError, NoIndexError):  # postgres driver / postgis driver: no schema yet
        pass
    t0 = time.monotonic()
    _forget_dynamic_indexes()
    # datacube 1.9.20's postgis driver grants its roles "WITH ADMIN TRUE" (PostgreSQL 16
    # syntax); on 15 (Debian 12's) the schema is created without the odc_* role grants
    with_permissions = env.index_driver != "postgis" or _server_version(env) >= 160000
    with env.index(app=_APP, validate=False) as index:
        index.init_db(with_default_types=True, with_permissions=with_permissions)
        index.metadata_types.check_field_indexes(
            allow_table_lock=False, rebuild_indexes=False, rebuild_views=True
        )
    if not with_permissions:
        _postgis_roles_pg15(env)
    _LOG.info("initialised datacube index %s in %.2fs", env.display_url, time.monotonic() - t0)
    return True


# The roles and grants datacube's postgis driver makes with permissions, in PostgreSQL 15
# syntax ("WITH ADMIN OPTION"): datacube-ows and datacube-explorer "SET ROLE odc_admin".
_POSTGIS_ROLES_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'odc_user') THEN
    CREATE ROLE odc_user NOLOGIN INHERIT; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'odc_manage') THEN
    CREATE ROLE odc_manage NOLOGIN INHERIT; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'odc_admin') THEN
    CREATE ROLE odc_admin NOLOGIN INHERIT CREATEROLE; END IF;
END $$;
GRANT odc_user TO odc_manage;
GRANT odc_manage TO odc_admin;
GRANT odc_user, odc_manage TO odc_admin WITH ADMIN OPTION;
GRANT USAGE ON SCHEMA odc TO odc_user;
GRANT SELECT ON ALL TABLES IN SCHEMA odc TO odc_user;
GRANT CREATE ON SCHEMA odc TO odc_manage;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA odc TO odc_manage;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA odc TO odc_manage;
GRANT ALL ON SCHEMA odc TO odc_admin;
GRANT ALL ON ALL TABLES IN SCHEMA odc TO odc_admin;
"""


def _postgis_roles_pg15(env: DatacubeEnv) -> None:
    """The postgis driver's odc_user/odc_manage/odc_admin roles and grants on PG < 16."""
    import sqlalchemy
    from datacube.cfg import psql_url_from_config

    engine = sqlalchemy.create_engine(psql_url_from_config(env.odc_environment()))
    try:
        with engine.begin() as conn:
            db = conn.execute(sqlalchemy.text("SELECT current_database()")).scalar_one()
            conn.execute(sqlalchemy.text(_POSTGIS_ROLES_SQL))
            quoted = '"' + db.replace('"', '""') + '"'
            conn.execute(sqlalchemy.text(f"GRANT ALL ON DATABASE {quoted} TO odc_admin"))
    finally:
        engine.dispose()


def _server_version(env: DatacubeEnv) -> int:
    """``server_version_num`` of the index's PostgreSQL (e.g. 150018)."""
    import sqlalchemy
    from datacube.cfg import psql_url_from_config

    engine = sqlalchemy.create_engine(psql_url_from_config(env.odc_environment()))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SHOW server_version_num")).scalar_one())
    finally:
        engine.dispose()


def _forget_dynamic_indexes() -> None:
    """Work around datacube 1.9 process-global state before creating a schema.

    datacube's postgres driver builds its dynamic field indexes (``dix_*``) as SQLAlchemy
    ``Index`` objects on its module-level tables, so they stay attached to ``METADATA``. A
    later ``init_db`` of another database in the same process then creates them in
    ``METADATA.create_all`` (with the first database's metadata type ids) and fails with
    'relation "dix_..." already exists'. Detaching them first restores the static schema."""
    import importlib

    for module in ("datacube.drivers.postgres._core", "datacube.drivers.postgis._core"):
        try:
            metadata = importlib.import_module(module).METADATA
        except (ImportError, AttributeError):  # pragma: no cover - datacube internals moved
            continue
        for table in metadata.tables.values():
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
