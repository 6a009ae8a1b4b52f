"""The odc-stats run config: every key checked, unknown keys named."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from odc.stats.model import TaskRunnerConfig

from .identity import check_product_block, split_drop_in

__all__ = ["CLI_ONLY_KEYS", "RUN_CONFIG_KEYS", "load_run_config"]


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


def load_run_config(
    config: dict[str, Any], **overrides: Any
) -> tuple[TaskRunnerConfig, dict[str, Any]]:
    """Validate an odc-stats run config mapping; unknown keys are an error naming the key.

    Returns the TaskRunnerConfig and the CLI-only extras (dataset_filters, apply_eodatasets3).
    A dea-config style file may also hold save-tasks keys: they are ignored (one info line).
    """
    config, _ = split_drop_in(config)
    unknown = sorted(set(config) - set(RUN_CONFIG_KEYS) - set(CLI_ONLY_KEYS))
    if unknown:
        raise ValueError(
            f"run config: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(RUN_CONFIG_KEYS + CLI_ONLY_KEYS)}"
        )
    merged = {k: v for k, v in config.items() if k in RUN_CONFIG_KEYS}
    merged.update({k: v for k, v in overrides.items() if v is not None and v != ""})
    check_product_block(merged.get("product"))
    if not merged.get("plugin"):
        raise ValueError("run config: 'plugin' is required (e.g. odc_ndvi_plugin.NDVISeasonal)")
    if not merged.get("output_location"):
        raise ValueError(
            "run config: 'output_location' is required (file:///path or s3://bucket/prefix)"
        )
    scheme = urlparse(str(merged["output_location"])).scheme
    if scheme not in ("file", "s3"):
        raise ValueError(
            f"run config: output_location {merged['output_location']!r} must start with file:// or s3://"
        )
    filedb = str(merged.get("filedb") or "")
    if filedb and "://" not in filedb and not Path(filedb).exists():
        raise ValueError(f"task db {filedb!r} does not exist (make it with odc-stats save-tasks)")
    extras = {k: config[k] for k in CLI_ONLY_KEYS if k in config}
    return TaskRunnerConfig(**merged), extras
