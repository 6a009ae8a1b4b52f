"""Whose outputs these are: the run config's ``product`` block, checked before any work.

odc-stats fills every identity field a run config leaves out with Digital Earth
Australia's (``product_for_plugin``): the STAC items then say ``odc:producer: ga.gov.au``,
link to ``collections.dea.ga.gov.au`` and DEA's explorer. A run config must therefore
name the producer, collections site and explorer path itself (DEA's own values are fine
when written down: then it says so).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEA_DEFAULTS",
    "IDENTITY_KEYS",
    "SAVE_TASKS_KEYS",
    "check_product_block",
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


def _product_keys() -> tuple[str, ...]:
    from odc.stats.model import product_for_plugin

    params = inspect.signature(product_for_plugin).parameters
    return tuple(name for name in params if name not in ("plugin", "location"))


def check_product_block(product: Any) -> None:
    """ValueError (one line) for a ``product`` block that is not a mapping, has a key
    odc-stats does not know, or leaves the publisher's identity to DEA's defaults."""
    if product is None:
        product = {}
    if not isinstance(product, Mapping):
        raise ValueError(f"run config: product: expected a mapping, got {product!r}")
    allowed = _product_keys()
    unknown = sorted(set(product) - set(allowed))
    if unknown:
        raise ValueError(
            f"run config: product: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    missing = [k for k in IDENTITY_KEYS if not product.get(k)]
    if missing:
        leaked = ", ".join(f"{k}: {DEA_DEFAULTS[k]}" for k in missing)
        raise ValueError(
            f"run config: product.{', product.'.join(missing)} not set: odc-stats would publish "
            f"these outputs under DEA's identity ({leaked}); set your organisation's "
            "(or DEA's, explicitly)"
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
