"""
The files an ingest reads: where it may read them, what a source names, and their content hash (no Airflow).

A source is a local file, directory or glob, or an object-store (``s3://``, ``gs://``, ``abfs://``...) key,
prefix or glob. Directory and prefix
listings skip files whose path below the source has a part starting with ``.`` or ``_`` (``_SUCCESS``,
``.crc``). A source that names nothing raises :class:`ValueError` saying what is missing.

Sources are confined to allowed locations (:func:`check_source_allowed`, ``[mlops] allowed_sources``) and
bounded in file count and bytes (:class:`SourceLimits`), both checked from names and listings before any
byte is downloaded or hashed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.formats import canonical_json
from airflow_mlops.data.snapshots import SHA256_OF_BYTES, SHA256_OF_ETAG, SHA256_OF_S3_ETAG, resolve_data_root
from airflow_mlops.data.storage import has_glob, is_local, local_path, scheme, split_bucket, split_conn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from airflow_mlops.data.storage import Storage, TransferProgress

_CHUNK = 1 << 20
#: Defaults of ``[mlops] max_source_files`` and ``[mlops] max_source_bytes``.
DEFAULT_MAX_SOURCE_FILES = 10_000
DEFAULT_MAX_SOURCE_BYTES = 10 * 1024**3
#: Where the example DAGs find their data (a file, folder or glob), and the folder used when it is unset.
SOURCE_PATH_ENV = "MLOPS_SOURCE_PATH"
DEFAULT_DEMO_DATA_DIR = "./data"


class SourceNotAllowedError(ValueError):
    """A source (or a file it names) lies outside every allowed location; retrying cannot help."""


class SourceTooLargeError(ValueError):
    """A source holds more files or bytes than the configured limits allow."""


class SourceChangedError(Exception):
    """
    A source file changed (size or modification time) while it was read: it is still being written.

    Not a :class:`ValueError`: nothing is wrong with the data, and reading it again once it is complete can
    succeed (the ingest raises a retryable error and publishes nothing).
    """


def _folder_of(location: str) -> str:
    """The folder a file, folder or glob location lives in (a file's parent, a folder itself)."""
    location = location.strip()
    if has_glob(location):
        location = location[: min(location.find(c) for c in "*?[" if c in location)].rsplit("/", 1)[0]
    if not is_local(location):
        bucket, key = split_bucket(location)
        key = key.rstrip("/")
        last = key.rsplit("/", 1)[-1]
        if key and not location.endswith("/") and "." in last:  # a key naming a file: its "folder"
            key = key.rsplit("/", 1)[0] if "/" in key else ""
        return f"{scheme(location)}://{bucket}/{key}".rstrip("/")
    path = local_path(location).expanduser()
    return str(path if path.is_dir() or not path.suffix else path.parent)


def default_allowed_sources() -> list[str]:
    """
    What ``[mlops] allowed_sources`` means when empty: the data root and the demo data folder.

    The data root is ``$MLOPS_DATA_ROOT`` (else ``./.mlops-data``); the demo data folder is the folder of
    ``$MLOPS_SOURCE_PATH`` (the example DAGs' data location), else ``./data``.
    """
    demo = os.environ.get(SOURCE_PATH_ENV, "").strip()
    return parse_allowed_sources(
        f"{resolve_data_root()},{_folder_of(demo) if demo else DEFAULT_DEMO_DATA_DIR}"
    )


def parse_allowed_sources(text: str | None) -> list[str]:
    """
    The allowed locations of a comma-separated ``[mlops] allowed_sources`` value, resolved.

    Local roots are made absolute with symlinks resolved; object-store patterns (``s3://``, ``gs://``,
    ``abfs://``...) are kept as written, without a trailing ``/`` or a connection id. Empty text means
    :func:`default_allowed_sources`.
    """
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        return default_allowed_sources()
    out: list[str] = []
    for item in items:
        if not is_local(item):
            resolved = split_conn(item)[1].rstrip("/") or item
        else:
            resolved = os.path.realpath(os.path.expanduser(str(local_path(item))))
        if resolved not in out:
            out.append(resolved)
    return out


def _within(candidate: str, pattern: str) -> bool:
    """Whether *candidate* is *pattern* or lies below it; fnmatch wildcards in *pattern* allowed."""
    base = pattern.rstrip("/")
    if candidate == pattern or candidate.startswith(base + "/") or (not base and candidate.startswith("/")):
        return True
    return has_glob(pattern) and (
        fnmatch.fnmatchcase(candidate, pattern) or fnmatch.fnmatchcase(candidate, base + "/*")
    )


def resolve_location(location: str) -> str:
    """
    *location* as it is matched against the allowed sources.

    Local paths (and globs) are made absolute with ``~``, ``..`` and symlinks resolved; object-store URIs are
    kept as written, without the connection id they may name (it says how to reach the store, not where).

    :raises SourceNotAllowedError: if an object-store URI has a ``.`` or ``..`` part (read as a path by some
        stores and proxies).
    """
    location = location.strip()
    if not is_local(location):
        _, key = split_bucket(location)
        if any(part in (".", "..") for part in key.split("/")):
            raise SourceNotAllowedError(
                f"source {location} has a '.' or '..' part; name the key or prefix itself"
            )
        return split_conn(location)[1]
    return os.path.realpath(os.path.expanduser(str(local_path(location))))


def check_source_allowed(source: str, allowed: Sequence[str]) -> str:
    """
    Return *source* resolved (:func:`resolve_location`) if it lies within an allowed location.

    A local source must lie within one of the local roots of *allowed*, an object-store source within one of
    the patterns of its scheme (``gs://bucket/prefix`` allows that prefix and everything below it; fnmatch
    wildcards match across ``/``).

    :param allowed: Resolved allowed locations (:func:`parse_allowed_sources`).
    :raises SourceNotAllowedError: naming the source, what it resolves to, and the allowed locations.
    """
    resolved = resolve_location(source)
    kind = [item for item in allowed if scheme(item) == scheme(resolved)]
    if any(_within(resolved, item) for item in kind):
        return resolved
    shown = source.strip() if resolved == source.strip() else f"{source.strip()} (resolved: {resolved})"
    raise SourceNotAllowedError(
        f"source {shown} is outside the allowed sources ({', '.join(allowed) or 'none'}); an administrator "
        "allows more in [mlops] allowed_sources"
    )


@dataclass(frozen=True)
class SourceLimits:
    """
    How much one ingest may read (``[mlops] max_source_files`` and ``max_source_bytes``).

    :param max_files: Most files.
    :param max_bytes: Most bytes, summed over the listed sizes.
    """

    max_files: int = DEFAULT_MAX_SOURCE_FILES
    max_bytes: int = DEFAULT_MAX_SOURCE_BYTES

    def check(self, source: str, entries: Sequence[dict[str, Any]]) -> None:
        """
        Raise :class:`SourceTooLargeError` if the listed *entries* of *source* exceed a limit.

        Uses the sizes of the listing only: nothing is downloaded or read.
        """
        if len(entries) > self.max_files:
            raise SourceTooLargeError(
                f"source {source} holds {len(entries)} files, more than [mlops] max_source_files = "
                f"{self.max_files}; ingest a narrower folder, prefix or glob, or raise the limit"
            )
        total = sum(int(entry["size"]) for entry in entries)
        if total > self.max_bytes:
            raise SourceTooLargeError(
                f"source {source} holds {_size(total)} in {len(entries)} file(s), more than [mlops] "
                f"max_source_bytes = {_size(self.max_bytes)}; ingest a narrower folder, prefix or glob, or "
                "raise the limit"
            )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({count} bytes)"
        value /= 1024
    return f"{count} bytes"  # pragma: no cover


def normalize_source(source: str) -> str:
    """The source as the ingest records it: object-store URIs as given, local paths absolute."""
    source = source.strip()
    return source if not is_local(source) else os.path.abspath(os.path.expanduser(str(local_path(source))))


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
    if has_glob(source) and (not is_local(source) or not Path(source).exists()):
        uris = storage.glob(source)
        if not uris:
            raise ValueError(f"no files match {source}")
        return sorted(uris)
    if not is_local(source):
        bucket, key = split_bucket(source)
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


def list_source(storage: Storage, source: str) -> list[dict[str, Any]]:
    """
    The files *source* names with their listed sizes (``{"uri", "size", "etag", "mtime"}``), sorted by URI.

    Listings (one call per 1,000 S3 objects) and at most one ``head`` for a single key; no data is read.

    :raises ValueError: if it names no file (no match, empty directory, missing key or path, no bucket).
    :raises FileNotFoundError: if a listing fails because the bucket does not exist.
    """
    uris = resolve_sources(storage, source)
    if len(uris) == 1 and uris[0] == source:  # one file or key: its own head
        head = storage.head(source)
        return [{"uri": source, **{key: value for key, value in head.items() if key != "sha256"}}]
    if not is_local(source):
        base = source[: min(source.find(c) for c in "*?[" if c in source)] if has_glob(source) else source
        base = base.rsplit("/", 1)[0] if has_glob(source) else base
        wanted = set(uris)
        entries = [entry for entry in storage.list_entries(base) if entry["uri"] in wanted]
        if len(entries) == len(wanted):
            return entries
    out = []
    for uri in uris:
        head = storage.head(uri)
        out.append({"uri": uri, **{key: value for key, value in head.items() if key != "sha256"}})
    return out


def check_files_allowed(entries: Sequence[dict[str, Any]], allowed: Sequence[str]) -> None:
    """
    Raise :class:`SourceNotAllowedError` if a listed local file resolves outside the allowed locations.

    A symbolic link inside an allowed folder that points outside it is refused here.
    """
    for entry in entries:
        if is_local(entry["uri"]):
            check_source_allowed(entry["uri"], allowed)


@dataclass(frozen=True)
class SourceFile:
    """
    One file of a source, as a snapshot manifest records it (``source_files``).

    :param uri: Where the file is (local path or object-store URI).
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


def fingerprint_file(
    uri: str, local: Path, etag: str | None = None, mtime: float | None = None
) -> SourceFile:
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


def fetch_files(
    storage: Storage,
    entries: Sequence[dict[str, Any]],
    tmp: Path,
    progress: Callable[[str, int], TransferProgress] | None = None,
) -> list[SourceFile]:
    """
    Download the listed S3 objects under the local folder *tmp*, and fingerprint every file.

    :param entries: The files, as :func:`list_source` lists them.
    :param progress: Builds the progress callback of one download from ``(what, total bytes)``.
    :raises ValueError: if a file is empty.
    :raises FileNotFoundError: if a file or bucket disappears while it is read.
    """
    files = []
    for index, entry in enumerate(entries):
        uri = entry["uri"]
        if not is_local(uri):
            callback = progress(f"Download {uri}", entry["size"]) if progress else None
            local = storage.download_file(uri, tmp / f"{index:05d}-{uri.rsplit('/', 1)[-1]}", callback)
            if callback is not None:
                callback.done()
        else:
            local = Path(uri)
        file = fingerprint_file(uri, local, entry.get("etag"), entry.get("mtime"))
        if file.size != int(entry["size"]):
            raise SourceChangedError(
                f"{uri} changed while it was read ({entry['size']} bytes when listed, {file.size} when read): "
                "it is still being written"
            )
        files.append(file)
    check_unchanged(files)
    return files


def check_unchanged(files: Sequence[SourceFile]) -> None:
    """
    Raise :class:`SourceChangedError` if a local source file's size or modification time is not what it was.

    Call it after the files were read (hashed, parsed): a file still being written grows or is touched in the
    meantime. S3 objects are left alone: an object is replaced whole, never seen half-written, and what was
    read is the downloaded copy.

    :param files: The files as they were listed and hashed (:func:`fetch_files`).
    """
    for file in files:
        if not is_local(file.uri):
            continue
        try:
            stat = os.stat(file.uri)
        except FileNotFoundError as err:
            raise SourceChangedError(f"{file.uri} disappeared while it was read") from err
        if stat.st_size != file.size or (file.mtime is not None and stat.st_mtime != file.mtime):
            what = (
                f"{file.size} bytes when read, {stat.st_size} now"
                if stat.st_size != file.size
                else "its modification time moved"
            )
            raise SourceChangedError(
                f"{file.uri} changed while it was read ({what}): it is still being written"
            )


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
    return fetch_files(storage, list_source(storage, source), tmp, progress)


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


def object_sha256(head: dict[str, Any], protocol: str = "s3") -> tuple[str, str]:
    """
    Content hash of an object from its ``head`` alone, and what it is the hash of.

    The object's full-object ``ChecksumSHA256`` when the store keeps one (``"bytes"``), else the SHA-256
    of its ETag and size (``"s3-etag+size"``; ``"etag+size"`` on other stores, with the scheme in the text).
    """
    if head.get("sha256"):
        return str(head["sha256"]), SHA256_OF_BYTES
    if protocol == "s3":
        basis = f"s3-etag:{head['etag']}\nsize:{head['size']}"
        return hashlib.sha256(basis.encode()).hexdigest(), SHA256_OF_S3_ETAG
    basis = f"{protocol}-etag:{head['etag']}\nsize:{head['size']}"
    return hashlib.sha256(basis.encode()).hexdigest(), SHA256_OF_ETAG
