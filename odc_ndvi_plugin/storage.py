"""Where outputs and inputs live: ``file://`` or ``s3://`` URLs, and the one way to get an
AWS client for them (:func:`s3_client`, :func:`sqs_resource`: boto3's default credential
chain and endpoint settings, e.g. ``AWS_ENDPOINT_URL`` for a local S3).

The commit protocol's stores (``ops/commit.py``: ``Store`` with a local and an S3
backend) and the readers here share these; boto3 is imported only when S3 is used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

__all__ = ["is_s3", "s3_client", "split_s3_url", "sqs_resource"]


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key/path`` -> ``("bucket", "key/path")``."""
    parsed = urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client() -> Any:
    """A new boto3 S3 client (creating one costs ~0.4 s: keep it for a run, not a call)."""
    import boto3

    return boto3.client("s3")


def sqs_resource() -> Any:
    """A new boto3 SQS resource."""
    import boto3

    return boto3.resource("sqs")
