"""Redaction of secrets: moved to the core (:mod:`odc_ndvi_plugin._redact`), which every
layer uses; this module re-exports it for code that imports the old path."""

from .._redact import (
    MASK,
    MIN_SECRET_LENGTH,
    NON_SECRET_SUFFIXES,
    SECRET_NAME_PARTS,
    RedactingFilter,
    is_secret_name,
    redact_mapping,
    redact_text,
    redact_url,
    redact_value,
    register_secret,
    registered_secrets,
    secret_values_from_environ,
)

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "NON_SECRET_SUFFIXES",
    "SECRET_NAME_PARTS",
    "RedactingFilter",
    "is_secret_name",
    "redact_mapping",
    "redact_text",
    "redact_url",
    "redact_value",
    "register_secret",
    "registered_secrets",
    "secret_values_from_environ",
]
