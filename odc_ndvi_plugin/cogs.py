"""COGs encoded where the data is: on the dask workers, as tasks of the write graph.

odc-stats 1.9.7 (``S3COGSink._ds_to_cog``) calls odc-geo's ``to_cog`` on each lazy band
right away: the band is computed and encoded in the calling process, one band after the
other, and the encoded bytes then travel *inside* the graph of the writes ("Sending large
graph of size ..."), while the workers wait. :func:`delayed_ds_to_cog` makes each band's
encoding a task that depends only on that band, so encodings run on the workers, in
parallel, as soon as their band is reduced (a season's bands as soon as its last
observation is folded), and the graph carries no data.

``odc-ndvi run``'s sink uses it; for plain ``odc-stats run`` the plugin installs it on
odc-stats' sink when the run starts (:func:`odc_ndvi_plugin._compat.encode_cogs_on_workers`),
which writes the same files.
"""

from __future__ import annotations

import logging
from typing import Any

import dask
import xarray as xr

from ._portable import travels

__all__ = [
    "add_baseline_lineage",
    "delayed_ds_to_cog",
    "name_baselines_in_stac_items",
    "with_baseline",
]

_log = logging.getLogger(__name__)


@travels  # a GDAL error while encoding arrives at the client as text, not as "Exception"
def _to_cog(dv: xr.DataArray, **cog_opts: Any) -> Any:
    from odc.geo.cog import to_cog

    return to_cog(dv, **cog_opts)


def delayed_ds_to_cog(sink: Any, ds: xr.Dataset, paths: dict[str, str]) -> list[Any]:
    """``S3COGSink._ds_to_cog`` with each band's ``to_cog`` a delayed task."""
    out = []
    for band, dv in ds.data_vars.items():
        url = paths.get(str(band))
        if url is None:
            raise ValueError(f"No path for band: '{band}'")
        cog = dask.delayed(_to_cog, pure=True)(dv, **sink.cog_opts(str(band)))
        out.append(sink._write_blob(cog, url, ContentType="image/tiff"))
    return out


def add_baseline_lineage(meta: dict[str, Any], baseline: dict[str, str]) -> dict[str, Any]:
    """An anomaly's STAC item names its baseline: a ``derived_from`` link to the baseline
    item (titled with its id) and the property ``odc_ndvi:baseline`` = ``{id, href}``.
    (Not in ``odc:lineage``: indexing would then need the baseline indexed too.)"""
    meta.setdefault("properties", {})["odc_ndvi:baseline"] = dict(baseline)
    meta.setdefault("links", []).append(
        {
            "rel": "derived_from",
            "href": baseline["href"],
            "type": "application/json",
            "title": f"baseline {baseline['id']}",
        }
    )
    return meta


def name_baselines_in_stac_items() -> bool:
    """:func:`odc_ndvi_plugin._compat.name_baselines_in_stac_items` (moved there with
    every other touch of odc-stats' private parts)."""
    from ._compat import name_baselines_in_stac_items as patch

    return patch()


def with_baseline(task: Any, baseline: dict[str, str]) -> Any:
    """A copy of ``task`` whose ``render_metadata`` adds ``baseline``."""
    import copy

    out = copy.copy(task)
    render = type(task).render_metadata

    def render_metadata(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return add_baseline_lineage(render(out, *args, **kwargs), baseline)

    out.render_metadata = render_metadata
    return out
