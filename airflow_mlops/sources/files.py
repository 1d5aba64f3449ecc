"""Files as a data source: a local file, folder or glob, or an ``s3://`` key, prefix or glob, CSV or Parquet."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.formats import (
    SNIFF_BYTES,
    check_content,
    detect_format,
    format_from_name,
    parquet_footer,
    read_files,
)
from airflow_mlops.data.snapshots import SHA256_OF_BYTES
from airflow_mlops.data.storage import has_glob, is_local, is_storage_error, scheme
from airflow_mlops.exceptions import DatasetConfigurationError, DatasetError, RetryableError
from airflow_mlops.sources.base import DataSource, SourceContext, SourceReading
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_mlops.data.sources import SourceFile
    from airflow_mlops.data.storage import Storage

__all__ = ["FileSource"]


class FileSource(DataSource):
    """
    CSV or Parquet files: a local file, directory or glob, or an ``s3://`` key, prefix or glob.

    Directory and prefix listings skip files whose names start with ``.`` or ``_``. Before any byte is
    downloaded or hashed, the source (resolved: symlinks, ``..``) and every file it names must lie within
    ``[mlops] allowed_sources``, hold at most ``max_source_files`` files and ``max_source_bytes`` bytes, and
    each file's first bytes must match its format. The fingerprint is the SHA-256 of the files' bytes; a
    local file that changes while it is read fails the try (retried).

    One ``s3://`` Parquet object snapshotted under an ``s3://`` root without a split is copied server-side
    (no data bytes through the worker); its fingerprint is the object's ``ChecksumSHA256`` when the store
    keeps one, else its ETag and size.

    :param path: The files. (templated)
    """

    template_fields = ("path",)

    def __init__(self, path: str) -> None:
        if not is_templated(path) and not (isinstance(path, str) and path.strip()):
            raise ValueError(f"source must be a non-empty path, glob or s3:// URI, got {path!r}")
        self.path = path

    @property
    def uri(self) -> str:
        return str(self.path)

    def open(self, ctx: SourceContext) -> SourceReading:
        from airflow_mlops.data.sources import combined_sha256, normalize_source

        given = self.path.strip() if isinstance(self.path, str) else ""
        if not given:
            raise DatasetConfigurationError(
                f"Dataset {ctx.dataset!r}: source must be a non-empty path, glob or s3:// URI, got {self.path!r}",
                dataset=ctx.dataset, uri=str(self.path), reason="empty source",
            )  # fmt: skip
        source = normalize_source(given)
        _check_allowed(ctx, given, ctx.allowed)  # as given: '..' and links shown
        storage = ctx.storage_hook.storage_for(source, ctx.root)

        copied = self._whole_object(ctx, storage, source)
        if copied is not None:
            return copied

        entries = _list(ctx, storage, source)
        try:
            fmt = detect_format(ctx.format, [entry["uri"] for entry in entries])
        except ValueError as err:
            ctx.fail(source, err)
        _check_contents(ctx, storage, source, entries, fmt)
        files: list[SourceFile] = _call(
            ctx, source, lambda: _fetch(storage, entries, ctx.tmp / "source", ctx.progress)
        )
        content_sha256 = combined_sha256(files)
        ctx.log.info(
            "Dataset %s: %d source file(s), %d bytes, sha256 %s",
            ctx.dataset, len(files), sum(f.size for f in files), content_sha256,
        )  # fmt: skip

        def read() -> Any:
            try:
                return read_files([(file.local, file.uri) for file in files], fmt, ctx.csv_options)
            except ValueError as err:
                _unchanged(ctx, source, files)  # a half-written file fails to parse: say that first
                ctx.fail(source, err)

        return SourceReading(
            sha256=content_sha256,
            sha256_of=SHA256_OF_BYTES,
            format=fmt,
            described={
                "source": source,
                "source_files": [f.describe() for f in files],
                "bytes": sum(f.size for f in files),
            },
            read=read,
            check=lambda: _unchanged(ctx, source, files),
        )

    def _whole_object(self, ctx: SourceContext, storage: Storage, source: str) -> SourceReading | None:
        """One Parquet object, copied server-side within its object store; None when that does not apply."""
        from airflow_mlops.data.sources import SourceFile, SourceTooLargeError, object_sha256

        if not (ctx.whole_copy and not is_local(source) and scheme(source) == scheme(ctx.root)):
            return None
        if has_glob(source) or source.endswith("/") or ctx.format == "csv":
            return None
        if ctx.format == "auto" and format_from_name(source) != "parquet":
            return None
        try:
            head = storage.head(source)
        except FileNotFoundError:
            return None  # maybe a prefix: the general path resolves it and reports what is missing
        except Exception as err:
            if is_storage_error(err):
                ctx.fail(source, err, f"cannot read source {source}: ")
            raise
        if head["size"] == 0:
            raise DatasetError(
                f"Dataset {ctx.dataset!r}: {source} is empty (0 bytes)",
                dataset=ctx.dataset, uri=source, reason="empty",
            )  # fmt: skip
        try:
            ctx.limits.check(source, [head])
        except SourceTooLargeError as err:
            raise DatasetError(
                f"Dataset {ctx.dataset!r}: {err}", dataset=ctx.dataset, uri=source, reason="source too large"
            ) from err
        try:
            check_content(source, storage.read_range(source, 0, 4), "parquet")
            rows, schema = parquet_footer(storage, source, head["size"])
        except (ValueError, FileNotFoundError) as err:
            ctx.fail(source, err)
        content_sha256, sha256_of = object_sha256(head, scheme(source))
        ctx.log.info(
            "Dataset %s: one Parquet object, %d bytes, %d rows (from its footer), %s %s (server-side copy)",
            ctx.dataset, head["size"], rows, sha256_of, content_sha256,
        )  # fmt: skip
        source_file = SourceFile(
            uri=source, local=Path(), size=head["size"], sha256=content_sha256, etag=head["etag"],
            mtime=head["mtime"],
        )  # fmt: skip

        def copy(data_uri: str) -> None:
            progress = ctx.progress(f"Server-side copy {source} -> {data_uri}", head["size"])
            storage.copy(source, data_uri, progress)
            progress.done()

        def cannot_read() -> Any:
            raise AssertionError("a whole-object reading is copied, not read")

        return SourceReading(
            sha256=content_sha256,
            sha256_of=sha256_of,
            format="parquet",
            described={
                "source": source,
                "source_files": [source_file.describe()],
                "bytes": head["size"],
            },
            read=cannot_read,
            copy=copy,
            rows=rows,
            schema=schema,
        )


def _check_allowed(ctx: SourceContext, source: str, allowed: Any) -> None:
    from airflow_mlops.data.sources import SourceNotAllowedError, check_source_allowed

    try:
        check_source_allowed(source, allowed)
    except SourceNotAllowedError as err:
        raise DatasetConfigurationError(
            f"Dataset {ctx.dataset!r}: {err}", dataset=ctx.dataset, uri=source, reason="source not allowed"
        ) from err


def _list(ctx: SourceContext, storage: Storage, source: str) -> list[dict[str, Any]]:
    """The source's files with their listed sizes, within the allowed sources and the limits."""
    from airflow_mlops.data.sources import (
        SourceNotAllowedError,
        SourceTooLargeError,
        check_files_allowed,
        list_source,
    )

    entries: list[dict[str, Any]] = _call(ctx, source, lambda: list_source(storage, source))
    try:
        check_files_allowed(entries, ctx.allowed)
        ctx.limits.check(source, entries)
    except SourceNotAllowedError as err:
        raise DatasetConfigurationError(
            f"Dataset {ctx.dataset!r}: {err}", dataset=ctx.dataset, uri=source, reason="source not allowed"
        ) from err
    except SourceTooLargeError as err:
        raise DatasetError(
            f"Dataset {ctx.dataset!r}: {err}", dataset=ctx.dataset, uri=source, reason="source too large"
        ) from err
    return entries


