"""
Read and write local paths and ``s3://`` URIs with one small interface, without Airflow.

:class:`Storage` takes an optional boto3 S3 client; without one, a default client is built from the standard
AWS environment (credential chain, ``AWS_REGION``, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for
S3-compatible stores): that is how trainers, which run without Airflow, reach S3. Airflow code gets the client
from an Airflow ``aws`` connection through the Amazon provider instead
(:class:`airflow_mlops.hooks.storage.StorageHook`).

Local paths may be given plainly or as ``file://`` URIs. A missing file or object raises
:class:`FileNotFoundError` for both kinds of location.

With ``outage_timeout`` (the hooks pass ``[mlops] service_outage_timeout``), each S3 call that cannot reach the
endpoint (refused or reset connection, timeout, 5xx, throttling) is tried again with backoff for that long, then
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
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_mlops.utils.outages import describe_error, redact_userinfo, wait_out
from airflow_mlops.utils.urls import split_credentials

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
    }
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


def is_transient_error(err: BaseException) -> bool:
    """
    Whether *err*, raised by an S3 call, is a fault a retry can get past.

    True for a server error (HTTP 5xx), throttling, a timeout or a connection failure; False for the
    answers that say the request itself is wrong (missing key or bucket, access denied).
    """
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    if not type(err).__module__.startswith(("botocore", "boto3", "urllib3", "s3transfer")):
        return False
    if any(cls.__name__ in _TRANSIENT_ERRORS for cls in type(err).__mro__):
        return True
    response = getattr(err, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(response.get("Error", {}).get("Code"))
    return (isinstance(status, int) and status >= 500) or code in _TRANSIENT_CODES or code.startswith("5")


def is_storage_error(err: BaseException) -> bool:
    """
    Whether *err* comes from the S3 client (boto3, botocore, s3transfer) rather than from our code.

    :class:`S3UnreachableError` counts: it is the client's error once the outage window is spent.
    """
    return isinstance(err, S3UnreachableError) or type(err).__module__.startswith(("botocore", "boto3", "s3transfer"))


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
    Local filesystem and S3 behind one interface.

    :param s3_client: A boto3 S3 client to use for ``s3://`` URIs (built lazily from the environment if None).
    :param outage_timeout: Seconds each S3 call waits out an endpoint it cannot reach (0: fail at once).
    :param unavailable_error: What is raised when the window is spent (:class:`S3UnreachableError` or a
        subclass; the hooks give one that is also the package's ``ServiceUnavailableError``).
    """

    def __init__(
        self,
        s3_client: Any | None = None,
        transfer: Any | None = None,
        outage_timeout: float = 0.0,
        unavailable_error: type[S3UnreachableError] = S3UnreachableError,
    ) -> None:
        self._s3_client = s3_client
        self._transfer = transfer
        self.outage_timeout = outage_timeout
        self.unavailable_error = unavailable_error
        self._s3_proxy: _OutageTolerantS3 | None = None

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

    def head(self, uri: str) -> dict[str, Any]:
        """
        ``{"size", "etag", "mtime", "sha256"}`` of the file or object at *uri*, reading no data.

        ``etag`` (S3, without quotes) and ``sha256`` (hex of the object's full-object ``ChecksumSHA256`` when the
        store keeps one, else None) are None for local files; ``mtime`` is a POSIX timestamp.
        """
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                response = self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {uri}") from err
                raise
            checksum = response.get("ChecksumSHA256")
            sha256 = None
            # "<base64>-<parts>" is a checksum of part checksums, not of the bytes: not usable as a content hash.
            if (
                checksum
                and "-" not in checksum
                and response.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
            ):
                import base64

                sha256 = base64.b64decode(checksum).hex()
            modified = response.get("LastModified")
            return {
                "size": int(response["ContentLength"]),
                "etag": str(response.get("ETag", "")).strip('"') or None,
                "mtime": modified.timestamp() if modified is not None else None,
                "sha256": sha256,
            }
        stat = local_path(uri).stat()
        return {"size": stat.st_size, "etag": None, "mtime": stat.st_mtime, "sha256": None}

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        """*length* bytes of *uri* from offset *start* (S3: one ranged GET)."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            end = start + length - 1
            try:
                return self.s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {uri}") from err
                raise
        with local_path(uri).open("rb") as stream:
            stream.seek(start)
            return stream.read(length)

    def download_file(self, uri: str, dest: str | Path, progress: TransferProgress | None = None) -> Path:
        """Copy *uri* to the local file *dest* (S3: boto3's managed, multipart and concurrent transfer)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                self.s3.download_file(bucket, key, str(dest), Config=self.transfer, Callback=progress)
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {uri}") from err
                raise
        else:
            shutil.copyfile(local_path(uri), dest)
        return dest

    def upload_file(self, source: str | Path, uri: str, progress: TransferProgress | None = None) -> None:
        """Copy the local file *source* to *uri* (S3: managed multipart, concurrent transfer; local: atomic)."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.upload_file(str(source), bucket, key, Config=self.transfer, Callback=progress)
            return
        _atomic_local_write(local_path(uri), lambda tmp: shutil.copyfile(source, tmp))

    def copy(self, source: str, dest: str, progress: TransferProgress | None = None) -> None:
        """
        Copy *source* to *dest*.

        S3 to S3 is a server-side copy (``CopyObject``, or multipart ``UploadPartCopy``
        for large objects, through boto3's transfer manager): no data bytes pass through this process.
        """
        if is_s3(source) and is_s3(dest):
            src_bucket, src_key = split_s3(source)
            bucket, key = split_s3(dest)
            try:
                self.s3.copy(
                    {"Bucket": src_bucket, "Key": src_key},
                    bucket,
                    key,
                    Config=self.transfer,
                    Callback=progress,
                )
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No object at {source}") from err
                raise
            return
        if is_s3(dest):
            self.upload_file(local_path(source), dest, progress)
        elif is_s3(source):
            self.download_file(source, local_path(dest), progress)
        else:
            _atomic_local_write(local_path(dest), lambda tmp: shutil.copyfile(local_path(source), tmp))

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

    def list_entries(self, prefix: str) -> list[dict[str, Any]]:
        """
        Like :meth:`list_uris`, with each file's fingerprint: ``{"uri", "size", "etag", "mtime"}``, sorted by URI.

        One listing call per 1,000 S3 objects; no per-object request. ``etag`` is None for local files.
        """
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            key = key.rstrip("/") + "/" if key.strip("/") else ""
            out = []
            try:
                for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                    for obj in page.get("Contents", []):
                        if obj["Key"].endswith("/"):
                            continue
                        modified = obj.get("LastModified")
                        out.append(
                            {
                                "uri": f"s3://{bucket}/{obj['Key']}",
                                "size": int(obj["Size"]),
                                "etag": str(obj.get("ETag", "")).strip('"') or None,
                                "mtime": modified.timestamp() if modified is not None else None,
                            }
                        )
            except Exception as err:
                if _is_not_found(err):
                    raise FileNotFoundError(f"No bucket {bucket!r} (listing s3://{bucket}/{key})") from err
                raise
            return sorted(out, key=lambda entry: entry["uri"])
        out = []
        for uri in self.list_uris(prefix):
            stat = Path(uri).stat()
            out.append({"uri": uri, "size": stat.st_size, "etag": None, "mtime": stat.st_mtime})
        return out

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
