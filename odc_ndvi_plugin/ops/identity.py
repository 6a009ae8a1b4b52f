"""Whose outputs these are: the run config's ``product`` block, checked before any work.

odc-stats fills every identity field a run config leaves out with Digital Earth
Australia's (``product_for_plugin``): the STAC items then say ``odc:producer: ga.gov.au``,
link to ``collections.dea.ga.gov.au`` and DEA's explorer. A run config must therefore
name the producer, collections site and explorer path itself (DEA's own values are fine
when written down: then it says so).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEA_DEFAULTS",
    "IDENTITY_KEYS",
    "SAVE_TASKS_KEYS",
    "check_identity",
    "split_drop_in",
]

_log = logging.getLogger(__name__)

#: product-block keys that odc-stats would otherwise fill with DEA's identity
IDENTITY_KEYS = ("producer", "collections_site", "explorer_path")
#: what odc-stats 1.9.7 publishes for each when the key is missing
DEA_DEFAULTS = {
    "producer": "ga.gov.au",
    "collections_site": "collections.dea.ga.gov.au",
    "explorer_path": "https://explorer.dea.ga.gov.au",
}
#: keys of an odc-stats save-tasks config: a dea-config style single file holds both
SAVE_TASKS_KEYS = (
    "grid",
    "frequency",
    "complevel",
    "gqa",
    "input_products",
    "dataset_filter",
    "ignore_time",
    "optional_products",
)


def check_identity(product: Mapping[str, Any], where: str = "run config") -> None:
    """ConfigError (one line) for a ``product`` block that leaves the publisher's identity
    to odc-stats' defaults, i.e. DEA's (its keys and types are checked with the rest of
    the run config)."""
    from ..errors import ConfigError

    missing = [k for k in IDENTITY_KEYS if not product.get(k)]
    if missing:
        leaked = ", ".join(f"{k}: {DEA_DEFAULTS[k]}" for k in missing)
        raise ConfigError(
            where,
            f"product.{', product.'.join(missing)} not set: odc-stats would publish these "
            f"outputs under DEA's identity ({leaked}); set your organisation's (or DEA's, "
            "explicitly)",
        )


def split_drop_in(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run config, save-tasks keys) of a dea-config style single file; the save-tasks keys
    are ignored by a run, as odc-stats does, with one info line."""
    save_tasks = {k: config[k] for k in SAVE_TASKS_KEYS if k in config}
    if save_tasks:
        _log.info(
            "run config: ignoring the save-tasks key(s) %s (they are for odc-stats save-tasks)",
            ", ".join(save_tasks),
        )
    return {k: v for k, v in config.items() if k not in SAVE_TASKS_KEYS}, save_tasks
