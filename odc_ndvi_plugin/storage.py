"""Where outputs and inputs live: ``file://`` or ``s3://`` URLs, and the one way to get an
AWS client for them (:func:`s3_client`, :func:`sqs_resource`: boto3's default credential
chain and endpoint settings, e.g. ``AWS_ENDPOINT_URL`` for a local S3).

The one place that tells ``file://`` from ``s3://`` (tests/test_layers.py holds every other
module to it): :class:`Store` is what the commit protocol, the staging sweep, the output
probe, the completeness checks and the readers of finished outputs (mosaic, baseline) need
of where outputs live, with one backend per scheme (:class:`LocalStore`, :class:`S3Store`);
:func:`store_for` picks it. :func:`is_s3`, :func:`is_store_url`, :func:`as_url`,
:func:`local_path` and :func:`path_or_url` answer the questions other modules ask of a URL.
boto3 is imported only when S3 is used.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

__all__ = [
    "LocalStore",
    "S3Store",
    "Store",
    "as_url",
    "is_s3",
    "is_store_url",
    "local_path",
    "path_or_url",
    "s3_client",
    "split_s3_url",
    "sqs_resource",
    "store_for",
    "write_local",
]


_S3, _FILE = "s3://", "file://"


def is_s3(url: str) -> bool:
    return url.startswith(_S3)


def is_store_url(url: str) -> bool:
    """Whether outputs can live at ``url``: a ``file://`` or ``s3://`` URL."""
    return url.startswith((_FILE, _S3))


def _path(url: str) -> Path:
    """The file system path of a ``file://`` URL, percent-decoded."""
    return Path(unquote(urlparse(url).path))


def local_path(location: str) -> Path | None:
    """The file system path of a ``file://`` URL (percent-decoded) or a plain path; None
    for any other URL."""
    if location.startswith(_FILE):
        return _path(location)
    return None if "://" in location else Path(location)


def as_url(location: str) -> str:
    """``location`` as a URL: a plain path becomes an absolute ``file://`` URL."""
    return location if "://" in location else Path(location).resolve().as_uri()


def path_or_url(url: str) -> str:
    """What rasterio/GDAL open for ``url``: a ``file://`` URL's path, any other unchanged."""
    return str(local_path(url)) if url.startswith(_FILE) else url


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
    """What the commit rule, the staging sweep, the completeness checks and the output
    readers need of where outputs live; one backend per URL scheme (:class:`LocalStore`
    ``file://``, :class:`S3Store` ``s3://``; :func:`store_for`). A folder URL has no
    trailing slash."""

    def exists(self, url: str) -> bool: ...
    def size(self, url: str) -> int: ...
    def read(self, url: str) -> bytes: ...
    def listing(self, folder_url: str) -> dict[str, int]:
        """File name -> size of the files directly in a folder."""

    def walk(self, folder_url: str, suffix: str) -> Iterator[str]:
        """URLs of the files under a folder (at any depth) whose name ends with
        ``suffix``, sorted; files under a hidden folder (``.staging/``...) are left out."""

    def newest_by_child(self, folder_url: str) -> dict[str, float]:
        """Each entry of a folder -> the newest modification time (epoch seconds) of
        anything under it; {} for a missing folder."""

    def remove(self, url: str) -> None: ...
    def remove_tree(self, folder_url: str) -> None:
        """Everything under a folder, gone (nothing there is no error)."""

    def prune_empty(self, folder_url: str, top_url: str) -> None:
        """Remove ``folder_url`` and its parents up to ``top_url`` while they are empty
        (file systems; S3 has no folders)."""

    def move(self, src: str, dst: str) -> None: ...
    def put(self, data: bytes, url: str) -> None: ...


