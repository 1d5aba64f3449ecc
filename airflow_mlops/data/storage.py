"""
Read and write local paths and object-store URIs (``s3://``, ``gs://``, ``abfs://``...) without Airflow.

:class:`Storage` takes an optional boto3 S3 client; without one, a default client is built from the standard
AWS environment (credential chain, ``AWS_REGION``, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for
S3-compatible stores): that is how trainers, which run without Airflow, reach S3. Airflow code gets the client
from an Airflow ``aws`` connection through the Amazon provider instead
(:class:`airflow_mlops.hooks.storage.StorageHook`).

Other object stores (``gs://``, ``abfs://``, ``az://``, ``memory://``...) go through their fsspec filesystem:
Airflow's, from the connection the URI names (``gs://my_gcp@bucket/key``, as ``ObjectStoragePath`` reads it),
where a provider registers one, else the library's own from its environment (see :func:`filesystem`).

Local paths may be given plainly or as ``file://`` URIs. A missing file or object raises
:class:`FileNotFoundError` for every kind of location.

With ``outage_timeout`` (the hooks pass ``[mlops] service_outage_timeout``), each object-store call that cannot
reach the endpoint (refused or reset connection, timeout, 5xx, throttling) is tried again with backoff for that long, then
fails with :class:`S3UnreachableError` naming the endpoint and the time waited. boto3's own retries (a few tries
within a second or two for a refused connection) stay as configured: they count attempts, and a restart of a
few minutes outlasts any sensible count. User-info in an endpoint URL (``http://user:secret@host``), which S3
never reads, is taken out of the URL the client gets and out of every error's text, and its password is masked
in Airflow's logs.
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from airflow_mlops.utils.outages import describe_error, redact_userinfo, wait_out
from airflow_mlops.utils.urls import split_credentials

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

_GLOB_CHARS = "*?["
log = logging.getLogger(__name__)
# Managed transfers: parts of 64 MiB, 8 in flight, multipart from 64 MiB on (S3 allows 10,000 parts: 640 GiB).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 64 * 1024 * 1024
MAX_CONCURRENCY = 8
PROGRESS_INTERVAL_S = 30.0
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
# Error codes of S3 answers that a later retry can get past (throttling, server faults).
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException"}
)
# botocore errors raised when S3 could not be reached or did not answer in time (by class name, so this
# module needs no botocore import).
_TRANSIENT_ERRORS = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ConnectionError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        # aiohttp (gcsfs, adlfs) and azure-core
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ServiceRequestError",
        "ServiceResponseError",
    }
)
# The modules whose errors are an object-store client's (not this package's).
_CLIENT_MODULES = (
    "botocore",
    "boto3",
    "urllib3",
    "s3transfer",
    "gcsfs",
    "adlfs",
    "aiohttp",
    "azure.",
    "google.",
)


class S3UnreachableError(ConnectionError):
    """
    S3 could not be reached for the whole outage window (retryable: the store may be back later).

    :param message: What was unreachable (the endpoint, the object) and for how long.
    :param fields: ``uri`` (the object or prefix), ``endpoint`` (without user-info), ``waited`` (seconds).
    """

    uri: str | None = None
    endpoint: str | None = None
    waited: float | None = None

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        for key, value in fields.items():
            setattr(self, key, value)


_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def mask_endpoint_credentials(url: str | None) -> str | None:
    """
    *url* without user-info; its password is masked in Airflow's logs (when Airflow is installed).

    S3 signs requests with access keys and never reads user-info, so taking it out changes nothing the store
    sees. A URL that cannot be read is returned unchanged (the client will refuse it).
    """
    if not url:
        return url
    try:
        split = split_credentials(url)
    except ValueError:
        return url
    if split.password:
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # a trainer without Airflow: nothing to mask in
            pass
        else:
            mask_secret(split.password)
    if split.username or split.password:
        log.warning("S3 endpoint %s: its user-info (user:password@) is ignored: S3 does not read it", split.url)
    return split.url


def mask_environment_endpoints() -> None:
    """Mask the passwords of ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` user-info in Airflow's logs."""
    for name in _ENDPOINT_VARIABLES:
        value = os.environ.get(name)
        if value and "@" in value:
            try:
                split = split_credentials(value)
            except ValueError:
                continue
            if split.password:
                try:
                    from airflow.sdk.log import mask_secret
                except ImportError:
                    return
                mask_secret(split.password)


_LOCAL_SCHEMES = frozenset({"file", "local"})


def scheme(uri: str) -> str:
    """The scheme of *uri* in lower case: ``file`` for a plain path or a ``file://`` URI."""
    head, sep, _ = uri.partition("://")
    if not sep or not head or not head.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return "file"
    head = head.lower()
    return "file" if head in _LOCAL_SCHEMES else head


def is_local(uri: str) -> bool:
    """Whether *uri* is a local path (plain or ``file://``), not an object-store URI (``s3://``, ``gs://``...)."""
    return scheme(uri) == "file"


def split_conn(uri: str) -> tuple[str | None, str]:
    """
    ``(conn_id, uri)`` of an object-store URI that names an Airflow connection as ``ObjectStoragePath`` does.

    ``gs://my_gcp@bucket/key`` gives ``("my_gcp", "gs://bucket/key")``; a URI naming none (or a local path)
    gives ``(None, uri)``.
    """
    if is_local(uri):
        return None, uri
    protocol, _, rest = uri.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return None, uri
    conn_id, _, bucket = netloc.rpartition("@")
    if bucket.endswith(".core.windows.net"):  # adlfs' abfs://container@account.dfs.core.windows.net/...
        return None, uri
    return conn_id or None, f"{protocol}://{bucket}{slash}{path}"


def split_bucket(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of an object-store URI (``s3://bucket/key``, ``gs://bucket/key``; no connection id)."""
    parts = urlsplit(split_conn(uri)[1])
    return parts.netloc, parts.path.lstrip("/")


def as_uri(location: Any) -> str:
    """
    *location* as a URI string: an ``ObjectStoragePath`` keeps its connection (``scheme://conn_id@bucket/key``).

    Strings (and :class:`os.PathLike` paths) are returned as text, unchanged.
    """
    conn_id = getattr(location, "conn_id", None)
    text = str(location) if not isinstance(location, os.PathLike) else os.fspath(location)
    if conn_id and not is_local(text) and split_conn(text)[0] is None:
        protocol, _, rest = text.partition("://")
        return f"{protocol}://{conn_id}@{rest}"
    return text


def filesystem(protocol: str, conn_id: str | None = None) -> Any:
    """
    The fsspec filesystem of *protocol*, with the connection taken the Airflow way.

    Where an installed provider registers a filesystem for *protocol* (``gs`` by the Google provider,
    ``abfs`` by the Microsoft Azure provider, ``s3`` by the Amazon provider), it is Airflow's
    (``airflow.sdk.io.store.attach``), built from *conn_id* (None: the provider's default credentials).
    Elsewhere, and without Airflow (a trainer), it is fsspec's own, configured by the library's environment
    variables (e.g. ``GOOGLE_APPLICATION_CREDENTIALS``, ``STORAGE_EMULATOR_HOST``,
    ``AZURE_STORAGE_CONNECTION_STRING``); a *conn_id* then has nothing to read it and is refused.

    :raises ValueError: a connection is named for a protocol no installed provider registers, or fsspec
        knows no such protocol.
    """
    try:
        from airflow.sdk.io.fs import has_fs
        from airflow.sdk.io.store import attach
    except ImportError:  # a trainer without Airflow
        registered = False
    else:
        registered = has_fs(protocol)
    if registered:
        return attach(protocol, conn_id).fs
    if conn_id:
        raise ValueError(
            f"{protocol}://{conn_id}@... names the Airflow connection {conn_id!r}, but no installed provider "
            f"registers a filesystem for {protocol}:// to read it (e.g. apache-airflow-providers-google for gs://, "
            "apache-airflow-providers-microsoft-azure for abfs://)"
        )
    import fsspec  # type: ignore[import-untyped]

    try:
        return fsspec.filesystem(protocol)
    except (ImportError, ValueError) as err:
        raise ValueError(f"no filesystem for {protocol}://: {err}") from err


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


def is_transient_error(err: BaseException) -> bool:
    """
    Whether *err*, raised by an object-store call, is a fault a retry can get past.

    True for a server error (HTTP 5xx), throttling, a timeout or a connection failure; False for the
    answers that say the request itself is wrong (missing key or bucket, access denied).
    """
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    if not type(err).__module__.startswith(_CLIENT_MODULES):
        return False
    if any(cls.__name__ in _TRANSIENT_ERRORS for cls in type(err).__mro__):
        return True
    response = getattr(err, "response", None)
    response = response if isinstance(response, dict) else {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    for name in (
        "status_code",
        "code",
        "status",
    ):  # gcsfs' HttpError.code, azure's status_code, aiohttp's status
        if status is None and isinstance(getattr(err, name, None), int):
            status = getattr(err, name)
    code = str(response.get("Error", {}).get("Code"))
    return (
        (isinstance(status, int) and (status >= 500 or status == 429))
        or code in _TRANSIENT_CODES
        or code.startswith("5")
    )


def is_storage_error(err: BaseException) -> bool:
    """
    Whether *err* comes from an object-store client (boto3, gcsfs, adlfs...) rather than from our code.

    :class:`S3UnreachableError` counts: it is the client's error once the outage window is spent.
    """
    return isinstance(err, S3UnreachableError) or type(err).__module__.startswith(_CLIENT_MODULES)


def _atomic_local_write(dest: Path, write: Any) -> None:
    """Write *dest* through a temporary sibling and an atomic rename, so readers never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def transfer_config(
    multipart_threshold: int = MULTIPART_THRESHOLD,
    multipart_chunksize: int = MULTIPART_CHUNKSIZE,
    max_concurrency: int = MAX_CONCURRENCY,
) -> Any:
    """A boto3 ``TransferConfig`` for multipart, concurrent uploads, downloads and server-side copies."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=multipart_chunksize,
        max_concurrency=max_concurrency,
        use_threads=max_concurrency > 1,
    )


class InfoLogger(Protocol):
    """What :class:`TransferProgress` logs to: a ``logging.Logger``, or an Airflow task's ``self.log``."""

    def info(self, msg: Any, /, *args: Any) -> Any:
        """Log *msg* % *args* at INFO."""


class TransferProgress:
    """
    A boto3 transfer ``Callback`` that logs bytes done, percent and rate at most every *interval* seconds.

    boto3 calls it from its worker threads with the bytes moved since the last call; it is thread-safe.
    The final line is logged by :meth:`done`.

    :param what: What is transferred, for the log lines (e.g. ``"upload s3://b/k"``).
    :param total: Expected size in bytes (0 if unknown).
    :param interval: Seconds between two progress lines.
    :param logger: Logger to write to (default: this module's).
    """

    def __init__(
        self,
        what: str,
        total: int,
        interval: float = PROGRESS_INTERVAL_S,
        logger: InfoLogger | None = None,
    ) -> None:
        self.what = what
        self.total = max(int(total), 0)
        self.interval = interval
        self.log: InfoLogger = logger or log
        self.bytes = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = self._start

    def __call__(self, bytes_amount: int) -> None:
        with self._lock:
            self.bytes += bytes_amount
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
        self._log_line("in progress")

    def done(self) -> None:
        """Log the final line (total bytes and mean rate)."""
        self._log_line("done")

    def _log_line(self, state: str) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        percent = 100.0 * self.bytes / self.total if self.total else 0.0
        self.log.info(
            "%s %s: %d of %d bytes (%.1f%%), %.1f MiB/s",
            self.what, state, self.bytes, self.total, percent, self.bytes / elapsed / (1 << 20),
        )  # fmt: skip


class Storage:
    """
    Local files and object stores (S3, GCS, Azure Blob, any fsspec protocol) behind one interface.

    Each URI goes to the store of its scheme: local paths to the filesystem (atomic writes), ``s3://`` to boto3
    (managed multipart transfers, server-side copies, ETag and SHA-256 fingerprints), any other scheme to its
    fsspec filesystem (:func:`filesystem`: Airflow's, through the URI's connection, where a provider registers
    one), whose copies within one store are server-side where the library makes them so (GCS rewrite, Azure
    copy-from-URL). An object-store URI may name its Airflow connection as ``ObjectStoragePath`` does
    (``gs://my_gcp@bucket/key``); the URIs this class returns keep it.

    :param s3_client: A boto3 S3 client to use for ``s3://`` URIs (built lazily from the environment if None).
    :param outage_timeout: Seconds each object-store call waits out an endpoint it cannot reach (0: fail at once).
    :param unavailable_error: What is raised when the window is spent (:class:`S3UnreachableError` or a
        subclass; the hooks give one that is also the package's ``ServiceUnavailableError``).
    :param s3_client_for: Builds the S3 client of an ``s3://conn_id@bucket/...`` URI's connection (the hook
        gives one; without it such a URI is refused).
    """

    def __init__(
        self,
        s3_client: Any | None = None,
        transfer: Any | None = None,
        outage_timeout: float = 0.0,
        unavailable_error: type[S3UnreachableError] = S3UnreachableError,
        s3_client_for: Callable[[str], Any] | None = None,
    ) -> None:
        self._s3_client = s3_client
        self._transfer = transfer
        self.outage_timeout = outage_timeout
        self.unavailable_error = unavailable_error
        self._s3_client_for = s3_client_for
        self._s3_proxy: _OutageTolerantS3 | None = None
        self._stores: dict[tuple[str, str | None], _Store] = {}

    @property
    def transfer(self) -> Any:
        """The boto3 ``TransferConfig`` of managed transfers (multipart and concurrent; see :func:`transfer_config`)."""
        if self._transfer is None:
            self._transfer = transfer_config()
        return self._transfer

    @property
    def client(self) -> Any:
        """The boto3 S3 client itself (built from the standard AWS environment on first use if none was given)."""
        if self._s3_client is None:
            import boto3

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            # A fresh session reads the environment as it is now (boto3.client() reuses a cached one).
            self._s3_client = boto3.session.Session().client(
                "s3", endpoint_url=mask_endpoint_credentials(endpoint) or None
            )
        return self._s3_client

    @property
    def s3(self) -> Any:
        """
        The S3 client as this class uses it: each call waits out an unreachable endpoint for ``outage_timeout``.

        Errors never carry URL user-info. Paginators fetch all their pages in one call (so that a retry starts
        the listing over, never repeats part of it).
        """
        if self._s3_proxy is None:
            self._s3_proxy = _OutageTolerantS3(self.client, self)
        return self._s3_proxy

    def _store(self, uri: str) -> _Store:
        protocol = scheme(uri)
        conn_id = split_conn(uri)[0]
        key = (protocol, conn_id)
        if key not in self._stores:
            if protocol == "file":
                self._stores[key] = _LocalStore()
            elif protocol in ("s3", "s3a"):
                self._stores[key] = _S3Store(self, self._s3_for(conn_id), conn_id)
            else:
                self._stores[key] = _FsspecStore(self, protocol, conn_id)
        return self._stores[key]

    def _s3_for(self, conn_id: str | None) -> Any:
        if conn_id is None:
            return self.s3
        if self._s3_client_for is None:
            raise ValueError(
                f"s3://{conn_id}@... names the Airflow connection {conn_id!r}: only Airflow's storage hook can "
                "read it (give the connection as aws_conn_id instead)"
            )
        return _OutageTolerantS3(self._s3_client_for(conn_id), self)

    def filesystem(self, uri: str) -> tuple[Any, str]:
        """``(fsspec filesystem, path)`` of *uri*, for libraries that read through fsspec (pyarrow, pandas)."""
        return self._store(uri).fsspec(uri)

    def exists(self, uri: str) -> bool:
        """Whether the object at *uri* exists (an object-store "folder" does not count; a local folder does)."""
        return self._store(uri).exists(uri)

    def size(self, uri: str) -> int:
        """Size in bytes of the file or object at *uri*; :class:`FileNotFoundError` if there is none."""
        return int(self.head(uri)["size"])

    def read_bytes(self, uri: str) -> bytes:
        """Whole content of *uri* (meant for small files such as manifests)."""
        return self._store(uri).read_bytes(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write *data* to *uri*; local writes are atomic (temporary file + rename), object writes are whole."""
        self._store(uri).write_bytes(uri, data)

    def head(self, uri: str) -> dict[str, Any]:
        """
        ``{"size", "etag", "mtime", "sha256"}`` of the file or object at *uri*, reading no data.

        ``etag`` (without quotes; the object's generation or ETag on other stores) is None for local files;
        ``sha256`` is the hex of an S3 object's full-object ``ChecksumSHA256`` where the store keeps one, else
        None; ``mtime`` is a POSIX timestamp.
        """
        return self._store(uri).head(uri)

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        """*length* bytes of *uri* from offset *start* (object stores: one ranged GET)."""
        return self._store(uri).read_range(uri, start, length)

    def download_file(self, uri: str, dest: str | Path, progress: TransferProgress | None = None) -> Path:
        """Copy *uri* to the local file *dest* (S3: boto3's managed, multipart and concurrent transfer)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._store(uri).download_file(uri, dest, progress)
        return dest

    def upload_file(self, source: str | Path, uri: str, progress: TransferProgress | None = None) -> None:
        """Copy the local file *source* to *uri* (S3: managed multipart, concurrent transfer; local: atomic)."""
        self._store(uri).upload_file(Path(source), uri, progress)

    def copy(self, source: str, dest: str, progress: TransferProgress | None = None) -> None:
        """
        Copy *source* to *dest*.

        Within one object store the copy is server-side (S3 ``CopyObject`` / multipart ``UploadPartCopy``
        through boto3's transfer manager, GCS rewrite, Azure copy from URL): no data bytes pass through this
        process. Between stores the bytes go through a local temporary file.
        """
        source_store, dest_store = self._store(source), self._store(dest)
        if source_store is dest_store:
            source_store.copy(source, dest, progress)
        elif isinstance(source_store, _LocalStore):
            dest_store.upload_file(local_path(source), dest, progress)
        elif isinstance(dest_store, _LocalStore):
            self.download_file(source, local_path(dest), progress)
        else:
            with tempfile.TemporaryDirectory(prefix="mlops-copy-") as tmp:
                local = self.download_file(source, Path(tmp) / "object", progress)
                dest_store.upload_file(local, dest, progress)

    def delete(self, uri: str) -> None:
        """Delete the file or object at *uri*; nothing happens if there is none."""
        self._store(uri).delete(uri)

    def list_uris(self, prefix: str) -> list[str]:
        """
        Every file under the directory *prefix*, recursively, sorted.

        For object stores, *prefix* is read as a folder (``s3://b/data`` lists ``s3://b/data/...``, not
        ``s3://b/data2``) and folder-marker objects (keys ending in ``/``) are skipped. A local *prefix* that
        is a file lists just that file.
        """
        return [entry["uri"] for entry in self.list_entries(prefix)]

    def list_entries(self, prefix: str) -> list[dict[str, Any]]:
        """
        Like :meth:`list_uris`, with each file's fingerprint: ``{"uri", "size", "etag", "mtime"}``, sorted by URI.

        One listing call per page of objects (1,000 on S3); no per-object request. ``etag`` is None for local
        files.
        """
        store = self._store(prefix)
        if isinstance(store, _LocalStore):
            return store.list_entries(prefix)
        protocol, _, rest = split_conn(prefix)[1].partition("://")
        bucket, _, key = rest.partition("/")
        key = key.rstrip("/") + "/" if key.strip("/") else ""
        return sorted(
            (entry for entry in store.list_prefix(bucket, key) if not entry["uri"].endswith("/")),
            key=lambda entry: entry["uri"],
        )

    def glob(self, pattern: str) -> list[str]:
        """
        Files matching the shell-style *pattern*, sorted.

        Local patterns follow :func:`glob.glob` (``**`` crosses directories). Object-store patterns are matched
        with :func:`fnmatch.fnmatchcase` against whole keys, so ``*`` also crosses ``/``.
        """
        store = self._store(pattern)
        if isinstance(store, _LocalStore):
            return store.glob(pattern)
        if not has_glob(pattern):
            return [pattern] if self.exists(pattern) else []
        bucket, key_pattern = split_bucket(pattern)
        first = min(key_pattern.find(c) for c in _GLOB_CHARS if c in key_pattern)
        return sorted(
            entry["uri"]
            for entry in store.list_prefix(bucket, key_pattern[:first])
            if not entry["uri"].endswith("/")
            and fnmatch.fnmatchcase(split_bucket(entry["uri"])[1], key_pattern)
        )


class _Store(Protocol):
    """What :class:`Storage` asks of the store of one scheme (and connection)."""

    def fsspec(self, uri: str) -> tuple[Any, str]: ...
    def exists(self, uri: str) -> bool: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def head(self, uri: str) -> dict[str, Any]: ...
    def read_range(self, uri: str, start: int, length: int) -> bytes: ...
    def download_file(self, uri: str, dest: Path, progress: TransferProgress | None) -> None: ...
    def upload_file(self, source: Path, uri: str, progress: TransferProgress | None) -> None: ...
    def copy(self, source: str, dest: str, progress: TransferProgress | None) -> None: ...
    def delete(self, uri: str) -> None: ...
    def list_prefix(self, bucket: str, prefix: str) -> list[dict[str, Any]]: ...


class _LocalStore:
    """The local filesystem; writes go through a temporary sibling and an atomic rename."""

    def fsspec(self, uri: str) -> tuple[Any, str]:
        from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

        return LocalFileSystem(), str(local_path(uri))

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        _atomic_local_write(local_path(uri), lambda tmp: tmp.write_bytes(data))

    def head(self, uri: str) -> dict[str, Any]:
        stat = local_path(uri).stat()
        return {"size": stat.st_size, "etag": None, "mtime": stat.st_mtime, "sha256": None}

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        with local_path(uri).open("rb") as stream:
            stream.seek(start)
            return stream.read(length)

    def download_file(self, uri: str, dest: Path, progress: TransferProgress | None) -> None:
        shutil.copyfile(local_path(uri), dest)

    def upload_file(self, source: Path, uri: str, progress: TransferProgress | None) -> None:
        _atomic_local_write(local_path(uri), lambda tmp: shutil.copyfile(source, tmp))

    def copy(self, source: str, dest: str, progress: TransferProgress | None) -> None:
        self.upload_file(local_path(source), dest, progress)

    def delete(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def list_entries(self, prefix: str) -> list[dict[str, Any]]:
        root = local_path(prefix)
        if root.is_file():
            files = [root]
        else:
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        out = []
        for path in files:
            stat = path.stat()
            out.append({"uri": str(path), "size": stat.st_size, "etag": None, "mtime": stat.st_mtime})
        return out

    def list_prefix(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        raise NotImplementedError("local paths are listed by folder")

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in _glob.glob(str(local_path(pattern)), recursive=True) if Path(p).is_file())


class _S3Store:
    """S3 through boto3: managed multipart transfers, server-side copies, ETag and SHA-256 fingerprints."""

    def __init__(self, storage: Storage, s3: _OutageTolerantS3, conn_id: str | None) -> None:
        self.storage = storage
        self.s3 = s3
        self.conn_id = conn_id

    def _uri(self, bucket: str, key: str) -> str:
        return f"s3://{self.conn_id}@{bucket}/{key}" if self.conn_id else f"s3://{bucket}/{key}"

    def fsspec(self, uri: str) -> tuple[Any, str]:
        bucket, key = split_bucket(uri)
        return filesystem("s3", self.conn_id), f"{bucket}/{key}"

    def _head(self, uri: str, **kwargs: Any) -> dict[str, Any]:
        bucket, key = split_bucket(uri)
        try:
            return self.s3.head_object(Bucket=bucket, Key=key, **kwargs)
        except Exception as err:
            if _is_not_found(err):
                raise FileNotFoundError(f"No object at {uri}") from err
            raise

    def exists(self, uri: str) -> bool:
        try:
            self._head(uri)
        except FileNotFoundError:
            return False
        return True

    def _get(self, uri: str, **kwargs: Any) -> bytes:
        bucket, key = split_bucket(uri)
        try:
            return self.s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
        except Exception as err:
            if _is_not_found(err):
                raise FileNotFoundError(f"No object at {uri}") from err
            raise

    def read_bytes(self, uri: str) -> bytes:
        return self._get(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_bucket(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def head(self, uri: str) -> dict[str, Any]:
        response = self._head(uri, ChecksumMode="ENABLED")
        checksum = response.get("ChecksumSHA256")
        sha256 = None
        # "<base64>-<parts>" is a checksum of part checksums, not of the bytes: not usable as a content hash.
        if checksum and "-" not in checksum and response.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            import base64

            sha256 = base64.b64decode(checksum).hex()
        modified = response.get("LastModified")
        return {
            "size": int(response["ContentLength"]),
            "etag": str(response.get("ETag", "")).strip('"') or None,
            "mtime": modified.timestamp() if modified is not None else None,
            "sha256": sha256,
        }

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        return self._get(uri, Range=f"bytes={start}-{start + length - 1}")

    def download_file(self, uri: str, dest: Path, progress: TransferProgress | None) -> None:
        bucket, key = split_bucket(uri)
        try:
            self.s3.download_file(bucket, key, str(dest), Config=self.storage.transfer, Callback=progress)
        except Exception as err:
            if _is_not_found(err):
                raise FileNotFoundError(f"No object at {uri}") from err
            raise

    def upload_file(self, source: Path, uri: str, progress: TransferProgress | None) -> None:
        bucket, key = split_bucket(uri)
        self.s3.upload_file(str(source), bucket, key, Config=self.storage.transfer, Callback=progress)

    def copy(self, source: str, dest: str, progress: TransferProgress | None) -> None:
        src_bucket, src_key = split_bucket(source)
        bucket, key = split_bucket(dest)
        try:
            self.s3.copy(
                {"Bucket": src_bucket, "Key": src_key},
                bucket,
                key,
                Config=self.storage.transfer,
                Callback=progress,
            )
        except Exception as err:
            if _is_not_found(err):
                raise FileNotFoundError(f"No object at {source}") from err
            raise

    def delete(self, uri: str) -> None:
        bucket, key = split_bucket(uri)
        self.s3.delete_object(Bucket=bucket, Key=key)

    def list_prefix(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        out = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    modified = obj.get("LastModified")
                    out.append(
                        {
                            "uri": self._uri(bucket, obj["Key"]),
                            "size": int(obj["Size"]),
                            "etag": str(obj.get("ETag", "")).strip('"') or None,
                            "mtime": modified.timestamp() if modified is not None else None,
                        }
                    )
        except Exception as err:
            if _is_not_found(err):
                raise FileNotFoundError(f"No bucket {bucket!r} (listing s3://{bucket}/{prefix})") from err
            raise
        return out


class _FsspecStore:
    """
    Any other object store through its fsspec filesystem (GCS, Azure Blob, ``memory://``...).

    Each call waits out an unreachable endpoint as S3 calls do. A copy within the store is the filesystem's
    own (``gcsfs``: a server-side rewrite; ``adlfs``: a server-side copy from URL).
    """

    def __init__(self, storage: Storage, protocol: str, conn_id: str | None) -> None:
        self.storage = storage
        self.protocol = protocol
        self.conn_id = conn_id
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = filesystem(self.protocol, self.conn_id)
        return self._fs

    def _path(self, uri: str) -> str:
        bucket, key = split_bucket(uri)
        return f"{bucket}/{key}" if key else bucket

    def _uri(self, path: str) -> str:
        path = path.split("://", 1)[-1].lstrip("/")
        return f"{self.protocol}://{self.conn_id}@{path}" if self.conn_id else f"{self.protocol}://{path}"

    def fsspec(self, uri: str) -> tuple[Any, str]:
        return self.fs, self._path(uri)

    def _call(self, operation: str, uri: str, fn: Callable[[], Any]) -> Any:
        window = self.storage.outage_timeout
        where = f"{self.protocol}:// store"

        def give_up(err: BaseException, waited: float) -> BaseException:
            return self.storage.unavailable_error(
                f"The {where} is unreachable ({operation} {uri}): {describe_error(err)}; tried for {waited:.0f} s "
                f"(outage window {window:g} s, [mlops] service_outage_timeout)",
                uri=uri, endpoint=where, waited=round(waited, 1), reason="unreachable",
            )  # fmt: skip

        try:
            return wait_out(
                fn, what=where, window=window, is_transient=is_transient_error, give_up=give_up, logger=log
            )
        except FileNotFoundError as err:
            raise FileNotFoundError(f"No object at {uri}") from err

    def _fresh(self, uri: str) -> str:
        """*uri*'s path, with what fsspec cached of it dropped (another process may have written it since)."""
        path = self._path(uri)
        self.fs.invalidate_cache(path)
        return path

    def exists(self, uri: str) -> bool:
        return bool(self._call("exists", uri, lambda: self.fs.isfile(self._fresh(uri))))

    def read_bytes(self, uri: str) -> bytes:
        return self._call("read", uri, lambda: self.fs.cat_file(self._path(uri)))

    def write_bytes(self, uri: str, data: bytes) -> None:
        self._call("write", uri, lambda: self.fs.pipe_file(self._path(uri), data))

    def head(self, uri: str) -> dict[str, Any]:
        info = self._call("head", uri, lambda: self.fs.info(self._fresh(uri)))
        if info.get("type") == "directory":
            raise FileNotFoundError(f"No object at {uri} (a folder)")
        return _fingerprint(info) | {"sha256": None}

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        return self._call("read", uri, lambda: self.fs.cat_file(self._path(uri), start, start + length))

    def download_file(self, uri: str, dest: Path, progress: TransferProgress | None) -> None:
        self._call("download", uri, lambda: self.fs.get_file(self._path(uri), str(dest)))
        if progress is not None:
            progress(dest.stat().st_size)

    def upload_file(self, source: Path, uri: str, progress: TransferProgress | None) -> None:
        self._call("upload", uri, lambda: self.fs.put_file(str(source), self._path(uri)))
        if progress is not None:
            progress(source.stat().st_size)

    def copy(self, source: str, dest: str, progress: TransferProgress | None) -> None:
        self._call("copy", source, lambda: self.fs.copy(self._path(source), self._path(dest)))

    def delete(self, uri: str) -> None:
        try:
            self._call("delete", uri, lambda: self.fs.rm(self._path(uri), recursive=True))
        except FileNotFoundError:
            pass

    def list_prefix(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        base = f"{bucket}/{prefix}"
        folder = base if base.endswith("/") else base.rsplit("/", 1)[0] + "/"

        def find() -> dict[str, Any]:
            self.fs.invalidate_cache()
            return self.fs.find(folder.rstrip("/"), detail=True)

        try:
            found = self._call("list", self._uri(base), find)
        except FileNotFoundError:
            found = {}
        out = []
        for path, info in found.items():
            path = path.split("://", 1)[-1].lstrip("/")  # memory:// names its paths "/bucket/key"
            if path.startswith(base) and info.get("type") != "directory":
                out.append({"uri": self._uri(path), **_fingerprint(info)})
        return out


def _fingerprint(info: Mapping[str, Any]) -> dict[str, Any]:
    """``{"size", "etag", "mtime"}`` of an fsspec ``info`` entry (GCS: generation, Azure: ETag; no data read)."""
    etag = info.get("generation") or info.get("etag") or info.get("ETag")
    modified = (
        info.get("updated") or info.get("last_modified") or info.get("mtime") or info.get("LastModified")
    )
    if isinstance(modified, str):
        modified = datetime.fromisoformat(modified.replace("Z", "+00:00"))
    mtime: Any = modified.timestamp() if isinstance(modified, datetime) else modified
    return {
        "size": int(info.get("size") or 0),
        "etag": str(etag).strip('"') if etag else None,
        "mtime": float(mtime) if mtime is not None else None,
    }


class _OutageTolerantS3:
    """A boto3 S3 client whose calls go through :func:`~airflow_mlops.utils.outages.wait_out` (see ``Storage.s3``)."""

    def __init__(self, client: Any, storage: Storage) -> None:
        self._client = client
        self._storage = storage

    @property
    def endpoint(self) -> str:
        """The client's endpoint URL, without user-info."""
        return redact_userinfo(str(getattr(getattr(self._client, "meta", None), "endpoint_url", None) or "S3"))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if name == "get_paginator":
            return lambda *args, **kwargs: _Paginator(value(*args, **kwargs), self)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, lambda: value(*args, **kwargs), kwargs)

        return call

    def call(self, operation: str, fn: Any, kwargs: dict[str, Any] | None = None) -> Any:
        """``fn()``, waiting out an unreachable endpoint; *operation* and *kwargs* name it in errors."""
        kwargs = kwargs or {}
        bucket, key = kwargs.get("Bucket"), kwargs.get("Key") or kwargs.get("Prefix")
        uri = f"s3://{bucket}/{key or ''}" if bucket else None
        window = self._storage.outage_timeout
        endpoint = self.endpoint

        def give_up(err: BaseException, waited: float) -> BaseException:
            target = f" ({operation} {uri})" if uri else f" ({operation})"
            return self._storage.unavailable_error(
                f"S3 endpoint {endpoint} is unreachable{target}: {describe_error(err)}; tried for {waited:.0f} s "
                f"(outage window {window:g} s, [mlops] service_outage_timeout)",
                uri=uri, endpoint=endpoint, waited=round(waited, 1), reason="unreachable",
            )  # fmt: skip

        return wait_out(
            fn,
            what=f"S3 endpoint {endpoint}",
            window=window,
            is_transient=is_transient_error,
            give_up=give_up,
            logger=log,
        )


class _Paginator:
    """A boto3 paginator whose ``paginate`` fetches every page in one call that waits out an outage."""

    def __init__(self, paginator: Any, client: _OutageTolerantS3) -> None:
        self._paginator = paginator
        self._client = client

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        return self._client.call("list", lambda: list(self._paginator.paginate(**kwargs)), kwargs)
