"""A task db is checked before LMDB maps it: a truncated file must not kill the run.

odc-stats' task db (``odc-stats save-tasks``) is an LMDB file. LMDB maps the file into
memory and trusts its header: if the file is shorter than the header says (a copy or
download cut short), the first read past its end is a SIGBUS that kills the process with
exit status 135 and no message. :func:`check_task_db` reads the two LMDB meta pages
itself (plain file reads, no mapping), checks the magic number and that the file holds
every page the newest meta page counts, and only then opens the db to check that it is
an odc-stats task db (``stats/config`` with a grid). Every problem is one
:class:`~odc_ndvi_plugin.errors.TaskDbError` line: ``task db X is corrupt or incomplete:
...`` (a task db that does not exist: :class:`~odc_ndvi_plugin.errors.TaskDbMissing`, a
usage error).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import TaskDbError, TaskDbMissing

__all__ = ["TaskDbError", "TaskDbMissing", "check_task_db"]

#: LMDB's MDB_MAGIC, in every meta page
LMDB_MAGIC = 0xBEEFC0DE
# 64-bit LMDB layout (lmdb/mdb.c): a page header (pgno u64, pad u16, flags u16, lower/upper
# u16) of 16 bytes, then MDB_meta: magic u32, version u32, address u64, mapsize u64, two
# MDB_db records of 48 bytes (the free-list db's md_pad holds the page size), last_pg u64,
# txnid u64.
_PAGE_HEADER = 16
_META = struct.Struct("<IIQQ I 44x 48x QQ")
_P_META = 0x08
_FLAGS_AT = 10


def _meta(page: bytes) -> tuple[int, int, int, int] | None:
    """(page size, last page, txn id, flags) of one meta page, None if it is not one."""
    if len(page) < _PAGE_HEADER + _META.size:
        return None
    (flags,) = struct.unpack_from("<H", page, _FLAGS_AT)
    magic, _version, _address, _mapsize, psize, last_pg, txnid = _META.unpack_from(
        page, _PAGE_HEADER
    )
    if magic != LMDB_MAGIC:
        return None
    return psize, last_pg, txnid, flags


def check_lmdb_file(path: Path) -> None:
    """Raise :class:`TaskDbError` unless ``path`` (an LMDB data file) is whole."""
    shown = str(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        first = f.read(_PAGE_HEADER + _META.size)
        meta0 = _meta(first)
        if meta0 is None:
            raise TaskDbError(
                f"task db {shown!r} is not an odc-stats task db: not an LMDB file "
                f"({size} bytes, no LMDB header; make one with odc-stats save-tasks)"
            )
        psize = meta0[0]
        if psize < 512 or psize & (psize - 1):
            raise TaskDbError(
                f"task db {shown!r} is corrupt or incomplete: page size {psize} in its header"
            )
        f.seek(psize)
        meta1 = _meta(f.read(_PAGE_HEADER + _META.size))
    metas = [m for m in (meta0, meta1) if m is not None]
    # LMDB uses the meta page with the newest transaction; both must fit in the file
    newest = max(metas, key=lambda m: m[2])
    needed = (max(m[1] for m in metas) + 1) * psize
    if meta1 is None or size < needed:
        raise TaskDbError(
            f"task db {shown!r} is corrupt or incomplete: {size} bytes, but its LMDB header "
            f"counts {newest[1] + 1} pages of {psize} bytes ({needed} bytes); "
            f"copy or download it again"
        )


def check_task_db(filedb: str) -> None:
    """Check a local task db before odc-stats opens it (see the module doc); URLs
    (``s3://``) are checked after download by the caller."""
    if "://" in filedb:
        return
    path = Path(filedb)
    if not path.exists():
        raise TaskDbMissing(
            f"task db {filedb!r} does not exist (make it with odc-stats save-tasks)"
        )
    data = path / "data.mdb" if path.is_dir() else path
    if not data.is_file():
        raise TaskDbError(f"task db {filedb!r} is not an odc-stats task db: no LMDB data file")
    try:
        check_lmdb_file(data)
    except OSError as err:
        raise TaskDbError(f"task db {filedb!r} cannot be read: {err.strerror}") from err
    _check_task_info(filedb)


def _check_task_info(filedb: str) -> None:
    """The db holds odc-stats' task information (written by ``save-tasks``)."""
    import lmdb
    from odc.dscache import DatasetCache

    try:
        cache = DatasetCache.open_ro(filedb)
    except lmdb.Error as err:
        raise TaskDbError(f"task db {filedb!r} is corrupt or incomplete: {err}") from err
    except ValueError as err:  # odc-dscache: "Existing database is not a ds cache"
        raise TaskDbError(f"task db {filedb!r} is not an odc-stats task db: {err}") from err
    try:
        info = cache.get_info_dict("stats/config")
        grid = info.get("grid") if isinstance(info, dict) else None
        if grid is None or grid not in cache.grids:
            raise TaskDbError(
                f"task db {filedb!r} is not an odc-stats task db: it has no task grid "
                f"(stats/config); make one with odc-stats save-tasks"
            )
    except lmdb.Error as err:
        raise TaskDbError(f"task db {filedb!r} is corrupt or incomplete: {err}") from err
    finally:
        cache.close()
