"""Operator that validates a dataset snapshot, or a database table or query, with a Great Expectations suite."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from airflow.sdk import BaseHook, BaseOperator

from airflow_mlops import tags as T
from airflow_mlops.data.expectations import (
    ON_WARNING,
    RESULT_FORMATS,
    build_suite,
    check_expectations,
    columns_to_read,
    ephemeral_context,
    failure_message,
    is_valid_suite_name,
    parse_suite,
    render_data_docs,
    run_checkpoint,
    safe_name,
    spark_batch,
    sql_batch,
    summarize,
)
from airflow_mlops.data.snapshots import (
    VALIDATION_DIR,
    load_manifest,
    parse_snapshot_uri,
    read_snapshot,
    resolve_data_root,
)
from airflow_mlops.data.storage import Storage, join
from airflow_mlops.exceptions import (
    ConfigurationError,
    ConnectionSetupError,
    DatasetConfigurationError,
    DatasetError,
    DataValidationError,
)
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.links import DataDocsLink, browser_url, data_docs_url, run_url
from airflow_mlops.results import ValidationSummary, snapshot_uri
from airflow_mlops.utils.context import airflow_ids
from airflow_mlops.utils.results import keep, keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from mlflow import MlflowClient

__all__ = [
    "ON_WARNING",
    "RESULT_FORMATS",
    "VALIDATION_DIR",
    "ValidateDatasetOperator",
    "check_expectations",
    "columns_to_read",
]

#: Where the Data Docs page is logged in the validation's MLflow run (``experiment_name``).
DATA_DOCS_ARTIFACT = "data_docs/index.html"


class ValidateDatasetOperator(BaseOperator):
    """
    Validate a dataset snapshot (or one of its splits), or a database table or query, with Great Expectations.

    Expectations are declared in the DAG file (``expectations``) or in a Great Expectations 1.x suite JSON
    file (``suite_path``: ``{"name": ..., "expectations": [{"type": ..., "kwargs": ...}]}``). A snapshot is
    validated in memory with an ephemeral GX context. A table or query (``sql_conn_id`` with ``table`` or
    ``query``) is validated where it lives through a GX SQL datasource: GX sends the metric queries to the
    database and no rows are loaded into the worker.

    The rendered validation result (Data Docs HTML) is stored next to the snapshot, at
    ``<snapshot>/_validation/<suite>[-<split>]/index.html`` (for SQL: under ``data_docs_uri``, default
    ``<data_root>/validation/<sql_conn_id>/<table or query hash>/<suite>/``). With ``experiment_name`` the
    page is also logged as the artifact ``data_docs/index.html`` of an MLflow run the task creates in that
    experiment (one run per task instance, reused by its retries), and the task's "Data Docs" link opens it
    in the MLflow UI: a page a reviewer's browser can open, where a page on the worker's disk is not. A link
    is shown only when it is an ``http(s)`` address (the MLflow server, ``data_docs_base_url``, the S3
    console), never a ``file://`` one.

    Returns (XCom) a compact summary, never data rows: ``{"success", "blocking", "dataset", "name",
    "snapshot_id", "split", "rows", "evaluated", "successful", "unsuccessful", "failed", "data_docs",
    "data_docs_uri"}``, where each item of ``failed`` is ``{"expectation", "column", "severity", "observed",
    "kwargs"}`` and ``observed`` holds the observed value, unexpected counts, up to five unexpected values, or
    the error the expectation raised. ``blocking`` is True when a failure stops the pipeline. ``data_docs``
    is where the page was stored; ``data_docs_uri`` its ``http(s)`` address (None when it has none), which
    :class:`~airflow_mlops.operators.evaluation.EvaluateModelOperator` links from its report.

    :param dataset_uri: Snapshot URI, optionally with ``#train`` / ``#valid`` / ``#holdout``, or an ingest's
        whole result (``ingest.output``: its snapshot). (templated)
    :param expectations: List of ``{"type": "expect_...", "kwargs": {...}}``, optionally with
        ``"severity": "critical" | "warning" | "info"``. (templated)
    :param suite_path: Path (local or ``s3://``) of a GX suite JSON file, instead of ``expectations``.
        (templated)
    :param gx_context_dir: Folder of a Great Expectations file data context (``gx/`` project), used with
        ``checkpoint_name`` instead of ``expectations`` / ``suite_path``. (templated)
    :param checkpoint_name: Checkpoint of that context to run. Its one validation definition validates the
        snapshot when its batch definition is a dataframe one (the snapshot is passed as the batch), or its
        own data otherwise. (templated)
    :param soft_fail: If True, a failed validation logs a warning and returns the summary with
        ``success: false`` instead of failing the task.
    :param on_warning: ``"fail"`` (default): any failed expectation fails the task. ``"continue"``: failures
        of expectations with severity ``warning`` or ``info`` are logged and the task succeeds with
        ``success: false, blocking: false``; downstream tasks can branch on that.
    :param result_format: GX result format: ``BOOLEAN_ONLY``, ``BASIC``, ``SUMMARY`` or ``COMPLETE``.
        ``BOOLEAN_ONLY`` reports no unexpected values at all.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` snapshots, suite files and Data Docs.
    :param sql_conn_id: Airflow connection of a SQL database (any common.sql ``DbApiHook``), instead of
        ``dataset_uri``.
    :param table: Table (optionally ``schema.table``) to validate in the database. (templated)
    :param query: Query whose result is validated in the database, instead of ``table``. (templated)
    :param suite_name: Name of the suite (Data Docs folder); default the suite file's ``name``, else
        ``<dataset>-suite``.
    :param data_docs: Whether to store the Data Docs page.
    :param data_docs_uri: Folder (local or ``s3://``) for the Data Docs page, overriding the default.
        (templated)
    :param data_docs_base_url: URL of a web server that serves ``data_root``; the link then points there
        instead of a ``file://`` or S3 console URL.
    :param data_root: Root used for SQL Data Docs and ``data_docs_base_url`` (default ``$MLOPS_DATA_ROOT``).
    :param experiment_name: MLflow experiment (created if missing) of a run this task creates to publish the
        Data Docs page as an artifact; the "Data Docs" link then opens it in the MLflow UI. None: not
        published. (templated)
    :param mlflow_conn_id: MLflow connection used with ``experiment_name``.
    :param spark_conn_id: Airflow Spark connection (:class:`~airflow_mlops.hooks.spark.SparkHook`), instead of
        ``dataset_uri`` or ``sql_conn_id``: ``table`` (a catalog table, or a path table such as
        ``parquet.`s3a://bucket/events```) or ``query`` (Spark SQL) is validated through Great Expectations'
        Spark datasource, its metrics computed by Spark; the Data Docs page goes under
        ``<data_root>/validation/spark-<spark_conn_id>/``. (templated)
    """

    template_fields: Sequence[str] = (
        "dataset_uri", "suite_path", "expectations", "table", "query", "data_docs_uri", "gx_context_dir",
        "checkpoint_name", "aws_conn_id", "sql_conn_id", "experiment_name", "mlflow_conn_id", "spark_conn_id",
    )  # fmt: skip
    template_fields_renderers = {"query": "sql"}
    operator_extra_links = (DataDocsLink(),)

    def __init__(
        self,
        *,
        dataset_uri: str | None = None,
        expectations: list[dict[str, Any]] | None = None,
        suite_path: str | None = None,
        gx_context_dir: str | None = None,
        checkpoint_name: str | None = None,
        soft_fail: bool = False,
        on_warning: str = "fail",
        result_format: str = "SUMMARY",
        aws_conn_id: str | None = StorageHook.default_conn_name,
        sql_conn_id: str | None = None,
        table: str | None = None,
        query: str | None = None,
        suite_name: str | None = None,
        data_docs: bool = True,
        data_docs_uri: str | None = None,
        data_docs_base_url: str | None = None,
        data_root: str | None = None,
        experiment_name: str | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        spark_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        # Literal arguments are checked now; templates and other tasks' results once rendered, in execute.
        if sql_conn_id is not None and spark_conn_id is not None:
            raise ValueError(
                "sql_conn_id and spark_conn_id exclude each other: the data is in a database or in Spark"
            )
        conn_arg = "sql_conn_id" if spark_conn_id is None else "spark_conn_id"
        if sql_conn_id is None and spark_conn_id is None:
            literal_uri = snapshot_uri(dataset_uri, "dataset_uri") if not is_templated(dataset_uri) else ""
            if not is_templated(dataset_uri) and not (isinstance(literal_uri, str) and literal_uri.strip()):
                raise ValueError(
                    "dataset_uri must be a snapshot URI (or pass sql_conn_id with table or query), "
                    f"got {dataset_uri!r}"
                )
            if table is not None or query is not None:
                raise ValueError(
                    "table and query need sql_conn_id (the database connection) or spark_conn_id (the Spark "
                    "that reads them)"
                )
        else:
            if dataset_uri is not None:
                raise ValueError(
                    f"Pass either dataset_uri (a snapshot) or {conn_arg} with table or query, not both"
                )
            if (table is None) == (query is None):
                raise ValueError(f"With {conn_arg}, pass exactly one of table or query")
            for label, value in (("table", table), ("query", query)):
                literal = value is not None and not is_templated(value)
                if literal and not (isinstance(value, str) and value.strip()):
                    raise ValueError(f"{label} must be a non-empty string, got {value!r}")
        if sum(x is not None for x in (expectations, suite_path, checkpoint_name)) != 1:
            raise ValueError(
                "Pass exactly one of expectations (a list declared in the DAG), suite_path (a GX suite JSON "
                "file) or checkpoint_name (with gx_context_dir, a GX file data context)"
            )
        if (checkpoint_name is None) != (gx_context_dir is None):
            raise ValueError("checkpoint_name and gx_context_dir go together (a checkpoint of that GX context)")
        if checkpoint_name is not None and (sql_conn_id is not None or spark_conn_id is not None):
            raise ValueError(f"A checkpoint validates its own data or the snapshot; it does not take {conn_arg}")
        if not is_templated(suite_path) and suite_path is not None and (
            not isinstance(suite_path, str) or not suite_path.strip()
        ):
            raise ValueError(f"suite_path must be the path of a suite JSON file, got {suite_path!r}")
        if result_format not in RESULT_FORMATS:
            raise ValueError(
                f"result_format must be one of {', '.join(RESULT_FORMATS)}, got {result_format!r}"
            )
        if on_warning not in ON_WARNING:
            raise ValueError(f"on_warning must be one of {', '.join(ON_WARNING)}, got {on_warning!r}")
        if suite_name is not None and not is_valid_suite_name(suite_name):
            raise ValueError(f"suite_name must be a non-empty name, got {suite_name!r}")
        if expectations is not None and not is_templated(expectations):
            check_expectations(expectations)
        if experiment_name is not None and not is_templated(experiment_name):
            if not isinstance(experiment_name, str) or not experiment_name.strip():
                raise ValueError(f"experiment_name must name an MLflow experiment, got {experiment_name!r}")
            if not data_docs:
                raise ValueError("experiment_name publishes the Data Docs page: it needs data_docs=True")
        self.dataset_uri = dataset_uri
        self.expectations = expectations
        self.suite_path = suite_path
        self.gx_context_dir = gx_context_dir
        self.checkpoint_name = checkpoint_name
        self.soft_fail = soft_fail
        self.on_warning = on_warning
        self.result_format = result_format
        self.aws_conn_id = aws_conn_id
        self.sql_conn_id = sql_conn_id
        self.spark_conn_id = spark_conn_id
        self.table = table
        self.query = query
        self.suite_name = suite_name
        self.data_docs = data_docs
        self.data_docs_uri = data_docs_uri
        self.data_docs_base_url = data_docs_base_url
        self.data_root = data_root
        self.experiment_name = experiment_name
        self.mlflow_conn_id = mlflow_conn_id
        self.data_docs_url = ""
        self._ids: dict[str, Any] = {}

    @cached_property
    def hook(self) -> StorageHook:
        """The storage hook of ``aws_conn_id`` (built on first use, never at parse time)."""
        return StorageHook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def mlflow_hook(self) -> MLflowHook:
        """The MLflow hook of ``mlflow_conn_id`` (used only with ``experiment_name``)."""
        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @keep_result
    def execute(self, context: Context) -> ValidationSummary:
        """Validate the snapshot (or table, or query); return the compact summary."""
        # An ingest's whole result stands for its snapshot.
        self.dataset_uri = snapshot_uri(self.dataset_uri, "dataset_uri")
        self._ids = airflow_ids(context)
        if self.experiment_name is not None:
            name = "an MLflow experiment name"
            self._rendered("experiment_name", self.experiment_name, name, ConfigurationError)
        expectations, origin, suite_name = self._suite()
        if self.sql_conn_id is not None:
            return cast("ValidationSummary", self._validate_sql(expectations, origin, suite_name))
        if self.spark_conn_id is not None:
            return cast("ValidationSummary", self._validate_spark(expectations, origin, suite_name))

        uri = self._rendered("dataset_uri", self.dataset_uri, "a snapshot URI", DatasetConfigurationError)
        base, split = parse_snapshot_uri(uri)
        storage = self.hook.storage_for(base)
        try:
            manifest = load_manifest(base, storage)
            # A checkpoint's batch is a DataFrame; a suite is validated batch by batch from the file.
            df = read_snapshot(uri, storage=storage) if self.checkpoint_name is not None else None
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(f"Cannot validate {uri}: {err}", uri=uri, reason=str(err)) from err
        name = manifest.get("name", base)
        label = f"{name!r} ({uri})"
        suite_name = safe_name(suite_name or f"{name}-suite")
        if df is not None:
            self.log.info(
                "Validating dataset %s: %d rows against checkpoint %s", label, len(df), self.checkpoint_name
            )
            try:
                result = run_checkpoint(str(self.gx_context_dir), str(self.checkpoint_name), df)
            except ValueError as err:
                raise ConfigurationError(str(err), dataset=name, uri=uri) from err
            rows = len(df)
        else:
            self.log.info("Validating dataset %s against %d expectations", label, len(expectations))
            try:
                suite = build_suite(expectations, origin, suite_name)
            except ValueError as err:
                raise ConfigurationError(str(err), dataset=name, uri=uri) from err
            try:
                from airflow_mlops.data.parquet_validation import validate_snapshot

                result, rows = validate_snapshot(uri, suite, name, self.result_format, storage=storage)
            except (FileNotFoundError, ValueError) as err:
                raise DatasetError(f"Cannot validate {uri}: {err}", uri=uri, reason=str(err)) from err
        summary = self._summary(result, uri, manifest.get("name"), manifest.get("snapshot_id"), split, rows)
        docs_dir = self.data_docs_uri or join(base, VALIDATION_DIR, suite_name + (f"-{split}" if split else ""))
        finished = self._finish(result, summary, label, docs_dir, storage, dataset=name, uri=uri)
        return cast("ValidationSummary", finished)

    def _rendered(self, field: str, value: Any, what: str, kind: type[ConfigurationError]) -> str:
        """A rendered string argument, stripped; a ConfigurationError when it rendered empty."""
        if not isinstance(value, str) or not value.strip():
            raise kind(f"{field} must be {what}, got {value!r} once rendered")
        return value.strip()

    def _suite(self) -> tuple[list[dict[str, Any]], str, str | None]:
        """The rendered expectations, where they come from (for messages), and the suite name."""
        suite_name = self.suite_name
        if self.checkpoint_name is not None:
            return [], f"checkpoint {self.checkpoint_name!r}", suite_name or str(self.checkpoint_name)
        try:
            if self.expectations is not None:
                return check_expectations(self.expectations), "expectations", suite_name
            path = self._rendered("suite_path", self.suite_path, "the path of a suite JSON file", ConfigurationError)
            expectations, file_suite_name = parse_suite(self._read_suite(path), path)
        except ConfigurationError:
            raise
        except ValueError as err:
            raise ConfigurationError(str(err)) from err
        return expectations, f"suite file {path}: expectations", suite_name or file_suite_name

    def _read_suite(self, path: str) -> bytes:
        storage = self.hook.storage_for(path)
        try:
            return storage.read_bytes(path)
        except FileNotFoundError as err:
            raise ConfigurationError(f"Expectation suite file {path} does not exist", uri=path) from err

    def _run_suite(
        self,
        expectations: list[dict[str, Any]],
        origin: str,
        suite_name: str,
        batch_of: Any,
        dataset: str | None,
        uri: str,
    ) -> Any:
        """Build the suite (a ConfigurationError names a bad expectation), get the batch, validate it."""
        try:
            suite = build_suite(expectations, origin, suite_name)
        except ValueError as err:
            raise ConfigurationError(str(err), dataset=dataset, uri=uri) from err
        batch = batch_of(ephemeral_context())
        return batch.validate(suite, result_format=self.result_format)

    def _validate_sql(
        self, expectations: list[dict[str, Any]], origin: str, suite_name: str | None
    ) -> dict[str, Any]:
        if self.table is not None:
            target = self._rendered("table", self.table, "a table name", ConfigurationError)
        else:
            target = self._rendered("query", self.query, "a query", ConfigurationError)
        what = f"table {target}" if self.table is not None else "query"
        dataset = f"sql://{self.sql_conn_id}/{target}" if self.table is not None else f"sql://{self.sql_conn_id}"
        try:
            db_hook = BaseHook.get_connection(str(self.sql_conn_id)).get_hook()
            try:
                connection_string = db_hook.sqlalchemy_url.render_as_string(hide_password=False)
            except (AttributeError, NotImplementedError):
                connection_string = db_hook.get_uri()
        except Exception as err:
            raise ConnectionSetupError(
                f"Cannot validate {what} on connection {self.sql_conn_id!r}: no SQLAlchemy URL from it ({err}). "
                "Use a SQL database connection whose provider is installed (and "
                "pip install 'airflow-provider-mlops[sql]', the common.sql provider).",
                uri=dataset,
            ) from err
        key = target if self.table is not None else "query-" + hashlib.sha256(target.encode()).hexdigest()[:16]
        name = safe_name(key)
        label = f"{what} on connection {self.sql_conn_id!r}"
        self.log.info("Validating %s in the database against %d expectations", label, len(expectations))
        suite_name = safe_name(suite_name or f"{name}-suite")

        def batch_of(context: Any) -> Any:
            try:
                return sql_batch(
                    context, name, connection_string,
                    table=target if self.table is not None else None,
                    query=target if self.table is None else None,
                )  # fmt: skip
            except Exception as err:
                raise DatasetError(
                    f"Cannot validate {what} on connection {self.sql_conn_id!r}: {err}",
                    dataset=name, uri=dataset, reason=str(err),
                ) from err  # fmt: skip

        result = self._run_suite(expectations, origin, suite_name, batch_of, dataset=name, uri=dataset)
        summary = self._summary(result, dataset, name, None, None, None)
        docs_dir = self.data_docs_uri or join(
            resolve_data_root(self.data_root), "validation", safe_name(str(self.sql_conn_id)), name, suite_name
        )
        return self._finish(result, summary, label, docs_dir, self.hook.storage_for(docs_dir), name, dataset)

    def _validate_spark(
        self, expectations: list[dict[str, Any]], origin: str, suite_name: str | None
    ) -> dict[str, Any]:
        """Validate a Spark table or query through GX's Spark datasource: the metrics run as Spark jobs."""
        from airflow_mlops.data.spark_drift import SparkData
        from airflow_mlops.hooks.spark import SparkHook, import_pyspark

        import_pyspark()  # a missing pyspark names the extra to install
        from pyspark.errors import PySparkException

        conn_id = str(self.spark_conn_id)
        if self.table is not None:
            target = self._rendered("table", self.table, "a table name", ConfigurationError)
        else:
            target = self._rendered("query", self.query, "a query", ConfigurationError)
        what = f"table {target}" if self.table is not None else "query"
        dataset = f"spark://{conn_id}/{target}" if self.table is not None else f"spark://{conn_id}"
        key = (
            target if self.table is not None else "query-" + hashlib.sha256(target.encode()).hexdigest()[:16]
        )
        name = safe_name(key)
        label = f"{what} on Spark connection {conn_id!r}"
        suite_name = safe_name(suite_name or f"{name}-suite")
        hook = SparkHook(spark_conn_id=conn_id)
        data = SparkData(table=target, query=None) if self.table is not None else SparkData(query=target)
        try:
            frame = data.frame(hook.get_conn())
            frame.schema  # noqa: B018  (a missing table or a bad query fails here, naming itself)
        except PySparkException as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
            raise DatasetError(
                f"Cannot validate {what} on Spark connection {conn_id!r}: {reason}",
                dataset=name, uri=dataset, reason=reason,
            ) from err  # fmt: skip
        self.log.info("Validating %s in Spark against %d expectations", label, len(expectations))

        def batch_of(context: Any) -> Any:
            return spark_batch(context, name, frame)

        result = self._run_suite(expectations, origin, suite_name, batch_of, dataset=name, uri=dataset)
        summary = self._summary(result, dataset, name, None, None, None)
        docs_dir = self.data_docs_uri or join(
            resolve_data_root(self.data_root), "validation", "spark-" + safe_name(conn_id), name, suite_name
        )
        return self._finish(result, summary, label, docs_dir, self.hook.storage_for(docs_dir), name, dataset)

    def _summary(
        self,
        result: Any,
        dataset: str,
        name: str | None,
        snapshot_id: str | None,
        split: str | None,
        rows: int | None,
    ) -> dict[str, Any]:
        counts = summarize(result, self.on_warning)
        return {
            "success": counts.pop("success"),
            "blocking": counts.pop("blocking"),
            "dataset": dataset,
            "name": name,
            "snapshot_id": snapshot_id,
            "split": split,
            "rows": rows,
            **counts,
        }

    def _finish(
        self,
        result: Any,
        summary: dict[str, Any],
        label: str,
        docs_dir: str,
        storage: Storage,
        dataset: str | None,
        uri: str,
    ) -> dict[str, Any]:
        summary["data_docs"], summary["data_docs_uri"] = (
            self._write_data_docs(result, docs_dir, storage, summary) if self.data_docs else (None, None)
        )
        if summary["success"]:
            self.log.info("Dataset %s passed all %d expectations", label, summary["evaluated"])
            return summary
        message = failure_message(label, summary)
        if not summary["blocking"]:
            self.log.warning("%s\n(only warning-severity expectations failed; on_warning=continue)", message)
            return summary
        if self.soft_fail:
            self.log.warning("%s\n(soft_fail=True: continuing)", message)
            return summary
        failed = ", ".join(sorted({failure["expectation"] for failure in summary["failed"]}))
        keep(self, summary)  # the failed task's OpenLineage event reports the failed expectations
        raise DataValidationError(message, dataset=dataset, uri=uri, reason=f"failed: {failed}")

    def _write_data_docs(
        self, result: Any, docs_dir: str, storage: Storage, summary: dict[str, Any]
    ) -> tuple[str, str | None]:
        """Store the page (and publish it to MLflow with ``experiment_name``); its location and browser URL."""
        uri = join(docs_dir, "index.html")
        html = render_data_docs(result)
        storage.write_bytes(uri, html.encode("utf-8"))
        self.log.info("Data Docs written to %s", uri)
        if self.experiment_name is not None:
            url = self._publish_data_docs(html, summary)
        else:
            root = resolve_data_root(self.data_root) if self.data_docs_base_url else None
            url = data_docs_url(uri, self.data_docs_base_url, root)
        # A link the UI shows must open in a browser elsewhere: not a file:// page of the worker.
        self.data_docs_url = browser_url(url)
        return uri, self.data_docs_url or None

    def _publish_data_docs(self, html: str, summary: dict[str, Any]) -> str:
        """
        Log the page as an artifact of this task instance's MLflow run (created once, found again on a retry).

        :return: The artifact's page in the MLflow UI, or "" when the tracking URI has no UI.
        """
        from airflow_mlops.registry import get_or_create_experiment

        name = str(self.experiment_name).strip()
        client = self.mlflow_hook.client
        experiment_id = get_or_create_experiment(client, name)
        run_id = self._validation_run(client, experiment_id, summary)
        client.log_text(run_id, html, DATA_DOCS_ARTIFACT)
        client.set_tag(run_id, T.VALIDATION_SUCCESS, str(bool(summary["success"])).lower())
        blocked = not summary["success"] and summary["blocking"]
        client.set_terminated(run_id, "FAILED" if blocked else "FINISHED")
        page = run_url(self.mlflow_hook.tracking_uri, experiment_id, run_id)
        url = f"{page}/artifacts/{quote(DATA_DOCS_ARTIFACT)}" if page else ""
        self.log.info("Data Docs published to MLflow run %s: %s", run_id, url or DATA_DOCS_ARTIFACT)
        return url

    def _validation_run(self, client: MlflowClient, experiment_id: str, summary: dict[str, Any]) -> str:
        """The MLflow run of this task instance: the one an earlier try created, else a new one."""
        from mlflow.entities import ViewType

        ids = self._ids
        identity = {
            T.AIRFLOW_DAG_ID: str(ids.get("dag_id") or self.dag_id),
            T.AIRFLOW_RUN_ID: str(ids.get("run_id") or "manual"),
            T.AIRFLOW_TASK_ID: self.task_id,
            T.AIRFLOW_MAP_INDEX: str(-1 if ids.get("map_index") is None else ids["map_index"]),
        }
        if not any("'" in value for value in identity.values()):
            found = client.search_runs(
                [experiment_id],
                filter_string=" and ".join(f"tags.`{key}` = '{value}'" for key, value in identity.items()),
                run_view_type=ViewType.ACTIVE_ONLY,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                return str(found[0].info.run_id)
        run_tags = {
            **identity,
            T.AIRFLOW_TRY_NUMBER: str(ids.get("try_number") or 1),
            T.DATA_URI: str(summary["dataset"]),
        }
        run_name = f"{identity[T.AIRFLOW_DAG_ID]}.{self.task_id}"
        return str(client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The snapshot validated, with the results as data-quality assertions, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import validation_lineage
        from airflow_mlops.utils.results import kept_result

        expectations = self.expectations if isinstance(self.expectations, list) else None
        return validation_lineage(kept_result(self), expectations)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """A failed validation reports its results too: the failed expectations as failed assertions."""
        return self.get_openlineage_facets_on_complete(task_instance)
