"""The odc-stats run config: every key checked (name, type, range), unknown keys named.

Errors are :class:`~odc_ndvi_plugin._validate.ConfigError` lines naming the key path,
e.g. ``run config: threads: expected an integer >= 1 or -1 (-1 = all cores), got 'many'``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from odc.stats.model import TaskRunnerConfig, product_for_plugin

from .._validate import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    shown,
)
from ..storage import is_store_url
from .cog_options import check_cog_opts
from .identity import check_identity, split_drop_in

__all__ = ["CLI_ONLY_KEYS", "RUN_CONFIG_KEYS", "S3_CANNED_ACLS", "load_run_config"]

WHERE = "run config"

#: keys of an odc-stats run config that TaskRunnerConfig takes
RUN_CONFIG_KEYS = (
    "product",
    "filedb",
    "plugin",
    "threads",
    "memory_limit",
    "output_location",
    "s3_acl",
    "overwrite",
    "max_processing_time",
    "heartbeat_filepath",
    "plugin_config",
    "cog_opts",
    "aws_unsigned",
    "job_queue_max_lease",
    "renew_safety_margin",
    "future_poll_interval",
)
#: keys odc-stats' CLI reads from the same file beside TaskRunnerConfig
CLI_ONLY_KEYS = ("dataset_filters", "apply_eodatasets3")

#: S3 canned ACLs (what odc-stats passes as ``ACL=`` to ``put_object``)
S3_CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)


def _product_keys() -> tuple[str, ...]:
    """The ``product:`` keys odc-stats' ``product_for_plugin`` takes (its keyword-only
    parameters: one place for that fact)."""
    params = inspect.signature(product_for_plugin).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_product(value: Any, where: str) -> None:
    check_mapping(value, where)
    check_keys(value, _product_keys(), where)
    for key in ("name", "short_name", "version", "product_family", "region_code_format"):
        if key in value:
            check_str(value[key], f"{where}.{key}")
    if "properties" in value and value["properties"] is not None:
        check_mapping(value["properties"], f"{where}.properties")


def _check_memory_limit(value: Any, where: str) -> None:
    if value == "" or value is None:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return
    from dask.utils import parse_bytes

    try:
        ok = isinstance(value, str) and parse_bytes(value) > 0
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(where, f"expected a size like '4GiB' or '3500MB', got {shown(value)}")


def _check_dataset_filters(value: Any, where: str) -> None:
    """odc-stats' ``dataset_filters``: JSON objects of dataset properties, '|' = or."""
    check_str(value, where)
    for part in value.split("|"):
        try:
            doc = json.loads(part)
        except json.JSONDecodeError as err:
            raise ConfigError(
                where,
                f"expected JSON objects separated by '|' like "
                f"'{{\"landsat:wrs_path\": 90}}', got {shown(part)} ({err.msg})",
            ) from None
        if not isinstance(doc, dict):
            raise ConfigError(where, f"expected a JSON object, got {shown(part)}")


def _check_optional_str(value: Any, where: str) -> None:
    if value is not None:
        check_str(value, where)


#: key -> check(value, where); every RUN_CONFIG_KEYS and CLI_ONLY_KEYS entry has one
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "product": _check_product,
    "filedb": lambda v, w: check_str(v, w, empty=True),
    "plugin": check_str,
    "threads": lambda v, w: check_int(v, w, minimum=1, also=(-1,), meaning="-1 = all cores"),
    "memory_limit": _check_memory_limit,
    "output_location": check_str,
    "s3_acl": lambda v, w: v is None or check_choice(v, w, S3_CANNED_ACLS),
    "overwrite": check_bool,
    "max_processing_time": lambda v, w: check_int(v, w, minimum=0, meaning="seconds, 0 = no limit"),
    "heartbeat_filepath": _check_optional_str,
    "plugin_config": lambda v, w: v is None or check_mapping(v, w),
    "cog_opts": check_cog_opts,
    "aws_unsigned": check_bool,
    "job_queue_max_lease": lambda v, w: check_int(v, w, minimum=1, meaning="seconds"),
    "renew_safety_margin": lambda v, w: check_int(v, w, minimum=0, meaning="seconds"),
    "future_poll_interval": lambda v, w: check_number(v, w, positive=True),
    "dataset_filters": _check_dataset_filters,
    "apply_eodatasets3": check_bool,
}


def check_run_config_values(config: Mapping[str, Any], where: str = WHERE) -> None:
    """Names, types and ranges of a run config mapping (no file access)."""
    check_keys(config, RUN_CONFIG_KEYS + CLI_ONLY_KEYS, where)
    for key, value in config.items():
        _CHECKS[key](value, f"{where}: {key}")
    lease = config.get("job_queue_max_lease", TaskRunnerConfig.job_queue_max_lease)
    margin = config.get("renew_safety_margin", TaskRunnerConfig.renew_safety_margin)
    if margin >= lease:
        raise ConfigError(
            f"{where}: renew_safety_margin",
            f"must be smaller than job_queue_max_lease ({lease} s), got {margin}",
        )


def load_run_config(
    config: dict[str, Any], **overrides: Any
) -> tuple[TaskRunnerConfig, dict[str, Any]]:
    """Validate an odc-stats run config mapping (``overrides``: command-line values,
    ``None``/``""`` = not given); any problem is a one-line ``ConfigError``.

    Returns the TaskRunnerConfig and the CLI-only extras (dataset_filters, apply_eodatasets3).
    A dea-config style file may also hold save-tasks keys: they are ignored (one info line).
    """
    check_mapping(config, WHERE)
    config, _ = split_drop_in(config)
    check_run_config_values(config)
    merged = {k: v for k, v in config.items() if k in RUN_CONFIG_KEYS}
    given = {k: v for k, v in overrides.items() if v is not None and v != ""}
    for key, value in given.items():
        _CHECKS[key](value, f"command line: {key}")
    merged.update(given)
    check_identity(merged.get("product") or {}, WHERE)
    if not merged.get("plugin"):
        raise ConfigError(WHERE, "'plugin' is required (e.g. odc_ndvi_plugin.NDVISeasonal)")
    if not merged.get("output_location"):
        raise ConfigError(
            WHERE, "'output_location' is required (file:///path or s3://bucket/prefix)"
        )
    if not is_store_url(str(merged["output_location"])):
        raise ConfigError(
            WHERE,
            f"output_location {merged['output_location']!r} must start with file:// or s3://",
        )
    filedb = str(merged.get("filedb") or "")
    if filedb and "://" not in filedb and not Path(filedb).exists():
        from ..errors import TaskDbMissing

        raise TaskDbMissing(
            f"task db {filedb!r} does not exist (make it with odc-stats save-tasks)"
        )
    extras = {k: config[k] for k in CLI_ONLY_KEYS if k in config}
    return TaskRunnerConfig(**merged), extras