class LocalStore:
    """``file://`` URLs: renames within one file system."""

    @staticmethod
    def exists(url: str) -> bool:
        return _path(url).exists()

    @staticmethod
    def size(url: str) -> int:
        return _path(url).stat().st_size

    @staticmethod
    def read(url: str) -> bytes:
        return _path(url).read_bytes()

    @staticmethod
    def listing(folder_url: str) -> dict[str, int]:
        """File name -> size of the files in a folder (one directory read)."""
        try:
            with os.scandir(_path(folder_url)) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except FileNotFoundError:
            return {}

    @staticmethod
    def walk(folder_url: str, suffix: str) -> Iterator[str]:
        root = _path(folder_url)
        if not root.is_dir():
            raise ValueError(f"{folder_url}: not a directory")
        for path in sorted(root.rglob(f"*{suffix}")):
            if not any(part.startswith(".") for part in path.relative_to(root).parts):
                yield path.resolve().as_uri()

    @staticmethod
    def newest_by_child(folder_url: str) -> dict[str, float]:
        try:
            children = list(_path(folder_url).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return {}
        newest = {}
        for child in children:
            try:
                newest[child.name] = max(
                    (p.stat().st_mtime for p in child.rglob("*")), default=child.stat().st_mtime
                )
            except OSError:
                continue  # being removed meanwhile
        return newest

    @staticmethod
    def remove(url: str) -> None:
        _path(url).unlink(missing_ok=True)

    @staticmethod
    def remove_tree(folder_url: str) -> None:
        path = _path(folder_url)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    @staticmethod
    def prune_empty(folder_url: str, top_url: str) -> None:
        folder, top = _path(folder_url), _path(top_url)
        while folder == top or top in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (another attempt is staging there) or gone
            folder = folder.parent

    @staticmethod
    def move(src: str, dst: str) -> None:
        target = _path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(_path(src), target)

    @staticmethod
    def put(data: bytes, url: str) -> None:
        """Whole or not at all: a temp name beside the target, then a rename."""
        target = _path(url)
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
        prefix_len = len(split_s3_url(folder_url.rstrip("/") + "/")[1])
        return {
            key[prefix_len:]: int(obj["Size"])
            for key, obj in self._objects(folder_url, Delimiter="/")
        }

    def _objects(self, folder_url: str, **list_args: str) -> Iterator[tuple[str, dict]]:
        """(key, listing entry) of every object under a folder (``Delimiter="/"``: only
        those directly in it)."""
        bucket, prefix = split_s3_url(folder_url.rstrip("/") + "/")
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, **list_args
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"], obj

    def walk(self, folder_url: str, suffix: str) -> Iterator[str]:
        bucket, prefix = split_s3_url(folder_url.rstrip("/") + "/")
        keys = []
        for key, _ in self._objects(folder_url):
            hidden = any(part.startswith(".") for part in key[len(prefix) :].split("/"))
            if key.endswith(suffix) and not hidden:
                keys.append(key)
        for key in sorted(keys):
            yield f"{_S3}{bucket}/{key}"

    def newest_by_child(self, folder_url: str) -> dict[str, float]:
        """One listing; an object's age is its ``LastModified`` (S3's clock)."""
        prefix_len = len(split_s3_url(folder_url.rstrip("/") + "/")[1])
        newest: dict[str, float] = {}
        for key, obj in self._objects(folder_url):
            child = key[prefix_len:].split("/", 1)[0]
            modified = obj["LastModified"].timestamp()
            newest[child] = max(newest.get(child, modified), modified)
        return newest

    def remove(self, url: str) -> None:
        bucket, key = split_s3_url(url)
        self.s3.delete_object(Bucket=bucket, Key=key)

    def remove_tree(self, folder_url: str) -> None:
        """Batch deletes (DeleteObjects takes 1000 keys a request)."""
        bucket = split_s3_url(folder_url)[0]
        keys = [key for key, _ in self._objects(folder_url)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            got = self.s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if got.get("Errors"):
                first = got["Errors"][0]
                raise OSError(
                    f"could not remove {_S3}{bucket}/{first.get('Key')}: {first.get('Code')} "
                    f"{first.get('Message', '')}".rstrip()
                )

    @staticmethod
    def prune_empty(folder_url: str, top_url: str) -> None:
        return None  # S3 has no folders

    def move(self, src: str, dst: str) -> None:
        (sb, sk), (db, dk) = split_s3_url(src), split_s3_url(dst)
        acl = {"ACL": self.put_args["ACL"]} if "ACL" in self.put_args else {}
        self.s3.copy_object(Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk}, **acl)
        self.s3.delete_object(Bucket=sb, Key=sk)

    def put(self, data: bytes, url: str) -> None:
        bucket, key = split_s3_url(url)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, **self.put_args)


def store_for(
    url: str,
    *,
    s3: Any = None,
    s3_factory: Callable[[], Any] = s3_client,
    put_args: dict[str, str] | None = None,
) -> Store:
    """The store of ``url``'s scheme: :class:`S3Store` for ``s3://`` (with ``s3``, a boto3
    client, or one from ``s3_factory``, called only then; ``put_args``: ACL, content type),
    else :class:`LocalStore` (which has no use for ``put_args``)."""
    if is_s3(url):
        return S3Store(s3_factory() if s3 is None else s3, dict(put_args or {}))
    return LocalStore()
