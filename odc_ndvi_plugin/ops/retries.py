"""Which task failures deserve another attempt in the same run: the rule lives in the
core (:mod:`odc_ndvi_plugin._transient`, shared with the loader's read retries); this
module re-exports it for code that imports the old path."""

from __future__ import annotations

from .._transient import RETRYABLE_ERROR_TYPES, retry_reason

__all__ = ["RETRYABLE_ERROR_TYPES", "retry_reason"]
