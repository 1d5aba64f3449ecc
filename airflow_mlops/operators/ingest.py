"""Operator that turns raw files into an immutable, content-addressed dataset snapshot."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseHook, BaseOperator

from airflow_mlops import __version__
from airflow_mlops.data.snapshots import (
    DATA,
    MANIFEST,
    SPLIT_NAMES,
    check_dataset_name,
    load_manifest,
    resolve_data_root,
    snapshot_uri,
    visible_files,
)
from airflow_mlops.data.storage import (
    PROGRESS_INTERVAL_S,
    Storage,
    TransferProgress,
    has_glob,
    is_s3,
    join,
    local_path,
    split_s3,
)
from airflow_mlops.exceptions import ConnectionSetupError, DatasetError
from airflow_mlops.hooks.storage import StorageHook

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from airflow.sdk import Context

FORMATS = ("auto", "csv", "parquet")
# File-name endings understood by format="auto" (compressed CSV is decompressed by pandas).
_FORMAT_BY_SUFFIX = (
    (".parquet", "parquet"),
    (".parq", "parquet"),
    (".pq", "parquet"),
    (".csv", "csv"),
    (".csv.gz", "csv"),
    (".csv.bz2", "csv"),
    (".csv.xz", "csv"),
    (".csv.zst", "csv"),
    (".csv.zip", "csv"),
)
# read_csv arguments that would change what a "file" is; everything else is passed through.
_RESERVED_CSV_OPTIONS = frozenset({"filepath_or_buffer", "iterator", "chunksize"})
_CHUNK = 1 << 20
ASSET_SCHEME = "mlops-dataset"
# What a manifest's ``sha256`` is the hash of (manifest key ``sha256_of``).
SHA256_OF_BYTES = "bytes"
SHA256_OF_S3_ETAG = "s3-etag+size"
SHA256_OF_ROWS = "rows"


def dataset_asset(name: str) -> Asset:
    """The Airflow Asset that stands for dataset *name*: ``mlops-dataset://<name>``."""
    uri = f"{ASSET_SCHEME}://{check_dataset_name(name)}"
    return Asset(name=uri, uri=uri)


def _is_templated(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _check_split(split: object) -> dict[str, float] | None:
    """Validate split fractions; return them in the fixed order train, valid, holdout."""
    if split is None:
        return None
    example = '{"train": 0.7, "valid": 0.15, "holdout": 0.15}'
    if not isinstance(split, dict) or not split:
        raise ValueError(f"split must be a dict of split name to fraction, like {example}; got {split!r}")
    unknown = sorted(str(name) for name in split if name not in SPLIT_NAMES)
    if unknown:
        raise ValueError(f"Unknown split name(s) {unknown}: allowed names are {', '.join(SPLIT_NAMES)}")
    for name, fraction in split.items():
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not math.isfinite(fraction)
            or not 0 < fraction <= 1
        ):
            raise ValueError(f"split fraction of {name!r} must be a number in (0, 1], got {fraction!r}")
    total = sum(split.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} from {split!r}")
    return {name: float(split[name]) for name in SPLIT_NAMES if name in split}


def _format_from_name(uri: str) -> str | None:
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix, fmt in _FORMAT_BY_SUFFIX:
        if name.endswith(suffix):
            return fmt
    return None


_visible = visible_files


@dataclass(frozen=True)
class _SourceFile:
    uri: str
    local: Path
    size: int
    sha256: str
    etag: str | None = None
    mtime: float | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri, "bytes": self.size, "sha256": self.sha256}
        if self.etag:
            out["etag"] = self.etag
        if self.mtime is not None:
            out["mtime"] = self.mtime
        return out


def ingest_result(manifest: dict[str, Any]) -> dict[str, Any]:
    """The XCom result of an ingest, built from a snapshot manifest (so retries return the same value)."""
    uri = manifest["uri"]
    return {
        "name": manifest["name"],
        "snapshot_id": manifest["snapshot_id"],
        "uri": uri,
        "sha256": manifest["sha256"],
        "rows": manifest["rows"],
        "schema": manifest["schema"],
        "splits": {split: f"{uri}#{split}" for split in manifest["files"] if split != DATA},
    }


