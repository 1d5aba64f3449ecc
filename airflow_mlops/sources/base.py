"""
What an ingest needs from a data source: one small interface, so that a new kind of source is one module.

:class:`~airflow_mlops.operators.ingest.IngestDatasetOperator` asks its source to :meth:`DataSource.open` a
reading: the content's fingerprint (which, with how the rows are read and split, names the snapshot), a
description for the manifest and lineage, and how to get the rows. It reads them only when no snapshot of
that content exists yet. The operator writes, splits, publishes and reports the snapshot; the source only
finds, fingerprints and reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow_mlops.data.storage import is_storage_error, is_transient_error
from airflow_mlops.exceptions import DatasetError, ServiceUnavailableError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import pandas as pd

    from airflow_mlops.data.sources import SourceLimits
    from airflow_mlops.data.storage import TransferProgress
    from airflow_mlops.hooks.storage import StorageHook

__all__ = ["DataSource", "SourceContext", "SourceReading"]


@dataclass
class SourceContext:
    """
    What the ingest gives a source to read with.

    :param dataset: The dataset's name, for messages and errors.
    :param root: The snapshot root (a local folder or ``s3://bucket/prefix``).
    :param storage_hook: The storage hook of the task's ``aws_conn_id``.
    :param format: The format asked for (``csv``, ``parquet`` or ``auto``).
    :param csv_options: Extra keyword arguments of :func:`pandas.read_csv`.
    :param allowed: ``[mlops] allowed_sources``.
    :param limits: ``[mlops] max_source_files`` and ``max_source_bytes``.
    :param tmp: A folder of the task's own, removed once the snapshot is written.
    :param log: The task's logger.
    :param progress: Makes the progress reporter of a long transfer: ``progress(what, total_bytes)``.
    :param whole_copy: True when the snapshot may be the source's data as it is (no split is asked for and
        the task allows it): a source may then offer :attr:`SourceReading.copy`.
    """

    dataset: str
    root: str
    storage_hook: StorageHook
    format: str
    csv_options: dict[str, Any] | None
    allowed: Sequence[str]
    limits: SourceLimits
    tmp: Path
    log: logging.Logger | Any
    progress: Callable[[str, int], TransferProgress]
    whole_copy: bool = False

    def fail(self, uri: str, err: BaseException, what: str = "") -> NoReturn:
        """Raise the error type that fits *err*: a problem with the data, or a transient storage fault."""
        message = f"Dataset {self.dataset!r}: {what}{err}"
        if is_transient_error(err):
            raise ServiceUnavailableError(message, dataset=self.dataset, uri=uri, reason=str(err)) from err
        raise DatasetError(message, dataset=self.dataset, uri=uri, reason=str(err)) from err

    def call(self, uri: str, call: Callable[[], Any]) -> Any:
        """Run *call* (a listing or a read of the source), turning a storage failure into a dataset error."""
        try:
            return call()
        except ValueError as err:
            self.fail(uri, err)
        except FileNotFoundError as err:
            self.fail(uri, err, f"cannot read source {uri}: ")
        except Exception as err:
            if is_storage_error(err):
                self.fail(uri, err, f"cannot read source {uri}: ")
            raise


@dataclass
class SourceReading:
    """
    One reading of a source: what it holds (fingerprinted) and how to get its rows.

    :param sha256: The content hash; with :attr:`format` and the split it names the snapshot.
    :param sha256_of: What was hashed (``bytes``, ``rows``, ``s3-etag``...), kept in the manifest.
    :param format: How the rows are read (``csv``, ``parquet``, ``sql``...); part of the snapshot id.
    :param described: The manifest's account of the source: ``source`` (its URI) and whatever says where
        the rows came from (``source_files``, ``query``, ``bytes``...). Lineage reads it.
    :param read: Returns the rows (a pandas DataFrame). Called only when no snapshot of this content exists.
    :param check: Called after :attr:`read`: raises if the source changed while it was read.
    :param copy: With ``whole_copy``: copies the source's data as it is, one Parquet file, to the URI it is
        given, instead of reading it; ``rows`` and ``schema`` must then be known.
    :param rows: The row count, when known without reading (with :attr:`copy`).
    :param schema: Column name to type, when known without reading (with :attr:`copy`).
    """

    sha256: str
    sha256_of: str
    format: str
    described: dict[str, Any]
    read: Callable[[], pd.DataFrame]
    check: Callable[[], None] | None = None
    copy: Callable[[str], None] | None = None
    rows: int | None = None
    schema: dict[str, str] | None = field(default=None)


class DataSource(ABC):
    """
    Where an ingest reads its rows: files, a database query, or a source of your own.

    Subclasses implement :meth:`open`. Arguments named in ``template_fields`` are rendered by Airflow
    before the task runs, as an operator's are. Checks of literal arguments belong in ``__init__``
    (``ValueError`` at parse time); everything else is checked in :meth:`open`, raising the package's
    exceptions (:class:`~airflow_mlops.exceptions.DatasetError` for bad data,
    :class:`~airflow_mlops.exceptions.DatasetConfigurationError` for bad settings, both not retried;
    :class:`~airflow_mlops.exceptions.ServiceUnavailableError` for a transient fault, retried).
    """

    template_fields: ClassVar[Sequence[str]] = ()

    @property
    @abstractmethod
    def uri(self) -> str:
        """What the source names, as a URI (``s3://...``, a path, ``sql://<conn_id>``): messages and lineage."""

    @abstractmethod
    def open(self, ctx: SourceContext) -> SourceReading:
        """List, check and fingerprint the source, reading as little as possible."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