def _check_contents(
    ctx: SourceContext, storage: Storage, source: str, entries: list[dict[str, Any]], fmt: str
) -> None:
    """Check every file's first bytes against the format (one small read each; nothing downloaded)."""
    for entry in entries:
        size = min(int(entry["size"]), SNIFF_BYTES)
        head = _call(ctx, source, partial(storage.read_range, entry["uri"], 0, size)) if size else b""
        try:
            check_content(entry["uri"], head, fmt, ctx.csv_options)
        except ValueError as err:
            ctx.fail(source, err)


def _fetch(
    storage: Storage, entries: list[dict[str, Any]], tmp: Path, progress: Callable[..., Any]
) -> list[SourceFile]:
    """Bring the listed S3 objects to local disk, and hash every file (sorted by URI)."""
    from airflow_mlops.data.sources import fetch_files

    return fetch_files(storage, entries, tmp, progress)


def _unchanged(ctx: SourceContext, source: str, files: list[SourceFile]) -> None:
    """Fail, retryable, if a local source file changed since it was listed (it is still being written)."""
    from airflow_mlops.data.sources import check_unchanged

    _call(ctx, source, lambda: check_unchanged(files))


def _call(ctx: SourceContext, source: str, call: Callable[[], Any]) -> Any:
    """Run a listing or read of the source: a file still being written fails the try, retried."""
    from airflow_mlops.data.sources import SourceChangedError

    try:
        return ctx.call(source, call)
    except SourceChangedError as err:
        raise RetryableError(
            f"Dataset {ctx.dataset!r}: {err}; nothing was published. A retry reads it again once it is "
            "complete (write files under another name, or a name starting with '.' or '_', and rename them "
            "when done)",
            dataset=ctx.dataset, uri=source, reason="source changing",
        ) from err  # fmt: skip
