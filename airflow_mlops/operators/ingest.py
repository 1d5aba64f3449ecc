"""Operator that turns raw files, or a query's rows, into an immutable, content-addressed dataset snapshot."""

from __future__ import annotations

import tempfile
import warnings
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow.sdk import Asset, BaseOperator

from airflow_mlops.data.formats import (
    FORMATS,
    check_csv_options,
    check_format,
)
from airflow_mlops.data.snapshots import (
    DATA,
    MANIFEST,
    PRODUCER,
    SHA256_OF_BYTES,
    SHA256_OF_ROWS,
    SHA256_OF_S3_ETAG,
    check_dataset_name,
    ingest_result,
    load_manifest,
    manifest_bytes,
    publish_snapshot,
    remove_stale_staging,
    resolve_data_root,
    snapshot_id,
    snapshot_spec,
    snapshot_uri,
    staging_owner,
)
from airflow_mlops.data.splits import check_split, check_split_seed, split_rows
from airflow_mlops.data.storage import (
    PROGRESS_INTERVAL_S,
    Storage,
    TransferProgress,
    is_local,
    is_transient_error,
    join,
)
from airflow_mlops.exceptions import (
    ConfigurationError,
    ConnectionSetupError,
    DatasetConfigurationError,
    DatasetError,
    ServiceUnavailableError,
)
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.sources import is_data_source
from airflow_mlops.utils.clock import utc_now_iso
from airflow_mlops.utils.results import keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import conf

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_mlops.data.sources import SourceLimits
    from airflow_mlops.results import Snapshot
    from airflow_mlops.sources.base import DataSource, SourceReading

__all__ = [
    "FORMATS",
    "SHA256_OF_BYTES",
    "SHA256_OF_ROWS",
    "SHA256_OF_S3_ETAG",
    "IngestDatasetOperator",
    "dataset_asset",
    "dataset_location",
    "ingest_result",
]

# MLflow error codes that say the tracking server failed, not the request: a retry can succeed.
_MLFLOW_TRANSIENT_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def dataset_location(name: str, data_root: str | None = None) -> str:
    """
    Where the snapshots of dataset *name* live, as a URI.

    ``<scheme>://<bucket>/<prefix>/datasets/<name>`` (``s3``, ``gs``, ``abfs``...) or
    ``file:///<path>/datasets/<name>``.

    :param name: The dataset name.
    :param data_root: The snapshot root; default ``$MLOPS_DATA_ROOT``, else ``./.mlops-data`` (made absolute).
    """
    folder = join(resolve_data_root(data_root), "datasets", check_dataset_name(name))
    return Path(folder).as_uri() if is_local(folder) else folder


def dataset_asset(name: str, data_root: str | None = None) -> Asset:
    """
    The Airflow Asset that stands for dataset *name*: its real location, :func:`dataset_location`.

    Each ingest emits an event on it whose extra names the snapshot (``uri``, ``snapshot_id``).

    :param name: The dataset name.
    :param data_root: The snapshot root, as the ingest is given it; default ``$MLOPS_DATA_ROOT``, else
        ``./.mlops-data``, resolved where the DAG is parsed.
    """
    uri = dataset_location(name, data_root)
    return Asset(name=uri, uri=uri)


class IngestDatasetOperator(BaseOperator):
    """
    Snapshot CSV or Parquet files, a SQL query's rows or any data source as an immutable dataset snapshot.

    The snapshot is written to ``<data_root>/datasets/<dataset_name>/<snapshot_id>/``: ``data.parquet``
    (all rows), one ``<split>.parquet`` per requested split, and ``_manifest.json``, written last. The
    snapshot id is the SHA-256 of the source content hash combined with the canonical JSON of how it is read
    and split (format, CSV options, split fractions and seed): the same input gives the same id, and a
    snapshot whose manifest already exists is returned as it is, without writing anything.

    When the source is one ``s3://`` Parquet object, the root is on S3 and no split is asked for, the object
    is copied server-side into the snapshot as-is (no data bytes pass through the worker); row count and
    schema come from the Parquet footer (ranged GETs) and the content hash from the object's
    ``ChecksumSHA256`` when the store keeps one, else from its ETag and size (manifest ``sha256_of`` says
    which).

    File sources are bounded by the ``[mlops]`` configuration, checked before any byte is downloaded or
    hashed: the source (resolved: symlinks, ``..``) and every file it names must lie within
    ``allowed_sources``, it may hold at most ``max_source_files`` files and ``max_source_bytes`` bytes
    (listed sizes), and each file's first bytes must match its format (``PAR1`` for Parquet; CSV compressed
    as its name says, and UTF-8 text when read as UTF-8). A source outside ``allowed_sources`` fails at once
    with :class:`~airflow_mlops.exceptions.DatasetConfigurationError`. Staging folders a killed try left
    under a local root are removed by the next try (or, once an hour old, by any later ingest).

    Returns (XCom) a :class:`~airflow_mlops.results.Snapshot`, ``{"name", "snapshot_id", "uri", "sha256",
    "rows", "schema", "splits"}`` where ``splits`` maps each split to ``<uri>#<split>``; operators that take a
    snapshot URI take it whole (``ingest.output``). Every Asset among the task's outlets (by default
    :func:`dataset_asset`, the dataset's real location ``s3://.../datasets/<dataset_name>`` or
    ``file:///.../datasets/<dataset_name>``) gets an event whose extra holds ``{"uri", "sha256",
    "snapshot_id", "name", "rows"}``. With the ``openlineage`` extra, the task reports the source it read and
    the snapshot and split files it wrote (schema, row counts) to OpenLineage.

    :param dataset_name: Name of the dataset: letters, digits, ``.``, ``_``, ``-``. (templated)
    :param source: A local file, directory or glob, or an ``s3://`` key, prefix or glob (a
        :class:`~airflow_mlops.sources.FileSource`; directory and prefix listings skip files whose names start
        with ``.`` or ``_``), or any :class:`~airflow_mlops.sources.DataSource`, whose own template fields are
        rendered. Not with ``sql``. (templated)
    :param format: ``"csv"``, ``"parquet"``, or ``"auto"`` to tell from the file names.
    :param data_root: Snapshot root, a local directory or ``s3://bucket/prefix``; default
        ``$MLOPS_DATA_ROOT``, else ``./.mlops-data``. (templated)
    :param split: Fractions of rows per split, e.g. ``{"train": 0.7, "valid": 0.15, "holdout": 0.15}``;
        names from train/valid/holdout, each fraction positive, summing to 1. None writes no splits.
    :param split_seed: Seed of the row permutation that assigns rows to splits.
    :param label_column: If given, the ingest fails before writing anything when this column is missing.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` sources and roots (None: boto3 defaults).
    :param csv_options: Extra keyword arguments for :func:`pandas.read_csv` (JSON-serialisable, e.g.
        ``{"sep": ";", "encoding": "latin-1"}``); they are part of the snapshot id.
    :param sql: A query to snapshot instead of files, run through ``sql_conn_id`` (the same as
        ``source=SqlSource(sql_conn_id, sql)``). (templated)
    :param sql_conn_id: Any Airflow connection whose hook is a common.sql ``DbApiHook`` (postgres, sqlite,
        ...). Required with ``sql``.
    :param server_side_copy: Copy a single S3 Parquet object server-side when possible (see above).
    :param asset: The Airflow Asset to emit an event for; default :func:`dataset_asset` of the dataset and
        ``data_root`` when neither is templated. Assets passed as ``outlets`` get the event too.
    :param mlflow_run_id: If given, the snapshot is logged to this MLflow run as a dataset input
        (context ``training``). (templated)
    :param mlflow_conn_id: Airflow ``mlflow`` connection used with ``mlflow_run_id``.
    :param progress_interval: Seconds between two progress lines of a long S3 transfer.
    """

    template_fields: Sequence[str] = (
        "dataset_name", "source", "data_root", "label_column", "sql", "mlflow_run_id", "aws_conn_id",
        "sql_conn_id", "mlflow_conn_id",
    )  # fmt: skip
    template_fields_renderers = {"sql": "sql"}

    def __init__(
        self,
        *,
        dataset_name: str,
        source: str | None = None,
        format: str = "auto",
        data_root: str | None = None,
        split: dict[str, float] | None = None,
        split_seed: int = 42,
        label_column: str | None = None,
        aws_conn_id: str | None = StorageHook.default_conn_name,
        csv_options: dict[str, Any] | None = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        server_side_copy: bool = True,
        asset: Asset | None = None,
        mlflow_run_id: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        progress_interval: float = PROGRESS_INTERVAL_S,
        **kwargs: Any,
    ) -> None:
        if asset is not None and not isinstance(asset, Asset):
            raise ValueError(f"asset must be an airflow.sdk.Asset or None, got {asset!r}")
        default_asset = False
        if not is_templated(dataset_name):
            check_dataset_name(dataset_name)
            if asset is None and not is_templated(data_root):
                asset, default_asset = dataset_asset(dataset_name, data_root), True
        if asset is not None:
            outlets = kwargs.pop("outlets", None) or []
            outlets = list(outlets) if isinstance(outlets, list | tuple) else [outlets]
            if asset not in outlets:
                outlets.append(asset)
            kwargs["outlets"] = outlets
        super().__init__(**keyed_results(kwargs))
        if (source is None) == (sql is None):
            raise ValueError(
                "Pass exactly one of source (files or an s3:// location, or a DataSource) or sql (a query)"
            )
        # Literal arguments are checked now; templates and other tasks' results once rendered, in execute.
        literal_source = (
            source is not None and not is_templated(source) and not is_data_source(source)
        )
        if literal_source and not (isinstance(source, str) and source.strip()):
            raise ValueError(f"source must be a non-empty path, glob or s3:// URI, got {source!r}")
        if sql is not None:
            if not is_templated(sql) and (not isinstance(sql, str) or not sql.strip()):
                raise ValueError(f"sql must be a non-empty query, got {sql!r}")
            if not isinstance(sql_conn_id, str) or not sql_conn_id:
                raise ValueError("sql needs sql_conn_id: the Airflow connection of the database to query")
        if not is_templated(data_root):
            _check_data_root(data_root)
        if not is_templated(label_column):
            _check_label_column(label_column)
        if not isinstance(progress_interval, int | float) or progress_interval <= 0:
            raise ValueError(
                f"progress_interval must be a positive number of seconds, got {progress_interval!r}"
            )
        self.dataset_name = dataset_name
        self.source = source
        self.format = check_format(format)
        self.data_root = data_root
        self.split = check_split(split)
        self.split_seed = check_split_seed(split_seed)
        self.label_column = label_column
        self.aws_conn_id = aws_conn_id
        self.csv_options = check_csv_options(csv_options)
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.server_side_copy = server_side_copy
        self.asset = asset
        self._default_asset = default_asset
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        self.progress_interval = float(progress_interval)

    @cached_property
    def hook(self) -> StorageHook:
        """The storage hook of ``aws_conn_id`` (built on first use, never at parse time)."""
        return StorageHook(aws_conn_id=self.aws_conn_id)

    def _progress(self, what: str, total: int) -> TransferProgress:
        return TransferProgress(what, total, interval=self.progress_interval, logger=self.log)

    @keep_result
    def execute(self, context: Context) -> Snapshot:
        """Snapshot the source (or the query's rows); return the snapshot's description."""
        name = self._rendered_name()
        root = resolve_data_root(self.data_root)
        self._staging_owner, self._attempt = self._staging_tag(context)
        removed = remove_stale_staging(root, name, self._staging_owner, self._attempt)
        if removed:
            self.log.info(
                "Dataset %s: removed %d staging folder(s) of interrupted ingests", name, len(removed)
            )
        manifest = self._ingest(name, root, self.data_source(name))
        result = ingest_result(manifest)
        self._emit_asset_events(context, result)
        if self.mlflow_run_id:
            self._log_mlflow_input(manifest)
        return cast("Snapshot", result)

    @staticmethod
    def _staging_tag(context: Context) -> tuple[str | None, int | None]:
        """The task instance's staging owner tag and try number (None outside a task run)."""
        ti = context.get("ti") if hasattr(context, "get") else None
        try:
            owner = staging_owner(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))  # type: ignore[union-attr]
            return owner, int(ti.try_number)  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            return None, None

    @staticmethod
    def source_policy() -> tuple[list[str], SourceLimits]:
        """The allowed sources and limits of ``[mlops]`` (read when a task runs, never at parse time)."""
        from airflow_mlops.data.sources import SourceLimits
        from airflow_mlops.utils.config import allowed_sources

        allowed = allowed_sources()
        limits = SourceLimits()
        try:
            limits = SourceLimits(
                max_files=conf.getint("mlops", "max_source_files", fallback=limits.max_files),
                max_bytes=conf.getint("mlops", "max_source_bytes", fallback=limits.max_bytes),
            )
        except (ValueError, TypeError) as err:
            raise ConfigurationError(
                f"[mlops] max_source_files and max_source_bytes must be whole numbers: {err}"
            ) from err
        return allowed, limits

    def _rendered_name(self) -> str:
        """The rendered dataset name, checked again; the rendered source and query, checked again."""
        try:
            name = check_dataset_name(self.dataset_name)
        except ValueError as err:
            raise DatasetConfigurationError(
                str(err), dataset=str(self.dataset_name), reason="invalid dataset name"
            ) from err
        if (
            self.source is not None
            and not is_data_source(self.source)
            and (not isinstance(self.source, str) or not self.source.strip())
        ):
            raise DatasetConfigurationError(
                f"Dataset {name!r}: source must be a non-empty path, glob or s3:// URI, got {self.source!r}",
                dataset=name, uri=str(self.source), reason="empty source",
            )  # fmt: skip
        try:
            _check_data_root(self.data_root)
            _check_label_column(self.label_column)
        except ValueError as err:
            raise DatasetConfigurationError(f"Dataset {name!r}: {err} once rendered", dataset=name) from err
        if self.sql is not None and (not isinstance(self.sql, str) or not self.sql.strip()):
            raise ConfigurationError(
                f"Dataset {name!r}: sql must be a non-empty query, got {self.sql!r}", dataset=name
            )
        return name

    @staticmethod
    def _fail(name: str, uri: str, err: BaseException, what: str = "") -> NoReturn:
        """Raise the error type that fits *err*: a problem with the data, or a transient storage fault."""
        message = f"Dataset {name!r}: {what}{err}"
        if is_transient_error(err):
            raise ServiceUnavailableError(message, dataset=name, uri=uri, reason=str(err)) from err
        raise DatasetError(message, dataset=name, uri=uri, reason=str(err)) from err

    # -- reading the source -----------------------------------------------------------------------------

    def data_source(self, name: str | None = None) -> DataSource:
        """The rendered source: the ``sql`` query's, a :class:`~airflow_mlops.sources.DataSource`, or files."""
        from airflow_mlops.sources.files import FileSource
        from airflow_mlops.sources.sql import SqlSource

        name = name or str(self.dataset_name)
        if self.sql is not None:
            try:
                return SqlSource(str(self.sql_conn_id), self.sql)
            except ValueError as err:
                raise ConfigurationError(f"Dataset {name!r}: {err} once rendered", dataset=name) from err
        if is_data_source(self.source):
            return self.source
        if isinstance(self.source, str) and self.source.strip():
            return FileSource(self.source)
        raise DatasetConfigurationError(
            f"Dataset {name!r}: source must be a non-empty path, glob or s3:// URI, or a DataSource, "
            f"got {self.source!r}",
            dataset=name, uri=str(self.source), reason="empty source",
        )  # fmt: skip

    def _ingest(self, name: str, root: str, source: DataSource) -> dict[str, Any]:
        from airflow_mlops.sources.base import SourceContext

        allowed, limits = self.source_policy()
        storage = self.hook.storage_for(root)
        with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as tmp:
            ctx = SourceContext(
                dataset=name, root=root, storage_hook=self.hook, format=self.format,
                csv_options=self.csv_options, allowed=allowed, limits=limits, tmp=Path(tmp), log=self.log,
                progress=self._progress, whole_copy=bool(self.server_side_copy and not self.split),
            )  # fmt: skip
            reading = source.open(ctx)
            uri = str(reading.described.get("source") or source.uri)
            snapshot = snapshot_id(reading.sha256, self._spec(reading.format))
            target = snapshot_uri(root, name, snapshot)
            self.log.info(
                "Dataset %s: %s %s -> snapshot %s", name, reading.sha256_of, reading.sha256, snapshot
            )
            if reading.copy is not None:
                self._check_label(name, uri, list(reading.schema or {}))
            if storage.exists(join(target, MANIFEST)):
                return self._existing(storage, name, uri, target)
            described = {
                **reading.described,
                "source": uri,
                "format": reading.format,
                "csv_options": self._spec(reading.format)["csv_options"],
                "sha256": reading.sha256,
                "sha256_of": reading.sha256_of,
            }
            if reading.copy is not None:
                return self._copy_snapshot(storage, name, target, snapshot, reading, described)
            df = reading.read()
            if reading.check is not None:
                reading.check()
            return self._snapshot_frame(storage, name, uri, target, snapshot, df, described, Path(tmp))

    # -- snapshots ---------------------------------------------------------------------------------------

    def _spec(self, fmt: str) -> dict[str, Any]:
        return snapshot_spec(fmt, self.csv_options, self.split, self.split_seed)

    def _existing(self, storage: Storage, name: str, source: str, target: str) -> dict[str, Any]:
        manifest = load_manifest(target, storage)
        self._check_label(name, source, list(manifest["schema"]))
        self.log.info("Snapshot %s already exists; nothing written", target)
        return manifest

    def _check_label(self, name: str, source: str, columns: list[str]) -> None:
        # The file's columns are not listed: a rejected file's header may be data.
        if self.label_column and self.label_column not in columns:
            raise DatasetError(
                f"Dataset {name!r}: label column {self.label_column!r} is missing from {source} "
                f"(it has {len(columns)} other columns)",
                dataset=name, uri=source, reason="missing label column",
            )  # fmt: skip

    def _snapshot_frame(
        self,
        storage: Storage,
        name: str,
        source: str,
        target: str,
        snapshot: str,
        df: pd.DataFrame,
        described: dict[str, Any],
        tmp: Path,
    ) -> dict[str, Any]:
        self._check_label(name, source, [str(c) for c in df.columns])
        try:
            parts = split_rows(df, self.split, self.split_seed)
        except ValueError as err:
            self._fail(name, source, err)
        manifest = {
            "name": name,
            "snapshot_id": snapshot,
            "uri": target,
            **described,
            "rows": len(df),
            "schema": {str(column): str(dtype) for column, dtype in df.dtypes.items()},
            "split": (
                {
                    "seed": self.split_seed,
                    "fractions": self.split,
                    "rows": {split: len(part) for split, part in parts.items()},
                }
                if self.split
                else None
            ),
            "files": {key: f"{key}.parquet" for key in (DATA, *parts)},
            "created_at": utc_now_iso(),
            "producer": PRODUCER,
        }
        try:
            manifest = publish_snapshot(
                storage, target, {DATA: df, **parts}, manifest, tmp / "out", self._progress,
                owner=getattr(self, "_staging_owner", None), attempt=getattr(self, "_attempt", None),
            )  # fmt: skip
        except ValueError as err:
            self._fail(name, source, err)
        self.log.info(
            "Snapshot %s of dataset %s: %d rows, %d columns, splits %s",
            target, name, manifest["rows"], len(manifest["schema"]), (manifest["split"] or {}).get("rows"),
        )  # fmt: skip
        return manifest

    # -- server-side copy --------------------------------------------------------------------------------

    def _copy_snapshot(
        self,
        storage: Storage,
        name: str,
        target: str,
        snapshot: str,
        reading: SourceReading,
        described: dict[str, Any],
    ) -> dict[str, Any]:
        """Snapshot the source's data as it is (a server-side copy): no rows through the worker."""
        assert reading.copy is not None
        reading.copy(join(target, f"{DATA}.parquet"))
        manifest = {
            "name": name,
            "snapshot_id": snapshot,
            "uri": target,
            **described,
            "rows": reading.rows,
            "schema": reading.schema,
            "split": None,
            "files": {DATA: f"{DATA}.parquet"},
            "copy": "server-side",
            "created_at": utc_now_iso(),
            "producer": PRODUCER,
        }
        storage.write_bytes(join(target, MANIFEST), manifest_bytes(manifest))
        return manifest

    # -- events and lineage ------------------------------------------------------------------------------

    def _emit_asset_events(self, context: Context, result: dict[str, Any]) -> None:
        outlet_events = context.get("outlet_events") if hasattr(context, "get") else None
        assets = [outlet for outlet in (self.outlets or []) if isinstance(outlet, Asset)]
        if outlet_events is None or not assets:
            return
        extra = {key: result[key] for key in ("name", "snapshot_id", "uri", "sha256", "rows")}
        if self._default_asset and self.asset is not None:
            location = dataset_location(result["name"], self.data_root)
            if self.asset.uri != location:
                self.log.warning(
                    "Asset %s is not where the snapshot was written (%s): the DAG was parsed with another "
                    "data root. Set data_root (or $MLOPS_DATA_ROOT) alike for the DAG processor and workers.",
                    self.asset.uri, location,
                )  # fmt: skip
        for asset in assets:
            outlet_events[asset].extra = dict(extra)
            self.log.info("Asset event for %s: snapshot %s", asset.uri, result["uri"])

    def _log_mlflow_input(self, manifest: dict[str, Any]) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        from airflow_mlops.hooks.mlflow import MLflowHook

        with warnings.catch_warnings():
            # Local paths match two registered local-artifact source kinds; MLflow picks one and warns.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(manifest["uri"])
        dataset = MetaDataset(  # type: ignore[abstract]  # MLflow's own concrete dataset of a source
            source=source,
            name=manifest["name"],
            digest=manifest["snapshot_id"][:36],
        )
        entity = DatasetInput(
            dataset=dataset._to_mlflow_entity(),
            tags=[
                InputTag(key="mlflow.data.context", value="training"),
                InputTag(key="mlops.data.sha256", value=manifest["sha256"]),
                InputTag(key="mlops.data.rows", value=str(manifest["rows"])),
            ],
        )
        client = MLflowHook(mlflow_conn_id=self.mlflow_conn_id).client
        try:
            client.log_inputs(str(self.mlflow_run_id), datasets=[entity])
        except Exception as err:
            message = (
                f"Dataset {manifest['name']!r}: cannot log snapshot {manifest['uri']} to MLflow run "
                f"{self.mlflow_run_id!r} (connection {self.mlflow_conn_id!r}): {err}"
            )
            fields = {"dataset": manifest["name"], "uri": manifest["uri"], "reason": str(err)}
            transient = getattr(err, "error_code", None) in _MLFLOW_TRANSIENT_CODES or isinstance(
                err, ConnectionError | TimeoutError | ServiceUnavailableError
            )
            if transient:
                raise ServiceUnavailableError(message, **fields) from err
            raise ConnectionSetupError(message, **fields) from err
        self.log.info(
            "Logged snapshot %s to MLflow run %s as a dataset input", manifest["uri"], self.mlflow_run_id
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The source read and the snapshot written (schema, row counts), for OpenLineage."""
        from airflow_mlops.lineage.openlineage import ingest_lineage
        from airflow_mlops.utils.results import kept_result

        result = kept_result(self)
        if not result:
            return ingest_lineage(None)
        return ingest_lineage(load_manifest(result["uri"], self.hook.storage_for(result["uri"])))


def _check_data_root(data_root: Any) -> None:
    if data_root is not None and (not isinstance(data_root, str) or not data_root.strip()):
        raise ValueError(f"data_root must be a local directory or s3:// URI (or None), got {data_root!r}")


def _check_label_column(label_column: Any) -> None:
    if label_column is not None and (not isinstance(label_column, str) or not label_column):
        raise ValueError(f"label_column must be a column name or None, got {label_column!r}")