class IngestDatasetOperator(BaseOperator):
    """
    Snapshot raw CSV or Parquet files, or the result of a SQL query, as an immutable dataset snapshot.

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

    Returns (XCom) ``{"name", "snapshot_id", "uri", "sha256", "rows", "schema", "splits"}`` where
    ``splits`` maps each split to ``<uri>#<split>``. Every Asset among the task's outlets (by default
    ``mlops-dataset://<dataset_name>``) gets an event whose extra holds ``{"uri", "sha256", "snapshot_id",
    "name", "rows"}``.

    :param dataset_name: Name of the dataset: letters, digits, ``.``, ``_``, ``-``. (templated)
    :param source: A local file, directory or glob, or an ``s3://`` key, prefix or glob. Directory and
        prefix listings skip files whose names start with ``.`` or ``_``. Not with ``sql``. (templated)
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
    :param sql: A query to snapshot instead of files, run through ``sql_conn_id``. (templated)
    :param sql_conn_id: Any Airflow connection whose hook is a common.sql ``DbApiHook`` (postgres, sqlite,
        ...). Required with ``sql``.
    :param server_side_copy: Copy a single S3 Parquet object server-side when possible (see above).
    :param asset: The Airflow Asset to emit an event for; default ``mlops-dataset://<dataset_name>`` when
        the name is not templated. Assets passed as ``outlets`` get the event too.
    :param mlflow_run_id: If given, the snapshot is logged to this MLflow run as a dataset input
        (context ``training``). (templated)
    :param mlflow_conn_id: Airflow ``mlflow`` connection used with ``mlflow_run_id``.
    :param progress_interval: Seconds between two progress lines of a long S3 transfer.
    """

    template_fields: Sequence[str] = (
        "dataset_name", "source", "data_root", "label_column", "sql", "mlflow_run_id",
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
        if asset is None and not _is_templated(dataset_name):
            check_dataset_name(dataset_name)
            asset = dataset_asset(dataset_name)
        if asset is not None:
            outlets = kwargs.pop("outlets", None) or []
            outlets = list(outlets) if isinstance(outlets, list | tuple) else [outlets]
            if asset not in outlets:
                outlets.append(asset)
            kwargs["outlets"] = outlets
        super().__init__(**kwargs)
        if not _is_templated(dataset_name):
            check_dataset_name(dataset_name)
        if (source is None) == (sql is None):
            raise ValueError("Pass exactly one of source (files or an s3:// location) or sql (a query)")
        if source is not None and (not isinstance(source, str) or not source.strip()):
            raise ValueError(f"source must be a non-empty path, glob or s3:// URI, got {source!r}")
        if sql is not None:
            if not isinstance(sql, str) or not sql.strip():
                raise ValueError(f"sql must be a non-empty query, got {sql!r}")
            if not isinstance(sql_conn_id, str) or not sql_conn_id:
                raise ValueError("sql needs sql_conn_id: the Airflow connection of the database to query")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if data_root is not None and (not isinstance(data_root, str) or not data_root.strip()):
            raise ValueError(f"data_root must be a local directory or s3:// URI (or None), got {data_root!r}")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise ValueError(f"split_seed must be a non-negative integer, got {split_seed!r}")
        if label_column is not None and (not isinstance(label_column, str) or not label_column):
            raise ValueError(f"label_column must be a column name or None, got {label_column!r}")
        if not isinstance(progress_interval, int | float) or progress_interval <= 0:
            raise ValueError(
                f"progress_interval must be a positive number of seconds, got {progress_interval!r}"
            )
        if csv_options is not None:
            if not isinstance(csv_options, dict):
                raise ValueError(
                    f"csv_options must be a dict of pandas.read_csv arguments, got {csv_options!r}"
                )
            reserved = sorted(_RESERVED_CSV_OPTIONS & set(csv_options))
            if reserved:
                raise ValueError(f"csv_options may not set {reserved}: the operator reads whole files")
            try:
                _canonical_json(csv_options)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"csv_options must be JSON-serialisable (they are part of the snapshot id): {err}"
                ) from err
        self.dataset_name = dataset_name
        self.source = source
        self.format = format
        self.data_root = data_root
        self.split = _check_split(split)
        self.split_seed = split_seed
        self.label_column = label_column
        self.aws_conn_id = aws_conn_id
        self.csv_options = dict(csv_options or {})
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.server_side_copy = server_side_copy
        self.asset = asset
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        self.progress_interval = float(progress_interval)

    @cached_property
    def hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)


    def _progress(self, what: str, total: int) -> TransferProgress:
        return TransferProgress(what, total, interval=self.progress_interval, logger=self.log)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            name = check_dataset_name(self.dataset_name)
        except ValueError as err:
            raise DatasetError(str(err)) from err
        root = resolve_data_root(self.data_root)
        if self.sql is not None:
            manifest = self._ingest_sql(name, root)
        else:
            manifest = self._ingest_files(name, root)
        result = ingest_result(manifest)
        self._emit_asset_events(context, result)
        if self.mlflow_run_id:
            self._log_mlflow_input(manifest)
        return result

    def _ingest_files(self, name: str, root: str) -> dict[str, Any]:
        source = (self.source or "").strip()
        if not is_s3(source):
            source = os.path.abspath(os.path.expanduser(str(local_path(source))))
        storage = self.hook.storage_for(source, root)

        copied = self._try_server_side_copy(storage, name, source, root)
        if copied is not None:
            return copied

        with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as tmp:
            files = self._fetch_sources(storage, name, source, Path(tmp) / "source")
            fmt = self._detect_format(name, files)
            source_sha256 = self._combined_sha256(files)
            spec = self._spec(fmt)
            snapshot_id = self._snapshot_id(source_sha256, spec)
            target = snapshot_uri(root, name, snapshot_id)
            self.log.info(
                "Dataset %s: %d source file(s), %d bytes, sha256 %s -> snapshot %s",
                name, len(files), sum(f.size for f in files), source_sha256, snapshot_id,
            )  # fmt: skip

            if storage.exists(join(target, MANIFEST)):
                return self._existing(storage, name, source, target)

            df = self._read(name, files, fmt)
            manifest = {
                "source": source,
                "source_files": [f.describe() for f in files],
                "format": fmt,
                "csv_options": spec["csv_options"],
                "bytes": sum(f.size for f in files),
                "sha256": source_sha256,
                "sha256_of": SHA256_OF_BYTES,
            }
            return self._snapshot_frame(storage, name, source, target, snapshot_id, df, manifest, Path(tmp))

    def _ingest_sql(self, name: str, root: str) -> dict[str, Any]:
        import pandas as pd

        storage = self.hook.storage_for(root)
        query = (self.sql or "").strip()
        source = f"sql://{self.sql_conn_id}"
        try:
            db_hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
        except Exception as err:
            raise ConnectionSetupError(
                f"Dataset {name!r}: cannot build a database hook from connection {self.sql_conn_id!r}: {err}. "
                "Define the connection, and install the Airflow provider of its type."
            ) from err
        if not hasattr(db_hook, "get_df") and not hasattr(db_hook, "get_pandas_df"):
            raise ConnectionSetupError(
                f"Dataset {name!r}: connection {self.sql_conn_id!r} gives a {type(db_hook).__name__}, which "
                "is not a common.sql DbApiHook (no get_df): use a SQL database connection"
            )
        self.log.info("Dataset %s: running query on connection %s", name, self.sql_conn_id)
        try:
            if hasattr(db_hook, "get_df"):
                df = db_hook.get_df(query, df_type="pandas")
            else:  # common.sql before 1.26
                df = db_hook.get_pandas_df(query)
        except Exception as err:
            raise DatasetError(
                f"Dataset {name!r}: query on connection {self.sql_conn_id!r} failed: {err}"
            ) from err
        df.columns = [str(column) for column in df.columns]
        if len(df) == 0:
            raise DatasetError(f"Dataset {name!r}: query on connection {self.sql_conn_id!r} returned no rows")
        # Content hash of the rows: per-row hashes (pandas) plus column names and dtypes.
        digest = hashlib.sha256(
            _canonical_json({str(c): str(t) for c, t in df.dtypes.items()}).encode()
            + "\n".join(map(str, df.columns)).encode()
        )
        digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
        content_sha256 = digest.hexdigest()
        spec = self._spec("sql")
        snapshot_id = self._snapshot_id(content_sha256, spec)
        target = snapshot_uri(root, name, snapshot_id)
        self.log.info("Dataset %s: query returned %d rows, sha256 %s -> snapshot %s",
                      name, len(df), content_sha256, snapshot_id)  # fmt: skip
        if storage.exists(join(target, MANIFEST)):
            return self._existing(storage, name, source, target)
        manifest = {
            "source": source,
            "query": query,
            "source_files": [],
            "format": "sql",
            "csv_options": None,
            "bytes": int(df.memory_usage(index=False, deep=True).sum()),
            "sha256": content_sha256,
            "sha256_of": SHA256_OF_ROWS,
        }
        with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as tmp:
            return self._snapshot_frame(storage, name, source, target, snapshot_id, df, manifest, Path(tmp))

    def _spec(self, fmt: str) -> dict[str, Any]:
        return {
            "format": fmt,
            "csv_options": self.csv_options if fmt == "csv" else None,
            "split": {"seed": self.split_seed, "fractions": self.split} if self.split else None,
        }

    @staticmethod
    def _snapshot_id(content_sha256: str, spec: dict[str, Any]) -> str:
        return hashlib.sha256(f"{content_sha256}\n{_canonical_json(spec)}".encode()).hexdigest()

    def _existing(self, storage: Storage, name: str, source: str, target: str) -> dict[str, Any]:
        manifest = load_manifest(target, storage)
        self._check_label(name, source, list(manifest["schema"]))
        self.log.info("Snapshot %s already exists; nothing written", target)
        return manifest

    def _snapshot_frame(
        self,
        storage: Storage,
        name: str,
        source: str,
        target: str,
        snapshot_id: str,
        df: pd.DataFrame,
        described: dict[str, Any],
        tmp: Path,
    ) -> dict[str, Any]:
        self._check_label(name, source, [str(c) for c in df.columns])
        parts = self._split_rows(name, df)
        manifest = {
            "name": name,
            "snapshot_id": snapshot_id,
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
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "producer": f"airflow-provider-mlops {__version__}",
        }
        frames = {DATA: df, **parts}
        manifest = self._publish(storage, name, target, frames, manifest, tmp / "out")
        self.log.info(
            "Snapshot %s of dataset %s: %d rows, %d columns, splits %s",
            target, name, manifest["rows"], len(manifest["schema"]), (manifest["split"] or {}).get("rows"),
        )  # fmt: skip
        return manifest

    # -- server-side copy --------------------------------------------------------------------------------

    def _try_server_side_copy(
        self, storage: Storage, name: str, source: str, root: str
    ) -> dict[str, Any] | None:
        """Snapshot one S3 Parquet object by a server-side copy; None when that does not apply."""
        if not (self.server_side_copy and is_s3(source) and is_s3(root) and not self.split):
            return None
        if has_glob(source) or source.endswith("/") or self.format == "csv":
            return None
        if self.format == "auto" and _format_from_name(source) != "parquet":
            return None
        try:
            head = storage.head(source)
        except FileNotFoundError:
            return None  # maybe a prefix: the general path resolves it and reports what is missing
        except Exception as err:
            if type(err).__module__.startswith(("botocore", "boto3")):
                raise DatasetError(f"Dataset {name!r}: cannot read source {source}: {err}") from err
            raise
        if head["size"] == 0:
            raise DatasetError(f"Dataset {name!r}: {source} is empty (0 bytes)")
        rows, schema = self._parquet_footer(storage, name, source, head["size"])
        self._check_label(name, source, list(schema))
        if head["sha256"]:
            content_sha256, sha256_of = head["sha256"], SHA256_OF_BYTES
        else:
            basis = f"s3-etag:{head['etag']}\nsize:{head['size']}"
            content_sha256, sha256_of = hashlib.sha256(basis.encode()).hexdigest(), SHA256_OF_S3_ETAG
        snapshot_id = self._snapshot_id(content_sha256, self._spec("parquet"))
        target = snapshot_uri(root, name, snapshot_id)
        self.log.info(
            "Dataset %s: one Parquet object, %d bytes, %d rows (from its footer), %s %s -> snapshot %s "
            "(server-side copy)",
            name, head["size"], rows, sha256_of, content_sha256, snapshot_id,
        )  # fmt: skip
        if storage.exists(join(target, MANIFEST)):
            return self._existing(storage, name, source, target)
        data_uri = join(target, f"{DATA}.parquet")
        progress = self._progress(f"Server-side copy {source} -> {data_uri}", head["size"])
        storage.copy(source, data_uri, progress)
        progress.done()
        source_file = _SourceFile(
            uri=source, local=Path(), size=head["size"], sha256=content_sha256, etag=head["etag"],
            mtime=head["mtime"],
        )  # fmt: skip
        manifest = {
            "name": name,
            "snapshot_id": snapshot_id,
            "uri": target,
            "source": source,
            "source_files": [source_file.describe()],
            "format": "parquet",
            "csv_options": None,
            "rows": rows,
            "schema": schema,
            "bytes": head["size"],
            "sha256": content_sha256,
            "sha256_of": sha256_of,
            "split": None,
            "files": {DATA: f"{DATA}.parquet"},
            "copy": "server-side",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "producer": f"airflow-provider-mlops {__version__}",
        }
        storage.write_bytes(join(target, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
        return manifest

    @staticmethod
    def _parquet_footer(storage: Storage, name: str, uri: str, size: int) -> tuple[int, dict[str, str]]:
        """Row count and pandas dtypes of a Parquet object, from its footer only (ranged reads)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            tail = storage.read_range(uri, max(0, size - 8), 8)
            if len(tail) != 8 or tail[4:] != b"PAR1":
                raise DatasetError(f"Dataset {name!r}: {uri} is not a readable Parquet file (no footer)")
            footer_length = int.from_bytes(tail[:4], "little")
            if footer_length + 12 > size:
                raise DatasetError(f"Dataset {name!r}: {uri} is not a readable Parquet file (bad footer)")
            footer = storage.read_range(uri, size - 8 - footer_length, footer_length + 8)
            # A buffer of the magic plus the footer is all pyarrow needs to decode the metadata.
            metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
            schema = metadata.schema.to_arrow_schema()
            dtypes = schema.empty_table().to_pandas().dtypes
        except DatasetError:
            raise
        except (pa.ArrowException, ValueError, OSError) as err:
            raise DatasetError(f"Dataset {name!r}: {uri} is not a readable Parquet file: {err}") from err
        if metadata.num_rows == 0:
            raise DatasetError(f"Dataset {name!r}: {uri} has no rows (only a schema)")
        return int(metadata.num_rows), {str(column): str(dtype) for column, dtype in dtypes.items()}

    # -- events and lineage ------------------------------------------------------------------------------

    def _emit_asset_events(self, context: Context, result: dict[str, Any]) -> None:
        outlet_events = context.get("outlet_events") if hasattr(context, "get") else None
        assets = [outlet for outlet in (self.outlets or []) if isinstance(outlet, Asset)]
        if outlet_events is None or not assets:
            return
        extra = {key: result[key] for key in ("name", "snapshot_id", "uri", "sha256", "rows")}
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
        dataset = MetaDataset(
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
            client.log_inputs(self.mlflow_run_id, datasets=[entity])
        except Exception as err:
            raise ConnectionSetupError(
                f"Dataset {manifest['name']!r}: cannot log snapshot {manifest['uri']} to MLflow run "
                f"{self.mlflow_run_id!r} (connection {self.mlflow_conn_id!r}): {err}"
            ) from err
        self.log.info(
            "Logged snapshot %s to MLflow run %s as a dataset input", manifest["uri"], self.mlflow_run_id
        )

    # -- sources -----------------------------------------------------------------------------------------

    def _resolve_sources(self, storage: Storage, name: str, source: str) -> list[str]:
        if has_glob(source) and (is_s3(source) or not Path(source).exists()):
            uris = storage.glob(source)
            if not uris:
                raise DatasetError(f"Dataset {name!r}: no files match {source}")
            return uris
        if is_s3(source):
            bucket, key = split_s3(source)
            if not bucket:
                raise DatasetError(f"Dataset {name!r}: source {source!r} names no bucket")
            if key and not key.endswith("/") and storage.exists(source):
                return [source]
            uris = _visible(storage.list_uris(source), source)
            if not uris:
                raise DatasetError(
                    f"Dataset {name!r}: {source} does not exist (no object with that key and no data "
                    "objects under it as a prefix)"
                )
            return uris
        path = Path(source)
        if path.is_file():
            return [source]
        if path.is_dir():
            uris = _visible(storage.list_uris(source), source)
            if not uris:
                raise DatasetError(f"Dataset {name!r}: directory {source} holds no data files")
            return uris
        raise DatasetError(f"Dataset {name!r}: source {source} does not exist")

    def _fetch_sources(self, storage: Storage, name: str, source: str, tmp: Path) -> list[_SourceFile]:
        """Resolve the source, bring S3 objects to local disk, and hash every file (sorted by URI)."""
        try:
            uris = sorted(self._resolve_sources(storage, name, source))
            files = []
            for index, uri in enumerate(uris):
                head = storage.head(uri)
                if is_s3(uri):
                    progress = self._progress(f"Download {uri}", head["size"])
                    local = storage.download_file(
                        uri, tmp / f"{index:05d}-{uri.rsplit('/', 1)[-1]}", progress
                    )
                    progress.done()
                else:
                    local = Path(uri)
                files.append(self._describe_file(name, uri, local, head["etag"], head["mtime"]))
        except FileNotFoundError as err:
            raise DatasetError(f"Dataset {name!r}: cannot read source {source}: {err}") from err
        except DatasetError:
            raise
        except Exception as err:
            if type(err).__module__.startswith(("botocore", "boto3")):
                raise DatasetError(f"Dataset {name!r}: cannot read source {source}: {err}") from err
            raise
        return files

    @staticmethod
    def _describe_file(
        name: str, uri: str, local: Path, etag: str | None = None, mtime: float | None = None
    ) -> _SourceFile:
        digest = hashlib.sha256()
        size = 0
        with local.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        if size == 0:
            raise DatasetError(f"Dataset {name!r}: {uri} is empty (0 bytes)")
        return _SourceFile(uri=uri, local=local, size=size, sha256=digest.hexdigest(), etag=etag, mtime=mtime)

    @staticmethod
    def _combined_sha256(files: list[_SourceFile]) -> str:
        """SHA-256 of the source bytes: one file's own hash, or that of all files concatenated in URI order."""
        if len(files) == 1:
            return files[0].sha256
        digest = hashlib.sha256()
        for file in files:
            with file.local.open("rb") as stream:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
        return digest.hexdigest()

    def _detect_format(self, name: str, files: list[_SourceFile]) -> str:
        if self.format != "auto":
            return self.format
        formats = {}
        for file in files:
            fmt = _format_from_name(file.uri)
            if fmt is None:
                raise DatasetError(
                    f"Dataset {name!r}: cannot tell the format of {file.uri} from its name; "
                    "pass format='csv' or format='parquet'"
                )
            formats.setdefault(fmt, file.uri)
        if len(formats) > 1:
            raise DatasetError(
                f"Dataset {name!r}: the source mixes formats ({formats['csv']} is CSV, "
                f"{formats['parquet']} is Parquet); ingest them separately"
            )
        return next(iter(formats))

    # -- reading and splitting ---------------------------------------------------------------------------

    def _read(self, name: str, files: list[_SourceFile], fmt: str) -> pd.DataFrame:
        import pandas as pd

        frames = []
        for file in files:
            frame = self._read_one(name, file, fmt)
            frame.columns = [str(column) for column in frame.columns]
            if len(frame) == 0:
                raise DatasetError(f"Dataset {name!r}: {file.uri} has no rows (only a header or schema)")
            if frames and list(frame.columns) != list(frames[0].columns):
                raise DatasetError(
                    f"Dataset {name!r}: {file.uri} has columns {list(frame.columns)[:20]}, but "
                    f"{files[0].uri} has {list(frames[0].columns)[:20]}; all files must have the same columns"
                )
            frames.append(frame)
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def _read_one(self, name: str, file: _SourceFile, fmt: str) -> pd.DataFrame:
        import pandas as pd

        if fmt == "csv":
            options = {"encoding": "utf-8", **self.csv_options}
            try:
                return pd.read_csv(file.local, **options)
            except UnicodeDecodeError as err:
                raise DatasetError(
                    f"Dataset {name!r}: {file.uri} is not valid {options['encoding']} text "
                    f"({err.reason} at byte {err.start}); pass csv_options={{'encoding': ...}} with the "
                    "file's encoding"
                ) from err
            except pd.errors.EmptyDataError as err:
                raise DatasetError(f"Dataset {name!r}: {file.uri} has no header row and no data") from err
            except TypeError as err:
                raise DatasetError(
                    f"Dataset {name!r}: csv_options not accepted by pandas.read_csv: {err}"
                ) from err
            except (pd.errors.ParserError, ValueError, OSError) as err:
                raise DatasetError(f"Dataset {name!r}: {file.uri} cannot be parsed as CSV: {err}") from err
        import pyarrow as pa

        try:
            return pd.read_parquet(file.local)
        except (pa.ArrowException, ValueError, OSError) as err:
            raise DatasetError(f"Dataset {name!r}: {file.uri} is not a readable Parquet file: {err}") from err

    def _check_label(self, name: str, source: str, columns: list[str]) -> None:
        if self.label_column and self.label_column not in columns:
            shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
            raise DatasetError(
                f"Dataset {name!r}: label column {self.label_column!r} is missing from {source} "
                f"(columns: {shown})"
            )

    def _split_rows(self, name: str, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Assign rows to splits with a seeded permutation; each split keeps the source row order."""
        if not self.split:
            return {}
        import numpy as np

        rows = len(df)
        order = np.random.default_rng(self.split_seed).permutation(rows)
        names = list(self.split)
        parts: dict[str, pd.DataFrame] = {}
        start, cumulative = 0, 0.0
        for position, split in enumerate(names):
            cumulative += self.split[split]
            end = rows if position == len(names) - 1 else min(rows, round(cumulative * rows))
            if end <= start:
                raise DatasetError(
                    f"Dataset {name!r}: split {split!r} would get no rows ({rows} rows x "
                    f"{self.split[split]:g}); ingest more rows or change split"
                )
            parts[split] = df.iloc[np.sort(order[start:end])].reset_index(drop=True)
            start = end
        return parts

    # -- writing -----------------------------------------------------------------------------------------

    def _write_parquet(self, name: str, frames: dict[str, pd.DataFrame], directory: Path) -> None:
        import pyarrow as pa

        directory.mkdir(parents=True, exist_ok=True)
        for key, frame in frames.items():
            try:
                frame.to_parquet(directory / f"{key}.parquet", index=False)
            except (pa.ArrowException, ValueError, TypeError) as err:
                raise DatasetError(f"Dataset {name!r}: rows cannot be stored as Parquet: {err}") from err

    def _publish(
        self,
        storage: Storage,
        name: str,
        target: str,
        frames: dict[str, pd.DataFrame],
        manifest: dict[str, Any],
        tmp: Path,
    ) -> dict[str, Any]:
        """Write the snapshot (manifest last); return the manifest that ends up stored."""
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        if is_s3(target):
            self._write_parquet(name, frames, tmp)
            for key in frames:
                local = tmp / f"{key}.parquet"
                uri = join(target, f"{key}.parquet")
                progress = self._progress(f"Upload {uri}", local.stat().st_size)
                storage.upload_file(local, uri, progress)
                progress.done()
            storage.write_bytes(join(target, MANIFEST), manifest_bytes)
            return manifest

        final = local_path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            self._write_parquet(name, frames, staging)
            (staging / MANIFEST).write_bytes(manifest_bytes)
            try:
                os.rename(staging, final)
            except OSError:
                if (final / MANIFEST).exists():
                    self.log.info("Snapshot %s was completed by a concurrent attempt; keeping it", target)
                    return load_manifest(target, storage)
                # A directory without a manifest is not a snapshot (a leftover): replace it.
                leftover = final.parent / f".{final.name}.stale-{uuid.uuid4().hex[:12]}"
                os.rename(final, leftover)
                shutil.rmtree(leftover, ignore_errors=True)
                os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest
