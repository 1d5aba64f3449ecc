"""
The files an ingest reads: finding them under a source and fingerprinting their content, without Airflow.

A source is a local file, directory or glob, or an ``s3://`` key, prefix or glob. Directory and prefix
listings skip files whose path below the source has a part starting with ``.`` or ``_`` (``_SUCCESS``,
``.crc``). A source that names nothing raises :class:`ValueError` saying what is missing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.formats import canonical_json
from airflow_mlops.data.snapshots import SHA256_OF_BYTES, SHA256_OF_S3_ETAG
from airflow_mlops.data.storage import has_glob, is_s3, local_path, split_s3

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from airflow_mlops.data.storage import Storage, TransferProgress

_CHUNK = 1 << 20


def normalize_source(source: str) -> str:
    """The source as the ingest records it: S3 URIs as given, local paths absolute."""
    source = source.strip()
    return source if is_s3(source) else os.path.abspath(os.path.expanduser(str(local_path(source))))


def visible_files(uris: Sequence[str], base: str) -> list[str]:
    """Drop files whose path below *base* has a part starting with '.' or '_' (``_SUCCESS``, ``.crc``)."""
    prefix = base.rstrip("/") + "/"
    out = []
    for uri in uris:
        relative = uri[len(prefix) :] if uri.startswith(prefix) else uri.rsplit("/", 1)[-1]
        if not any(part.startswith((".", "_")) for part in relative.split("/")):
            out.append(uri)
    return out


def resolve_sources(storage: Storage, source: str) -> list[str]:
    """
    The files *source* names, sorted by URI.

    :raises ValueError: if it names no file (no match, empty directory, missing key or path, no bucket).
    :raises FileNotFoundError: if a listing fails because the bucket does not exist.
    """
    if has_glob(source) and (is_s3(source) or not Path(source).exists()):
        uris = storage.glob(source)
        if not uris:
            raise ValueError(f"no files match {source}")
        return sorted(uris)
    if is_s3(source):
        bucket, key = split_s3(source)
        if not bucket:
            raise ValueError(f"source {source!r} names no bucket")
        if key and not key.endswith("/") and storage.exists(source):
            return [source]
        uris = visible_files(storage.list_uris(source), source)
        if not uris:
            raise ValueError(
                f"{source} does not exist (no object with that key and no data objects under it as a prefix)"
            )
        return sorted(uris)
    path = Path(source)
    if path.is_file():
        return [source]
    if path.is_dir():
        uris = visible_files(storage.list_uris(source), source)
        if not uris:
            raise ValueError(f"directory {source} holds no data files")
        return sorted(uris)
    raise ValueError(f"source {source} does not exist")


@dataclass(frozen=True)
class SourceFile:
    """
    One file of a source, as a snapshot manifest records it (``source_files``).

    :param uri: Where the file is (local path or ``s3://`` URI).
    :param local: A local copy of it (the file itself when local).
    :param size: Size in bytes.
    :param sha256: Hex SHA-256 of its bytes.
    :param etag: Its S3 ETag (None for local files).
    :param mtime: Its modification time (POSIX seconds), if known.
    """

    uri: str
    local: Path
    size: int
    sha256: str
    etag: str | None = None
    mtime: float | None = None

    def describe(self) -> dict[str, Any]:
        """The manifest entry: ``{"uri", "bytes", "sha256"}`` plus ``etag`` and ``mtime`` when known."""
        out: dict[str, Any] = {"uri": self.uri, "bytes": self.size, "sha256": self.sha256}
        if self.etag:
            out["etag"] = self.etag
        if self.mtime is not None:
            out["mtime"] = self.mtime
        return out


def fingerprint_file(uri: str, local: Path, etag: str | None = None, mtime: float | None = None) -> SourceFile:
    """
    Hash the local copy *local* of *uri*.

    :raises ValueError: if the file is empty.
    """
    digest = hashlib.sha256()
    size = 0
    with local.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size == 0:
        raise ValueError(f"{uri} is empty (0 bytes)")
    return SourceFile(uri=uri, local=local, size=size, sha256=digest.hexdigest(), etag=etag, mtime=mtime)


def fetch_sources(
    storage: Storage,
    source: str,
    tmp: Path,
    progress: Callable[[str, int], TransferProgress] | None = None,
) -> list[SourceFile]:
    """
    Resolve *source*, download S3 objects under the local folder *tmp*, and fingerprint every file.

    :param progress: Builds the progress callback of one download from ``(what, total bytes)``.
    :raises ValueError: if the source names no file or a file is empty.
    :raises FileNotFoundError: if a file or bucket disappears while it is read.
    """
    files = []
    for index, uri in enumerate(resolve_sources(storage, source)):
        head = storage.head(uri)
        if is_s3(uri):
            callback = progress(f"Download {uri}", head["size"]) if progress else None
            local = storage.download_file(uri, tmp / f"{index:05d}-{uri.rsplit('/', 1)[-1]}", callback)
            if callback is not None:
                callback.done()
        else:
            local = Path(uri)
        files.append(fingerprint_file(uri, local, head["etag"], head["mtime"]))
    return files


def combined_sha256(files: Sequence[SourceFile]) -> str:
    """SHA-256 of the source bytes: one file's own hash, or that of all files concatenated in URI order."""
    if len(files) == 1:
        return files[0].sha256
    digest = hashlib.sha256()
    for file in files:
        with file.local.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def frame_sha256(df: pd.DataFrame) -> str:
    """Content hash of rows (a query result): column names and dtypes plus pandas' per-row hashes."""
    import pandas as pd

    digest = hashlib.sha256(
        canonical_json({str(c): str(t) for c, t in df.dtypes.items()}).encode()
        + "\n".join(map(str, df.columns)).encode()
    )
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def object_sha256(head: dict[str, Any]) -> tuple[str, str]:
    """
    Content hash of an S3 object from its ``head`` alone, and what it is the hash of.

    The object's full-object ``ChecksumSHA256`` when the store keeps one (``"bytes"``), else the SHA-256
    of its ETag and size (``"s3-etag+size"``).
    """
    if head.get("sha256"):
        return str(head["sha256"]), SHA256_OF_BYTES
    basis = f"s3-etag:{head['etag']}\nsize:{head['size']}"
    return hashlib.sha256(basis.encode()).hexdigest(), SHA256_OF_S3_ETAG
