"""
Read and write local paths and ``s3://`` URIs with one small interface, without Airflow.

:class:`Storage` takes an optional boto3 S3 client; without one, a default client is built from the standard
AWS environment (credential chain, ``AWS_REGION``, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for
S3-compatible stores). Airflow code builds the client from an Airflow connection instead
(:class:`airflow_mlops.hooks.storage.StorageHook`).

Local paths may be given plainly or as ``file://`` URIs. A missing file or object raises
:class:`FileNotFoundError` for both kinds of location.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_GLOB_CHARS = "*?["
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def is_s3(uri: str) -> bool:
    """Whether *uri* names an S3 (or S3-compatible) location."""
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """Return ``(bucket, key)`` of an ``s3://bucket/key`` URI."""
    parts = urlsplit(uri)
    return parts.netloc, parts.path.lstrip("/")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (a plain path or ``file://...``)."""
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def has_glob(uri: str) -> bool:
    """Whether *uri* contains shell-style wildcards (``*``, ``?``, ``[``)."""
    return any(char in uri for char in _GLOB_CHARS)


def join(base: str, *parts: str) -> str:
    """Join URI or path segments with ``/``."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def _is_not_found(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in _NOT_FOUND_CODES


def _atomic_local_write(dest: Path, write: Any) -> None:
    """Write *dest* through a temporary sibling and an atomic rename, so readers never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class Storage:
    """
    Local filesystem and S3 behind one interface.

    :param s3_client: A boto3 S3 client to use for ``s3://`` URIs (built lazily from the environment if None).
    """

    def __init__(self, s3_client: Any | None = None) -> None:
        self._s3_client = s3_client

    @property
    def s3(self) -> Any:
        """The boto3 S3 client (built from the standard AWS environment on first use if none was given)."""
        if self._s3_client is None:
            import boto3

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            self._s3_client = boto3.client("s3", endpoint_url=endpoint or None)
        return self._s3_client

    def exists(self, uri: str) -> bool:
        """Whether the file (local) or object (S3) at *uri* exists."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                self.s3.head_object(Bucket=bucket, Key=key)
            except Exception as err:
                if _is_not_found(err):
                    return False
                raise
            return True
        return local_path(uri).exists()

    def size(self, uri: str) -> int:
        """Size in bytes of the file or object at *uri*; :class:`FileNotFoundError` if there is none."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                return int(self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {uri}") from err
                raise
        return local_path(uri).stat().st_size

    def read_bytes(self, uri: str) -> bytes:
        """Whole content of *uri* (meant for small files such as manifests)."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {uri}") from err
                raise
        return local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write *data* to *uri*; local writes are atomic (temporary file + rename)."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
            return
        _atomic_local_write(local_path(uri), lambda tmp: tmp.write_bytes(data))

    def download_file(self, uri: str, dest: str | Path) -> Path:
        """Copy *uri* to the local file *dest* (S3: boto3's managed, multipart-capable transfer)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                self.s3.download_file(bucket, key, str(dest))
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {uri}") from err
                raise
        else:
            shutil.copyfile(local_path(uri), dest)
        return dest

    def upload_file(self, source: str | Path, uri: str) -> None:
        """Copy the local file *source* to *uri* (S3: managed transfer; local: atomic copy)."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.upload_file(str(source), bucket, key)
            return
        _atomic_local_write(local_path(uri), lambda tmp: shutil.copyfile(source, tmp))

    def list_uris(self, prefix: str) -> list[str]:
        """
        Every file under the directory *prefix*, recursively, sorted.

        For S3, *prefix* is read as a folder (``s3://b/data`` lists ``s3://b/data/...``, not
        ``s3://b/data2``) and folder-marker objects (keys ending in ``/``) are skipped. A local *prefix* that
        is a file lists just that file.
        """
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            key = key.rstrip("/") + "/" if key.strip("/") else ""
            return [uri for uri in self._list_s3(bucket, key) if not uri.endswith("/")]
        root = local_path(prefix)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []

    def glob(self, pattern: str) -> list[str]:
        """
        Files matching the shell-style *pattern*, sorted.

        Local patterns follow :func:`glob.glob` (``**`` crosses directories). S3 patterns are matched with
        :func:`fnmatch.fnmatchcase` against whole keys, so ``*`` also crosses ``/``.
        """
        if is_s3(pattern):
            if not has_glob(pattern):
                return [pattern] if self.exists(pattern) else []
            bucket, key_pattern = split_s3(pattern)
            first = min(key_pattern.find(c) for c in _GLOB_CHARS if c in key_pattern)
            candidates = self._list_s3(bucket, key_pattern[:first])
            return [
                uri
                for uri in candidates
                if not uri.endswith("/") and fnmatch.fnmatchcase(split_s3(uri)[1], key_pattern)
            ]
        return sorted(p for p in _glob.glob(str(local_path(pattern)), recursive=True) if Path(p).is_file())

    def _list_s3(self, bucket: str, prefix: str) -> list[str]:
        out: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        except Exception as err:
            if _is_not_found(err):
                raise FileNotFoundError(f"No bucket {bucket!r} (listing s3://{bucket}/{prefix})") from err
            raise
        return sorted(out)
