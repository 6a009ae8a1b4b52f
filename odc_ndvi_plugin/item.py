"""STAC item properties that are known only once a task is computed.

odc-stats 1.9.7 renders a task's STAC item in the calling process *before* the task is
computed, from the task alone. What the computation finds out (the inputs it had to
leave out, a baseline's lineage...) has no way in. Here it has one: the plugin puts
``{property: value}`` on the reduce result's attrs (:func:`add_item_properties`; a value
may be a dask ``Delayed``), and odc-stats' sink, patched when a run starts
(:func:`odc_ndvi_plugin._compat.name_baselines_in_stac_items`), renders the item on a
worker after those values are computed, with the same file names, ``.sha1`` lines and
commit order as its own writer. Both entry points use it: plain ``odc-stats run`` and
``odc-ndvi run`` (whose sink is a subclass). A result without such properties is written
by odc-stats' code exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dask
import xarray as xr

__all__ = [
    "ITEM_PROPERTIES",
    "add_item_properties",
    "item_properties",
    "persist_with_item_properties",
    "refuse_with_eodatasets3",
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


def refuse_with_eodatasets3(ds: xr.Dataset) -> None:
    """odc-stats' eodatasets3 writer cannot take properties computed with the task."""
    names = sorted(item_properties(ds))
    if names:
        raise ValueError(
            f"the STAC item needs properties computed with the task ({', '.join(names)}), "
            "which only odc-stats' PySTAC writer can carry: run without --apply_eodatasets3"
        )
