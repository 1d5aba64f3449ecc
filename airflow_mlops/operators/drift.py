"""Operator that gates a dataset snapshot, or a database table or query, on drift from a reference."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseOperator

from airflow_mlops import tags
from airflow_mlops.data.drift_thresholds import DEFAULT_THRESHOLDS, check_thresholds
from airflow_mlops.data.expectations import safe_name
from airflow_mlops.data.snapshots import DRIFT_DIR, load_manifest, resolve_data_root
from airflow_mlops.data.storage import join
from airflow_mlops.exceptions import (
    ConfigurationError,
    ConnectionSetupError,
    DataDriftError,
    DatasetConfigurationError,
    DatasetError,
    RegistryError,
    ServiceUnavailableError,
)
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.results import snapshot_uri
from airflow_mlops.utils.results import json_safe, keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import AirflowSkipException

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_mlops.data.spark_drift import SparkData
    from airflow_mlops.data.sql_drift import SqlData
    from airflow_mlops.data.storage import Storage

__all__ = ["CHAMPION", "DRIFT_DIR", "ON_DRIFT", "DriftCheckOperator"]

ON_DRIFT = ("fail", "skip", "continue")
CHAMPION = "champion"
_SNAPSHOT_ARGUMENTS = ("dataset_uri", "reference_uri", "model_name")
_SQL_ARGUMENTS = ("table", "query", "reference_table", "reference_query")


class DriftCheckOperator(BaseOperator):
    """
    Compare a dataset snapshot with a reference snapshot and stop the pipeline when it drifted.

    The reference is ``reference_uri``, or by default the snapshot the current ``champion`` of ``model_name``
    was trained on (its ``mlops.data.uri`` tag in the MLflow registry). Without a champion there is nothing
    to compare with: the check passes and says so. Numeric features are compared by PSI (reference quantile
    bins), the Kolmogorov-Smirnov statistic and the Wasserstein distance; categorical features by the
    L-infinity distance and the Jensen-Shannon distance; every feature by the change of its null rate. Columns
    the current snapshot lacks, or has and the reference does not, count as drift too (see
    :mod:`airflow_mlops.data.drift`).

    Data in a SQL database is compared where it lives: with ``sql_conn_id`` (any common.sql connection), the
    current data is ``table`` or ``query`` and the reference ``reference_table`` or ``reference_query``; the
    database computes counts, quantiles and category frequencies and only those reach the worker (see
    :mod:`airflow_mlops.data.sql_drift` for what is exact and what is within a tolerance). A snapshot is read
    one column at a time, so the worker holds one feature of both datasets, never both tables.

    A JSON and a Markdown report are stored next to the snapshot, at
    ``<snapshot>/_drift/<reference id>/report.json`` and ``report.md``; for SQL data under the data root, at
    ``<data_root>/drift/<sql_conn_id>/<table or query-hash>/<reference table or query-hash>/``.

    Returns (XCom) ``{"drift", "dataset", "reference", "drifted_features", "missing_features",
    "added_features", "features", "report", "engine", "transfer"}``, where ``features`` maps each feature to
    its metrics and exceeded metrics, ``engine`` is ``"memory"``, ``"sql"`` or ``"spark"`` and ``transfer`` is what
    reached the worker: ``{"rows", "summary_rows"}`` (for SQL: the rows sampled to tell numbers from
    categories, at most 100 per source, and the result rows of the summary queries). A SQL source is named
    ``sql://<sql_conn_id>/<table>`` (or ``/query-<hash>``) in ``dataset`` and ``reference``.

    :param dataset_uri: Snapshot URI to check, optionally with a ``#split``, or an ingest's whole result
        (``ingest.output``). (templated)
    :param reference_uri: Reference snapshot URI (or an ingest's whole result); default: the champion's
        training snapshot. (templated)
    :param model_name: Registered model whose champion gives the reference (needed without
        ``reference_uri``). (templated)
    :param thresholds: Default limits per metric (``psi``, ``ks``, ``wasserstein``, ``linf``,
        ``jensen_shannon``, ``null_rate``); a feature drifts when a metric exceeds its limit. Default
        ``{"psi": 0.2, "ks": 0.2, "linf": 0.2, "jensen_shannon": 0.2, "null_rate": 0.1}``.
    :param feature_thresholds: Limits per feature, overriding ``thresholds`` for it, e.g.
        ``{"income": {"psi": 0.3}}``.
    :param columns: Features to compare (default: every column of the reference except ``exclude_columns``,
        and columns of the current snapshot the reference lacks count as drift).
    :param exclude_columns: Columns not compared (the label, ids).
    :param on_drift: ``"fail"`` (raise :class:`~airflow_mlops.exceptions.DataDriftError`), ``"skip"`` (skip
        this task, so downstream tasks skip with the default trigger rule) or ``"continue"`` (log, succeed).
    :param bins: Number of reference quantile bins for PSI.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` snapshots.
    :param mlflow_conn_id: Airflow ``mlflow`` connection of the registry.
    :param sql_conn_id: Airflow connection of a SQL database (any common.sql ``DbApiHook``), instead of
        snapshots: the drift is computed in the database. (templated)
    :param table: Table (optionally ``schema.table``) of the current data. (templated)
    :param query: ``SELECT`` of the current data, instead of ``table``. (templated)
    :param reference_table: Table of the reference data, in the same database. (templated)
    :param reference_query: ``SELECT`` of the reference data, instead of ``reference_table``. (templated)
    :param data_root: Data root under which the report of SQL data is stored (default ``$MLOPS_DATA_ROOT``).
        (templated)
    :param spark_conn_id: Airflow Spark connection (:class:`~airflow_mlops.hooks.spark.SparkHook`), instead of
        ``sql_conn_id``: ``table``/``query`` and ``reference_table``/``reference_query`` are Spark tables
        (``db.table``, or a path table such as ``parquet.`s3a://bucket/events```) and Spark SQL queries, and
        the statistics are computed by Spark SQL aggregates (:mod:`airflow_mlops.data.spark_drift`); the
        result's ``engine`` is ``"spark"`` and its sources are named ``spark://<spark_conn_id>/<table>``.
        (templated)
    """

    template_fields: Sequence[str] = (
        "dataset_uri", "reference_uri", "model_name", "aws_conn_id", "mlflow_conn_id", "sql_conn_id", "table",
        "query", "reference_table", "reference_query", "data_root", "spark_conn_id",
    )  # fmt: skip
    template_fields_renderers = {"query": "sql", "reference_query": "sql"}

    def __init__(
        self,
        *,
        dataset_uri: str | None = None,
        reference_uri: str | None = None,
        model_name: str | None = None,
        thresholds: dict[str, float] | None = None,
        feature_thresholds: dict[str, dict[str, float]] | None = None,
        columns: list[str] | None = None,
        exclude_columns: list[str] | None = None,
        on_drift: str = "fail",
        bins: int = 10,
        aws_conn_id: str | None = StorageHook.default_conn_name,
        mlflow_conn_id: str = "mlflow_default",
        sql_conn_id: str | None = None,
        table: str | None = None,
        query: str | None = None,
        reference_table: str | None = None,
        reference_query: str | None = None,
        data_root: str | None = None,
        spark_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        self.spark_conn_id = spark_conn_id
        self.dataset_uri = dataset_uri
        self.reference_uri = reference_uri
        self.model_name = model_name
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.query = query
        self.reference_table = reference_table
        self.reference_query = reference_query
        self.data_root = data_root
        # A template or another task's result (dataset_uri=ingest.output["uri"]) is checked once rendered.
        self._check_sources(rendered=False)
        if on_drift not in ON_DRIFT:
            raise ValueError(f"on_drift must be one of {', '.join(ON_DRIFT)}, got {on_drift!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if feature_thresholds is not None and not isinstance(feature_thresholds, dict):
            raise ValueError(
                f"feature_thresholds must be a dict of feature to limits, got {feature_thresholds!r}"
            )
        for label, value in (("columns", columns), ("exclude_columns", exclude_columns)):
            if value is not None and (
                not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f"{label} must be a list of column names, got {value!r}")
        self.thresholds = check_thresholds(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.feature_thresholds = {
            str(feature): check_thresholds(limits, f"feature_thresholds[{feature!r}]")
            for feature, limits in (feature_thresholds or {}).items()
        }
        self.columns = list(columns) if columns else None
        self.exclude_columns = list(exclude_columns or [])
        self.on_drift = on_drift
        self.bins = bins
        self.aws_conn_id = aws_conn_id
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> StorageHook:
        """The storage hook of ``aws_conn_id`` (built on first use, never at parse time)."""
        return StorageHook(aws_conn_id=self.aws_conn_id)

    def _check_sources(self, rendered: bool) -> None:
        """
        Snapshots or SQL, each side given once, strings not empty.

        Before rendering (*rendered* false) only literal values are checked; once rendered, every value is, and
        the message says so. A problem is a :class:`~airflow_mlops.exceptions.ConfigurationError` (a ValueError).
        """

        def known(value: Any) -> bool:
            return rendered or not is_templated(value)

        def fail(message: str) -> None:
            raise ConfigurationError(message + (" once rendered" if rendered else ""))

        if self.sql_conn_id is not None and self.spark_conn_id is not None:
            fail("sql_conn_id and spark_conn_id exclude each other: the data is in a database or in Spark")
        conn_arg = "sql_conn_id" if self.spark_conn_id is None else "spark_conn_id"
        conn_id = getattr(self, conn_arg)
        if conn_id is None:
            given = [name for name in _SQL_ARGUMENTS if getattr(self, name) is not None]
            if given:
                fail(
                    f"{' and '.join(given)} need sql_conn_id (the connection of the database they are in) or "
                    "spark_conn_id (the Spark that reads them)"
                )
            if rendered:  # execute checks the rendered snapshot arguments itself, naming the dataset
                return
            uri = (
                self.dataset_uri
                if is_templated(self.dataset_uri)
                else snapshot_uri(self.dataset_uri, "dataset_uri")
            )
            if not is_templated(uri) and (not isinstance(uri, str) or not uri.strip()):
                raise ValueError(
                    f"dataset_uri must be a snapshot URI (or pass sql_conn_id with table or query), got {uri!r}"
                )
            if self.reference_uri is None and not self.model_name:
                raise ValueError(
                    "Pass reference_uri (a snapshot URI) or model_name (its champion's training snapshot is used)"
                )
            return
        for name in _SNAPSHOT_ARGUMENTS:
            if getattr(self, name) is not None:
                fail(
                    f"{name} and {conn_arg} exclude each other: pass snapshots (dataset_uri with reference_uri "
                    f"or model_name) or SQL data ({conn_arg} with table or query and reference_table or "
                    "reference_query), not both"
                )
        if known(conn_id) and (not isinstance(conn_id, str) or not conn_id.strip()):
            fail(f"{conn_arg} must be a connection id, got {conn_id!r}")
        for table, query, what in (
            ("table", "query", "the current data"),
            ("reference_table", "reference_query", "the reference"),
        ):
            values = getattr(self, table), getattr(self, query)
            if (values[0] is None) == (values[1] is None):
                fail(f"With {conn_arg}, pass exactly one of {table} or {query} ({what})")
            for name, value in zip((table, query), values, strict=True):
                if value is not None and known(value) and not (isinstance(value, str) and value.strip()):
                    fail(f"{name} must be a non-empty string, got {value!r}")

    @keep_result
    def execute(self, context: Context) -> dict[str, Any]:
        """Compare the data with its reference, store the report; fail, skip or continue on drift."""
        from airflow_mlops.data.drift import compute_drift_snapshots, report_folder

        self._check_sources(rendered=True)
        if self.sql_conn_id is not None:
            return self._execute_sql()
        if self.spark_conn_id is not None:
            return self._execute_spark()
        # Another task's whole result (dataset_uri=ingest.output) stands for its snapshot.
        self.dataset_uri = snapshot_uri(self.dataset_uri, "dataset_uri")
        self.reference_uri = snapshot_uri(self.reference_uri, "reference_uri")
        if not isinstance(self.dataset_uri, str) or not self.dataset_uri.strip():
            raise DatasetConfigurationError(
                f"dataset_uri must be a snapshot URI, got {self.dataset_uri!r} once rendered",
                uri=str(self.dataset_uri),
            )
        uri = self.dataset_uri.strip()
        reference = (self.reference_uri or "").strip()
        if not reference and not self.model_name:
            raise ConfigurationError(
                f"No reference for {uri}: reference_uri and model_name rendered empty; pass a snapshot URI "
                "or the model whose champion's training snapshot is the reference",
                uri=uri,
            )
        found = reference or self._champion_reference()
        if found is None:
            self.log.info(
                "Model %r has no %s (or its version has no %s tag): no reference to compare %s with; passing",
                self.model_name, CHAMPION, tags.DATA_URI, uri,
            )  # fmt: skip
            return {
                "drift": False, "dataset": uri, "reference": None, "drifted_features": [],
                "missing_features": [], "added_features": [], "features": {}, "report": None,
                "engine": "memory", "transfer": {"rows": 0, "summary_rows": 0},
            }  # fmt: skip
        reference = found
        storage = self.hook.storage_for(uri, reference)
        try:
            manifest = load_manifest(uri, storage)
            reference_manifest = load_manifest(reference, storage)
            name = manifest.get("name")
            self.log.info(
                "Drift of %s (%s rows) against %s (%s rows), one column at a time",
                uri, manifest.get("rows"), reference, reference_manifest.get("rows"),
            )  # fmt: skip
            report = compute_drift_snapshots(
                reference, uri, storage, thresholds=self.thresholds, feature_thresholds=self.feature_thresholds,
                columns=self.columns, exclude_columns=self.exclude_columns, bins=self.bins,
            )  # fmt: skip
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(
                f"Cannot check drift of {uri} against {reference}: {err}", uri=uri, reason=str(err)
            ) from err
        rows = int(manifest.get("rows") or 0) + int(reference_manifest.get("rows") or 0)
        report = {
            "dataset": uri, "reference": reference, **report,
            "engine": "memory", "transfer": {"rows": rows, "summary_rows": 0},
        }  # fmt: skip
        folder = report_folder(uri, reference, reference_manifest.get("snapshot_id"))
        return self._finish(report, folder, storage, name, uri)

    def _finish(
        self, report: dict[str, Any], folder: str, storage: Storage, name: str | None, uri: str
    ) -> dict[str, Any]:
        """Store the report under *folder*; return it, or skip or fail on drift as ``on_drift`` says."""
        from airflow_mlops.data.drift import drift_message, to_markdown

        report_uri = join(folder, "report.json")
        # Strict JSON: a NaN statistic (an all-null column) is null in the file, as in the task's result.
        text = json.dumps(json_safe(report), indent=2, sort_keys=True, allow_nan=False)
        storage.write_bytes(report_uri, text.encode())
        storage.write_bytes(join(folder, "report.md"), to_markdown(report).encode())
        summary = {**report, "report": report_uri}

        if not report["drift"]:
            self.log.info(
                "No drift beyond the thresholds in %d features; report %s",
                len(report["features"]),
                report_uri,
            )
            return summary
        message = drift_message(report, report_uri)
        if self.on_drift == "continue":
            self.log.warning("%s\n(on_drift=continue)", message)
            return summary
        if self.on_drift == "skip":
            self.log.warning("%s\n(on_drift=skip: skipping downstream tasks)", message)
            raise AirflowSkipException(message)
        raise DataDriftError(
            message, dataset=name, uri=uri, reason="drifted: " + ", ".join(
                [
                    *report["drifted_features"],
                    *(f"{column} (missing)" for column in report["missing_features"]),
                    *(f"{column} (added)" for column in report["added_features"][:20]),
                ]
            ),
        )  # fmt: skip

    def _execute_sql(self) -> dict[str, Any]:
        """Drift of a table or query against another, computed in the database; only summaries move."""
        import sqlalchemy as sa

        from airflow_mlops.data.sql_drift import SqlData, compute_drift_sql

        conn_id = str(self.sql_conn_id).strip()
        current = SqlData(table=_stripped(self.table), query=_stripped(self.query))
        reference = SqlData(table=_stripped(self.reference_table), query=_stripped(self.reference_query))
        current_key, uri = _sql_name(conn_id, current)
        reference_key, reference_uri = _sql_name(conn_id, reference)
        engine = sql_engine(conn_id, f"check drift of {uri}")
        self.log.info("Drift of %s against %s, computed in the database", uri, reference_uri)
        transfer: dict[str, int] = {"rows_sampled": 0, "summary_rows": 0}
        try:
            report = compute_drift_sql(
                engine, reference, current, thresholds=self.thresholds, feature_thresholds=self.feature_thresholds,
                columns=self.columns, exclude_columns=self.exclude_columns, bins=self.bins, transfer=transfer,
            )  # fmt: skip
        except ValueError as err:  # a source that cannot be read, a column of too many categories
            raise DatasetError(
                f"Cannot check drift of {uri} against {reference_uri}: {err}", uri=uri, reason=str(err)
            ) from err
        except sa.exc.DBAPIError as err:  # the database went away or timed out
            raise ServiceUnavailableError(
                f"Cannot check drift of {uri} against {reference_uri}: the database of connection {conn_id!r} "
                f"failed: {err.orig}"
            ) from err
        finally:
            engine.dispose()
        self.log.info(
            "%d rows sampled and %d summary rows reached the worker",
            transfer["rows_sampled"], transfer["summary_rows"],
        )  # fmt: skip
        report = {
            "dataset": uri, "reference": reference_uri, **report, "engine": "sql",
            "transfer": {"rows": transfer["rows_sampled"], "summary_rows": transfer["summary_rows"]},
        }  # fmt: skip
        folder = join(
            resolve_data_root((self.data_root or "").strip() or None), "drift", safe_name(conn_id),
            safe_name(current_key), safe_name(reference_key),
        )  # fmt: skip
        return self._finish(report, folder, self.hook.storage_for(folder), current_key, uri)

    def _execute_spark(self) -> dict[str, Any]:
        """Drift of a Spark table or query against another, computed by Spark; only summaries move."""
        from airflow_mlops.data.spark_drift import SparkData, compute_drift_spark
        from airflow_mlops.hooks.spark import SparkHook, import_pyspark

        import_pyspark()  # a missing pyspark names the extra to install
        from pyspark.errors import PySparkException

        conn_id = str(self.spark_conn_id).strip()
        current = SparkData(table=_stripped(self.table), query=_stripped(self.query))
        reference = SparkData(table=_stripped(self.reference_table), query=_stripped(self.reference_query))
        current_key, uri = _sql_name(conn_id, current, "spark")
        reference_key, reference_uri = _sql_name(conn_id, reference, "spark")
        hook = SparkHook(spark_conn_id=conn_id)
        session = hook.get_conn()
        self.log.info("Drift of %s against %s, computed by Spark at %s", uri, reference_uri, hook.describe)
        transfer: dict[str, int] = {"rows_sampled": 0, "summary_rows": 0}
        try:
            report = compute_drift_spark(
                session, reference, current, thresholds=self.thresholds, feature_thresholds=self.feature_thresholds,
                columns=self.columns, exclude_columns=self.exclude_columns, bins=self.bins, transfer=transfer,
            )  # fmt: skip
        except ValueError as err:  # a source Spark cannot read, a column of too many categories
            raise DatasetError(
                f"Cannot check drift of {uri} against {reference_uri}: {err}", uri=uri, reason=str(err)
            ) from err
        except PySparkException as err:  # the cluster failed or went away
            raise ServiceUnavailableError(
                f"Cannot check drift of {uri} against {reference_uri}: Spark at {hook.describe} failed: "
                + (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
            ) from err
        self.log.info("%d summary rows reached the worker", transfer["summary_rows"])
        report = {
            "dataset": uri, "reference": reference_uri, **report, "engine": "spark",
            "transfer": {"rows": 0, "summary_rows": transfer["summary_rows"]},
        }  # fmt: skip
        folder = join(
            resolve_data_root((self.data_root or "").strip() or None), "drift", "spark-" + safe_name(conn_id),
            safe_name(current_key), safe_name(reference_key),
        )  # fmt: skip
        return self._finish(report, folder, self.hook.storage_for(folder), current_key, uri)

    def _champion_reference(self) -> str | None:
        """The training snapshot URI of the model's champion, or None if there is no champion."""
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.registry import get_alias_version, get_model_version

        model = str(self.model_name)
        client = MLflowHook(mlflow_conn_id=self.mlflow_conn_id).client
        try:
            version = get_alias_version(client, model, CHAMPION)
            if version is None:
                return None
            model_version = get_model_version(client, model, version)
        except RegistryError:
            raise
        except Exception as err:
            raise RegistryError(
                f"Cannot read the {CHAMPION} of model {self.model_name!r} from MLflow "
                f"(connection {self.mlflow_conn_id!r}): {err}"
            ) from err
        uri = (model_version.tags or {}).get(tags.DATA_URI)
        if uri:
            self.log.info(
                "Reference: snapshot %s of %s version %s (%s)", uri, self.model_name, version, CHAMPION
            )
        return uri or None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The snapshot checked (with per-feature assertions), its reference and the report, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import drift_lineage
        from airflow_mlops.utils.results import kept_result

        return drift_lineage(kept_result(self))


def _stripped(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def _sql_name(conn_id: str, data: SqlData | SparkData, scheme: str = "sql") -> tuple[str, str]:
    """A table's or query's short name (``query-<sha256 prefix>`` for a query) and its ``sql://`` URI."""
    key = data.table or "query-" + hashlib.sha256(str(data.query).encode()).hexdigest()[:16]
    return str(key), f"{scheme}://{conn_id}/{key}"


def sql_engine(conn_id: str, doing: str) -> Any:
    """The SQLAlchemy engine of a common.sql connection (its ``DbApiHook``); ConnectionSetupError if none."""
    try:
        return BaseHook.get_connection(conn_id).get_hook().get_sqlalchemy_engine()
    except Exception as err:
        raise ConnectionSetupError(
            f"Cannot {doing}: no SQLAlchemy engine from connection {conn_id!r} ({err}). Use a SQL database "
            "connection whose provider is installed (and pip install 'airflow-provider-mlops[sql]', the "
            "common.sql provider)."
        ) from err
