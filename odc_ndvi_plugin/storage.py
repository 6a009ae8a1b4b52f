"""Where outputs and inputs live: ``file://`` or ``s3://`` URLs, and the one way to get an
AWS client for them (:func:`s3_client`, :func:`sqs_resource`: boto3's default credential
chain and endpoint settings, e.g. ``AWS_ENDPOINT_URL`` for a local S3).

:class:`Store` is what the commit protocol (``ops/commit.py``) and the completeness
checks need of where outputs live, with one backend per scheme (:class:`LocalStore`,
:class:`S3Store`); :func:`store_for` picks it. boto3 is imported only when S3 is used.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

__all__ = [
    "LocalStore",
    "S3Store",
    "Store",
    "is_s3",
    "s3_client",
    "split_s3_url",
    "sqs_resource",
    "store_for",
    "write_local",
]


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


def write_local(data: bytes, path: str) -> None:
    """``data`` into the file ``path`` (folders made), synced to disk."""
    target = Path(path)
    for last_try in (False, True):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = open(target, "wb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            # another attempt's commit removed an empty staging folder between our mkdir
            # and open (it only removes empty ones): make it again, once
            if last_try:
                raise
            continue
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return


class Store(Protocol):
    """What the commit rule and the completeness checks need of where outputs live; one
    backend per URL scheme (:class:`LocalStore` ``file://``, :class:`S3Store` ``s3://``; :func:`store_for`)."""

    def exists(self, url: str) -> bool: ...
    def size(self, url: str) -> int: ...
    def read(self, url: str) -> bytes: ...
    def listing(self, folder_url: str) -> dict[str, int]: ...
    def remove(self, url: str) -> None: ...
    def move(self, src: str, dst: str) -> None: ...
    def put(self, data: bytes, url: str) -> None: ...


class LocalStore:
    """``file://`` URLs: renames within one file system."""

    @staticmethod
    def exists(url: str) -> bool:
        return Path(urlparse(url).path).exists()

    @staticmethod
    def size(url: str) -> int:
        return Path(urlparse(url).path).stat().st_size

    @staticmethod
    def read(url: str) -> bytes:
        return Path(urlparse(url).path).read_bytes()

    @staticmethod
    def listing(folder_url: str) -> dict[str, int]:
        """File name -> size of the files in a folder (one directory read)."""
        try:
            with os.scandir(urlparse(folder_url).path) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except FileNotFoundError:
            return {}

    @staticmethod
    def remove(url: str) -> None:
        Path(urlparse(url).path).unlink(missing_ok=True)

    @staticmethod
    def move(src: str, dst: str) -> None:
        target = Path(urlparse(dst).path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(urlparse(src).path, target)

    @staticmethod
    def put(data: bytes, url: str) -> None:
        """Whole or not at all: a temp name beside the target, then a rename."""
        target = Path(urlparse(url).path)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            write_local(data, str(tmp))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class S3Store:
    """``s3://`` URLs with a worker's boto3 client; a move is a server-side copy + delete."""

    def __init__(self, s3: Any, put_args: dict[str, str]):
        self.s3 = s3
        self.put_args = put_args

    def exists(self, url: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_url(url)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def size(self, url: str) -> int:
        bucket, key = split_s3_url(url)
        return int(self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"])

    def read(self, url: str) -> bytes:
        bucket, key = split_s3_url(url)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def listing(self, folder_url: str) -> dict[str, int]:
        """Object name -> size directly under a prefix (one LIST request per 1000)."""
        bucket, prefix = split_s3_url(folder_url.rstrip("/") + "/")
        out = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"][len(prefix) :]] = int(obj["Size"])
        return out

    def remove(self, url: str) -> None:
        bucket, key = split_s3_url(url)
        self.s3.delete_object(Bucket=bucket, Key=key)

    def move(self, src: str, dst: str) -> None:
        (sb, sk), (db, dk) = split_s3_url(src), split_s3_url(dst)
        acl = {"ACL": self.put_args["ACL"]} if "ACL" in self.put_args else {}
        self.s3.copy_object(Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk}, **acl)
        self.s3.delete_object(Bucket=sb, Key=sk)

    def put(self, data: bytes, url: str) -> None:
        bucket, key = split_s3_url(url)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, **self.put_args)


def store_for(url: str, *, s3: Any = None, put_args: dict[str, str] | None = None) -> Store:
    """The store of ``url``'s scheme: :class:`S3Store` (with ``s3``, a boto3 client, or a
    new one; ``put_args``: ACL, content type) for ``s3://``, else :class:`LocalStore`."""
    if is_s3(url):
        return S3Store(s3_client() if s3 is None else s3, dict(put_args or {}))
    return LocalStore()
