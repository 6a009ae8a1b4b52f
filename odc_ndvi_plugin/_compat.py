"""Every touch of odc-stats' and odc-algo's private parts, in one place, version-checked.

The plugin is written against odc-stats 1.9.x (tested: 1.9.7). What it takes from
private modules, and why:

* ``odc.stats.plugins._base.StatsPluginInterface``: the plugin base class (odc-stats has
  no public name for it) and ``odc.stats.plugins._registry.register``: the short name
  ``plugin: ndvi-seasonal``;
* ``odc.stats._cli_common.parse_all_tasks``: ``odc-stats run``'s task selection (ids,
  indices, slices), so ``odc-ndvi run TASKS`` selects the same tasks; with
  ``parse_resolution`` and ``odc.stats._text``'s YAML readers, ``odc-ndvi run`` reads
  ``--resolution`` and ``--config``/``--plugin-config``/``--cog-config`` as odc-stats does;
* ``odc.stats._sqs.SQSWorkToken``: the lease of an SQS message, as odc-stats renews it;
* ``odc.algo._masking.mask_cleanup_np``: the bad-pixel mask clean-up odc-stats' own
  plugins apply (``mask_filters``);
* two patches of ``S3COGSink``: ``_ds_to_cog`` made to encode each band on the workers
  (:func:`encode_cogs_on_workers`; odc-stats' own encodes in the client, band after band,
  and ships the bytes inside the graph; ``odc-ndvi run``'s sink does this by subclassing),
  and, in anomaly mode, ``dump_with_pystac`` made to name the baseline in the STAC item
  (:func:`name_baselines_in_stac_items`; odc-stats renders the item from the task alone).

When the patches are applied: when a run starts, never when a plugin object is made (a
notebook's ``seasonal_ndvi`` and ``odc-ndvi check-config`` make plugins and leave
odc-stats alone). For plain ``odc-stats run`` the plugin is made inside odc-stats'
``TaskRunner``; the first thing of a run that reaches the plugin and only a run does is
the runner starting its dask cluster, which asks the plugin for its
``dask_worker_plugin`` (odc-stats 1.9 ``TaskRunner._init_dask``). That is before the
first task's graph and before the sink encodes anything, so ``NDVISeasonal`` applies the
patches there (:meth:`~odc_ndvi_plugin.plugin.NDVISeasonal.dask_worker_plugin` calls
:meth:`~odc_ndvi_plugin.plugin.NDVISeasonal.run_starting`); ``odc-ndvi run``'s session
calls ``run_starting`` itself.

An odc-stats outside 1.9.x gets one warning: these names may have moved, and the patch
is then not applied (odc-stats' own encoding is used).
"""

from __future__ import annotations

import copy
import logging
import warnings
from functools import cache, partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dask
from odc.stats.plugins._base import StatsPluginInterface
from odc.stats.plugins._registry import register

__all__ = [
    "ODC_STATS_SERIES",
    "StatsPluginInterface",
    "encode_cogs_on_workers",
    "mask_cleanup",
    "name_baselines_in_stac_items",
    "odc_stats_supported",
    "parse_all_tasks",
    "parse_resolution",
    "register",
    "sqs_work_token",
    "yaml_option",
]

_log = logging.getLogger(__name__)

#: the odc-stats release series whose private names this module knows
ODC_STATS_SERIES = "1.9."


@cache
def odc_stats_supported() -> bool:
    """Whether the installed odc-stats is the series this module is written for (warns
    once when it is not)."""
    try:
        installed = version("odc-stats")
    except PackageNotFoundError:
        installed = "unknown"
    if installed.startswith(ODC_STATS_SERIES):
        return True
    warnings.warn(
        f"odc-ndvi-plugin is tested with odc-stats {ODC_STATS_SERIES}x, found {installed}: "
        "its private parts this plugin uses may have changed (COGs are encoded the "
        "odc-stats way)",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


def parse_all_tasks(tasks: list[str], tiles: list[Any]) -> list[Any]:
    """``odc-stats run``'s selection of ``tasks`` (ids, indices, slices) among ``tiles``."""
    from odc.stats._cli_common import parse_all_tasks as parse

    return parse(list(tasks), tiles)


def parse_resolution(text: str) -> tuple[float, float]:
    """``odc-stats run --resolution``'s reading of ``text`` ("30" or "-30,30")."""
    from odc.stats._cli_common import parse_resolution as parse

    return parse(text)


def yaml_option(text: str) -> Any:
    """``odc-stats run``'s reading of a YAML option (``--config``, ``--plugin-config``,
    ``--cog-config``): a URL (s3://, https://) read remotely, else a file if one exists
    there, else the text itself as inline YAML."""
    from urllib.parse import urlparse

    from odc.stats._text import load_yaml_remote, parse_yaml_file_or_inline

    url = urlparse(text)
    if url.scheme and url.netloc:
        return load_yaml_remote(text)
    return parse_yaml_file_or_inline(text)


def sqs_work_token(message: Any, lease_seconds: int) -> Any:
    """odc-stats' lease of an SQS message (renewed and ended as odc-stats does)."""
    from odc.stats._sqs import SQSWorkToken

    return SQSWorkToken(message, lease_seconds)


def mask_cleanup(mask_filters: tuple[tuple[str, int], ...]) -> Any:
    """odc-algo's clean-up of a bad-pixel mask with ``mask_filters`` (a numpy function)."""
    from odc.algo._masking import mask_cleanup_np

    return partial(mask_cleanup_np, mask_filters=mask_filters)


def encode_cogs_on_workers() -> bool:
    """Make odc-stats' own sink encode each band on the workers (once per process; see
    the module doc for when). Only odc-stats' original method of the supported series is
    replaced, so another patch or another odc-stats is left alone; returns whether the
    sink now encodes on the workers."""
    from odc.stats.io import S3COGSink

    from .cogs import delayed_ds_to_cog

    current = S3COGSink.__dict__.get("_ds_to_cog")
    if getattr(current, "__wrapped_by_odc_ndvi__", False):
        return True
    if not odc_stats_supported() or getattr(current, "__module__", None) != "odc.stats.io":
        _log.info("odc-stats' COG sink is not the one this plugin knows: left as it is")
        return False

    def _ds_to_cog(self: Any, ds: Any, paths: dict[str, str]) -> list[Any]:
        return delayed_ds_to_cog(self, ds, paths)

    _ds_to_cog.__wrapped_by_odc_ndvi__ = True  # type: ignore[attr-defined]
    _ds_to_cog.__doc__ = delayed_ds_to_cog.__doc__
    S3COGSink._ds_to_cog = _ds_to_cog
    _log.info("odc-stats' COG sink now encodes bands on the dask workers")
    return True


def name_baselines_in_stac_items() -> bool:
    """Make odc-stats' sink (and ours, a subclass) put into the STAC item it renders what
    the reduced Dataset carries in ``attrs`` (odc-stats hands ``dump`` that Dataset, and
    renders the item from the task alone): an anomaly task's baseline, and properties
    computed with the task (:mod:`odc_ndvi_plugin.item`: the item is then rendered on a
    worker; odc-stats' eodatasets3 writer refuses them). Once per process; only
    odc-stats' own methods are wrapped."""
    from odc.stats.io import S3COGSink

    from .baseline import BASELINE_ATTR
    from .cogs import with_baseline
    from .item import item_properties, refuse_with_eodatasets3

    current = S3COGSink.__dict__.get("dump_with_pystac")
    if getattr(current, "__wrapped_by_odc_ndvi__", False):
        return True
    if not odc_stats_supported() or getattr(current, "__module__", None) != "odc.stats.io":
        _log.info("odc-stats' STAC rendering is not the one this plugin knows: left as it is")
        return False
    original = current
    eodatasets3 = S3COGSink.dump_with_eodatasets3

    def dump_with_pystac(self: Any, task: Any, proc: Any, ds: Any, aux: Any = None):
        baseline = ds.attrs.get(BASELINE_ATTR)
        if baseline:
            task = with_baseline(task, baseline)
        if item_properties(ds):
            return _dump_with_item_properties(self, task, proc, ds, aux)
        return original(self, task, proc, ds, aux)

    def dump_with_eodatasets3(self: Any, task: Any, proc: Any, ds: Any, aux: Any = None):
        refuse_with_eodatasets3(ds)
        return eodatasets3(self, task, proc, ds, aux)

    dump_with_pystac.__wrapped_by_odc_ndvi__ = True  # type: ignore[attr-defined]
    S3COGSink.dump_with_pystac = dump_with_pystac
    S3COGSink.dump_with_eodatasets3 = dump_with_eodatasets3
    return True


def _render_item(meta: dict[str, Any], names: tuple[str, ...], *values: Any) -> bytes:
    from odc.stats.io import dump_json

    doc = copy.deepcopy(meta)
    doc.setdefault("properties", {}).update(zip(names, values, strict=True))
    return dump_json(doc).encode("utf8")


def _item_write_result(url: str, data: bytes) -> Any:
    from odc.stats.io import WriteResult, mk_sha1

    return WriteResult(url, mk_sha1(data), None)


def _dump_with_item_properties(sink: Any, task: Any, proc: Any, ds: Any, aux: Any = None) -> Any:
    """odc-stats' PySTAC write of one task (COGs, ``.sha1``, STAC item last) with the
    item rendered on a worker, ``ds``'s extra properties (:func:`item_properties`) in
    its ``properties``. The ``.sha1`` lists the item's digest, as odc-stats' does."""
    from odc.stats.io import _sha1_digest

    from .item import item_properties

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


def cogs_encoded_on_workers() -> bool:
    """Whether :func:`encode_cogs_on_workers` has patched odc-stats in this process."""
    from odc.stats.io import S3COGSink

    return bool(getattr(S3COGSink.__dict__.get("_ds_to_cog"), "__wrapped_by_odc_ndvi__", False))
