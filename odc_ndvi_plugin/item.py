"""STAC item properties that are known only once a task is computed.

odc-stats 1.9.7 renders a task's STAC item in the calling process *before* the task is
computed, from the task alone. What the computation finds out (the inputs it had to
leave out, a baseline's lineage...) has no way in. Here it has one: the plugin puts
``{property: value}`` on the reduce result's attrs (:func:`add_item_properties`; a value
may be a dask ``Delayed``), and :func:`dump_with_pystac` renders the item on a worker
after those values are computed, with the same file names, ``.sha1`` lines and commit
order as odc-stats' own writer. Both entry points use it: ``odc-ndvi run``'s sink
(``AtomicCOGSink``) and, through :func:`~odc_ndvi_plugin.cogs.encode_cogs_on_workers`,
odc-stats' ``S3COGSink`` in a plain ``odc-stats run``. A result without such properties
is written by odc-stats' code exactly as before.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import dask
import xarray as xr

__all__ = [
    "ITEM_PROPERTIES",
    "add_item_properties",
    "dump_with_pystac",
    "item_properties",
    "persist_with_item_properties",
]

#: attrs key (on a reduce result) of the extra STAC item properties: name -> value
ITEM_PROPERTIES = "odc_ndvi:item_properties"


def add_item_properties(ds: xr.Dataset, properties: Mapping[str, Any]) -> xr.Dataset:
    """``ds`` whose task's STAC item also gets ``properties`` (values JSON-able, or dask
    ``Delayed`` objects that compute to JSON-able values)."""
    merged = {**item_properties(ds), **properties}
    return ds.assign_attrs({ITEM_PROPERTIES: merged})


def item_properties(ds: xr.Dataset | None) -> dict[str, Any]:
    """The extra STAC item properties ``ds`` carries (empty: none)."""
    if ds is None:
        return {}
    return dict(ds.attrs.get(ITEM_PROPERTIES) or {})


def persist_with_item_properties(client: Any, ds: xr.Dataset) -> xr.Dataset:
    """``client.persist(ds)``, its lazy item properties persisted in the same call: they
    share the reads (e.g. which scenes were left out), which would otherwise run again
    when the item is written."""
    props = item_properties(ds)
    lazy = [k for k, v in props.items() if dask.is_dask_collection(v)]
    if not lazy:
        return client.persist(ds)
    persisted = client.persist([ds, *(props[k] for k in lazy)])
    out = persisted[0]
    return add_item_properties(out, dict(zip(lazy, persisted[1:], strict=True)))


def _render_item(meta: dict[str, Any], names: tuple[str, ...], *values: Any) -> bytes:
    from odc.stats.io import dump_json

    doc = copy.deepcopy(meta)
    doc.setdefault("properties", {}).update(zip(names, values, strict=True))
    return dump_json(doc).encode("utf8")


def _item_write_result(url: str, data: bytes) -> Any:
    from odc.stats.io import WriteResult, mk_sha1

    return WriteResult(url, mk_sha1(data), None)


def dump_with_pystac(
    sink: Any, task: Any, proc: Any, ds: xr.Dataset, aux: xr.Dataset | None = None
) -> Any:
    """odc-stats' PySTAC write of one task (COGs, ``.sha1``, STAC item last) with the
    item rendered on a worker, ``ds``'s extra properties (:func:`item_properties`) in
    its ``properties``. The ``.sha1`` lists the item's digest, as odc-stats' does."""
    from odc.stats.io import _sha1_digest

    json_url = task.metadata_path("absolute", ext=sink._stac_meta_ext)
    meta = task.render_metadata(
        ext=sink._band_ext, use_center_time=getattr(proc, "CENTER_TIMERANGE", False)
    )
    props = item_properties(ds)
    # values as arguments of their own: a persisted Delayed inside a dict argument loses
    # its future (the scheduler then cancels the write for "lost dependencies")
    json_data = dask.delayed(_render_item, pure=True)(meta, tuple(props), *props.values())
    meta_sha1 = dask.delayed(_item_write_result, pure=True)(json_url, json_data)
    cogs = sink._ds_to_cog(ds, task.paths("absolute", ext=sink._band_ext))
    if aux is not None:
        aux_paths = {
            k: task.aux_path(k, relative_to="absolute", ext=sink._band_ext) for k in aux.data_vars
        }
        cogs.extend(sink._ds_to_cog(aux, aux_paths))
    # raises if a write failed: the item is then never written
    sha1_digest = _sha1_digest(meta_sha1, *cogs)
    sha1_done = sink._write_blob(
        sha1_digest, task.metadata_path("absolute", ext="sha1"), ContentType="text/plain"
    )
    return sink._write_blob(
        json_data, json_url, ContentType=sink._stac_meta_contentype, with_deps=sha1_done
    )


def refuse_with_eodatasets3(ds: xr.Dataset) -> None:
    """odc-stats' eodatasets3 writer cannot take properties computed with the task."""
    names = sorted(item_properties(ds))
    if names:
        raise ValueError(
            f"the STAC item needs properties computed with the task ({', '.join(names)}), "
            "which only odc-stats' PySTAC writer can carry: run without --apply_eodatasets3"
        )
