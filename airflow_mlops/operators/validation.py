"""Operator that validates a dataset snapshot with a Great Expectations suite."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook, BaseOperator

from airflow_mlops.data.snapshots import load_manifest, parse_snapshot_uri, read_snapshot, resolve_data_root
from airflow_mlops.data.storage import Storage, is_s3, join, local_path
from airflow_mlops.exceptions import ConnectionSetupError, DatasetError, DataValidationError
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.links import DataDocsLink, data_docs_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from airflow.sdk import Context

RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")
ON_WARNING = ("fail", "continue")
# Expectation severities (GX 1.x) whose failures do not block when on_warning="continue".
NON_BLOCKING_SEVERITIES = frozenset({"warning", "info"})
VALIDATION_DIR = "_validation"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_EXPECTATION_KEYS = frozenset(
    {"type", "kwargs", "meta", "notes", "description", "severity", "id", "rendered_content"}
)
# Passed on to GX; the ids and rendered content of an exported suite are not.
_CONFIG_FIELDS = _EXPECTATION_KEYS - {"id", "rendered_content"}
# What a failed expectation reports, in this order; never the rows themselves.
_OBSERVED_KEYS = (
    "observed_value",
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "missing_count",
    "partial_unexpected_list",
)
_MAX_EXAMPLES = 5
_MAX_CHARS = 300


# Table-level expectations that need the rows but no particular column.
_ROW_COUNT_EXPECTATIONS = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
_COLUMN_KWARGS = ("column", "column_A", "column_B")


def columns_to_read(expectations: list[dict[str, Any]], schema: list[str]) -> list[str] | None:
    """
    The snapshot columns a suite looks at, so only those are read (memory and time grow with them).

    None (read everything) when an expectation is about the table's columns as a whole. A column the suite
    names but the snapshot lacks is not read, and its expectation fails as missing.
    """
    needed: set[str] = set()
    for item in expectations:
        kind, kwargs = item["type"], item.get("kwargs") or {}
        if kind.startswith("expect_table_") and kind not in _ROW_COUNT_EXPECTATIONS:
            return None
        needed.update(str(kwargs[key]) for key in _COLUMN_KWARGS if isinstance(kwargs.get(key), str))
        if isinstance(kwargs.get("column_list"), list | tuple):
            needed.update(str(column) for column in kwargs["column_list"])
    selected = [column for column in schema if column in needed]
    return selected or schema[:1] or None  # row counts need the rows: one column carries them


def check_expectations(expectations: object, origin: str = "expectations") -> list[dict[str, Any]]:
    """
    Check the shape of declared expectations without importing Great Expectations.

    Each item must be a dict with a string ``type`` starting with ``expect_`` and a dict ``kwargs``
    (optionally ``meta``, ``notes``, ``description``, ``id``, ``severity``).

    :param expectations: The list to check.
    :param origin: Where the list comes from, for error messages (the argument or the suite file).
    :raises ValueError: naming the offending item and what is allowed.
    """
    example = '[{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}}]'
    if not isinstance(expectations, list | tuple) or not expectations:
        raise ValueError(f"{origin} must be a non-empty list of expectations like {example}")
    out = []
    for index, item in enumerate(expectations):
        where = f"{origin}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be a dict like {example[1:-1]}, got {item!r}")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind.startswith("expect_"):
            raise ValueError(
                f"{where} needs a 'type' naming a Great Expectations expectation (expect_...), got {kind!r}"
            )
        if not isinstance(item.get("kwargs"), dict):
            raise ValueError(f"{where} ({kind}) needs a dict 'kwargs', got {item.get('kwargs')!r}")
        unknown = sorted(set(item) - _EXPECTATION_KEYS)
        if unknown:
            raise ValueError(
                f"{where} ({kind}) has unknown keys {unknown}; allowed: {sorted(_EXPECTATION_KEYS)}"
            )
        out.append(dict(item))
    return out


def _jsonable(value: Any) -> Any:
    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):  # numpy scalars
            return obj.item()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _compact(value: Any) -> Any:
    """*value* as JSON, or a truncated string of it when it is long (observed column lists, big sets)."""
    value = _jsonable(value)
    text = json.dumps(value)
    return value if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 3] + "..."


def _exception_message(info: Any) -> str | None:
    """The first error message in a GX ``exception_info`` (flat, or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _observed(result: dict[str, Any], exception_info: Any) -> dict[str, Any]:
    observed: dict[str, Any] = {}
    error = _exception_message(exception_info)
    if error:
        observed["error"] = error[:_MAX_CHARS]
    for key in _OBSERVED_KEYS:
        if result.get(key) is None:
            continue
        if key == "partial_unexpected_list":
            observed["unexpected_examples"] = _compact(result[key][:_MAX_EXAMPLES])
        elif key == "unexpected_percent":
            observed[key] = round(float(result[key]), 4)
        else:
            observed[key] = _compact(result[key])
    return observed


def _describe_failure(failure: dict[str, Any]) -> str:
    arguments = ", ".join(f"{key}={json.dumps(value)}" for key, value in failure["kwargs"].items())
    observed = ", ".join(f"{key}={json.dumps(value)}" for key, value in failure["observed"].items())
    return f"- {failure['expectation']}({arguments}): {observed or 'failed'}"


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
    ``<data_root>/validation/<sql_conn_id>/<table or query hash>/<suite>/``) and linked from the task as
    "Data Docs".

    Returns (XCom) a compact summary, never data rows: ``{"success", "blocking", "dataset", "name",
    "snapshot_id", "split", "rows", "evaluated", "successful", "unsuccessful", "failed", "data_docs"}``, where
    each item of ``failed`` is ``{"expectation", "column", "severity", "observed", "kwargs"}`` and
    ``observed`` holds the observed value, unexpected counts, up to five unexpected values, or the error the
    expectation raised. ``blocking`` is True when a failure stops the pipeline.

    :param dataset_uri: Snapshot URI, optionally with ``#train`` / ``#valid`` / ``#holdout``. (templated)
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
    """

    template_fields: Sequence[str] = (
        "dataset_uri", "suite_path", "expectations", "table", "query", "data_docs_uri", "gx_context_dir",
        "checkpoint_name",
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sql_conn_id is None:
            if not isinstance(dataset_uri, str) or not dataset_uri.strip():
                raise ValueError(
                    f"dataset_uri must be a snapshot URI (or pass sql_conn_id with table or query), got {dataset_uri!r}"
                )
            if table is not None or query is not None:
                raise ValueError("table and query need sql_conn_id (the database connection)")
        else:
            if dataset_uri is not None:
                raise ValueError(
                    "Pass either dataset_uri (a snapshot) or sql_conn_id with table or query, not both"
                )
            if (table is None) == (query is None):
                raise ValueError("With sql_conn_id, pass exactly one of table or query")
            for label, value in (("table", table), ("query", query)):
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    raise ValueError(f"{label} must be a non-empty string, got {value!r}")
        if sum(x is not None for x in (expectations, suite_path, checkpoint_name)) != 1:
            raise ValueError(
                "Pass exactly one of expectations (a list declared in the DAG), suite_path (a GX suite JSON "
                "file) or checkpoint_name (with gx_context_dir, a GX file data context)"
            )
        if (checkpoint_name is None) != (gx_context_dir is None):
            raise ValueError("checkpoint_name and gx_context_dir go together (a checkpoint of that GX context)")
        if checkpoint_name is not None and sql_conn_id is not None:
            raise ValueError("A checkpoint validates its own data or the snapshot; it does not take sql_conn_id")
        if suite_path is not None and (not isinstance(suite_path, str) or not suite_path.strip()):
            raise ValueError(f"suite_path must be the path of a suite JSON file, got {suite_path!r}")
        if result_format not in RESULT_FORMATS:
            raise ValueError(
                f"result_format must be one of {', '.join(RESULT_FORMATS)}, got {result_format!r}"
            )
        if on_warning not in ON_WARNING:
            raise ValueError(f"on_warning must be one of {', '.join(ON_WARNING)}, got {on_warning!r}")
        if suite_name is not None and (not isinstance(suite_name, str) or not _SAFE_NAME.sub("", suite_name)):
            raise ValueError(f"suite_name must be a non-empty name, got {suite_name!r}")
        self.dataset_uri = dataset_uri
        self.expectations = check_expectations(expectations) if expectations is not None else None
        self.suite_path = suite_path
        self.gx_context_dir = gx_context_dir
        self.checkpoint_name = checkpoint_name
        self.soft_fail = soft_fail
        self.on_warning = on_warning
        self.result_format = result_format
        self.aws_conn_id = aws_conn_id
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.query = query
        self.suite_name = suite_name
        self.data_docs = data_docs
        self.data_docs_uri = data_docs_uri
        self.data_docs_base_url = data_docs_base_url
        self.data_root = data_root
        self.data_docs_url = ""

    @cached_property
    def hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)


    def execute(self, context: Context) -> dict[str, Any]:
        suite_name = self.suite_name
        if self.checkpoint_name is not None:
            expectations, origin = [], f"checkpoint {self.checkpoint_name!r}"
            suite_name = suite_name or str(self.checkpoint_name)
        elif self.expectations is not None:
            expectations, origin = self.expectations, "expectations"
        else:
            path = self.suite_path.strip()
            expectations, file_suite_name = self._load_suite(self.hook.storage_for(path), path)
            origin = f"suite file {path}: expectations"
            suite_name = suite_name or file_suite_name
        if self.sql_conn_id is not None:
            return self._validate_sql(expectations, origin, suite_name)

        uri = self.dataset_uri.strip()
        base, split = parse_snapshot_uri(uri)
        storage = self.hook.storage_for(base)
        try:
            manifest = load_manifest(base, storage)
            schema = list(manifest.get("schema") or {})
            columns = None if self.checkpoint_name is not None else columns_to_read(expectations, schema)
            df = read_snapshot(uri, storage=storage, columns=columns)
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(f"Cannot validate {uri}: {err}") from err
        name = manifest.get("name", base)
        label = f"{name!r} ({uri})"
        self.log.info(
            "Validating dataset %s: %d rows against %d expectations", label, len(df), len(expectations)
        )
        suite_name = _safe(suite_name or f"{name}-suite")

        if self.checkpoint_name is not None:
            result = self._run_checkpoint(df)
        else:
            result = self._run_gx(name, expectations, origin, suite_name, dataframe=df)
        summary = self._summarize(result, uri, manifest, split, len(df))
        docs_dir = self.data_docs_uri or join(
            base, VALIDATION_DIR, suite_name + (f"-{split}" if split else "")
        )
        return self._finish(result, summary, label, docs_dir, storage)

    def _validate_sql(
        self, expectations: list[dict[str, Any]], origin: str, suite_name: str | None
    ) -> dict[str, Any]:
        target = self.table.strip() if self.table is not None else self.query.strip()
        what = f"table {target}" if self.table is not None else "query"
        try:
            db_hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
            try:
                connection_string = db_hook.sqlalchemy_url.render_as_string(hide_password=False)
            except (AttributeError, NotImplementedError):
                connection_string = db_hook.get_uri()
        except Exception as err:
            raise ConnectionSetupError(
                f"Cannot validate {what} on connection {self.sql_conn_id!r}: no SQLAlchemy URL from it ({err}). "
                "Use a SQL database connection whose provider is installed."
            ) from err
        key = (
            self.table.strip()
            if self.table is not None
            else "query-" + hashlib.sha256(target.encode()).hexdigest()[:16]
        )
        name = _safe(key)
        label = f"{what} on connection {self.sql_conn_id!r}"
        self.log.info("Validating %s in the database against %d expectations", label, len(expectations))
        suite_name = _safe(suite_name or f"{name}-suite")
        result = self._run_gx(
            name, expectations, origin, suite_name, connection_string=connection_string, sql_target=target
        )
        dataset = (
            f"sql://{self.sql_conn_id}/{self.table.strip()}"
            if self.table is not None
            else f"sql://{self.sql_conn_id}"
        )
        summary = self._summarize(result, dataset, {"name": name}, None, None)
        docs_dir = self.data_docs_uri or join(
            resolve_data_root(self.data_root), "validation", _safe(self.sql_conn_id), name, suite_name
        )
        return self._finish(result, summary, label, docs_dir, self.hook.storage_for(docs_dir))

    def _finish(
        self, result: Any, summary: dict[str, Any], label: str, docs_dir: str, storage: Storage
    ) -> dict[str, Any]:
        summary["data_docs"] = self._write_data_docs(result, docs_dir, storage) if self.data_docs else None
        if summary["success"]:
            self.log.info("Dataset %s passed all %d expectations", label, summary["evaluated"])
            return summary
        message = (
            f"Dataset {label} failed {summary['unsuccessful']} of {summary['evaluated']} expectations:\n"
            + ("\n".join(_describe_failure(failure) for failure in summary["failed"]))
        )
        if summary["data_docs"]:
            message += f"\nData Docs: {summary['data_docs']}"
        if not summary["blocking"]:
            self.log.warning("%s\n(only warning-severity expectations failed; on_warning=continue)", message)
            return summary
        if self.soft_fail:
            self.log.warning("%s\n(soft_fail=True: continuing)", message)
            return summary
        raise DataValidationError(message)

    def _write_data_docs(self, result: Any, docs_dir: str, storage: Storage) -> str:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
        uri = join(docs_dir, "index.html")
        storage.write_bytes(uri, html.encode("utf-8"))
        root = resolve_data_root(self.data_root) if self.data_docs_base_url else None
        self.data_docs_url = data_docs_url(uri, self.data_docs_base_url, root)
        self.log.info("Data Docs written to %s", uri)
        return uri

    def _load_suite(self, storage: Storage, path: str) -> tuple[list[dict[str, Any]], str | None]:
        try:
            raw = storage.read_bytes(path) if is_s3(path) else local_path(path).read_bytes()
        except FileNotFoundError as err:
            raise ValueError(f"Expectation suite file {path} does not exist") from err
        try:
            suite = json.loads(raw)
        except ValueError as err:
            raise ValueError(f"Expectation suite file {path} is not valid JSON: {err}") from err
        if not isinstance(suite, dict) or "expectations" not in suite:
            raise ValueError(
                f"Expectation suite file {path} must be a JSON object with an 'expectations' list "
                '(GX 1.x suite format: {"name": ..., "expectations": [{"type": ..., "kwargs": ...}]})'
            )
        expectations = check_expectations(
            suite["expectations"], origin=f"Expectation suite file {path}: expectations"
        )
        suite_name = suite.get("name")
        return expectations, suite_name if isinstance(suite_name, str) and suite_name.strip() else None

    def _run_gx(
        self,
        name: str,
        expectations: list[dict[str, Any]],
        origin: str,
        suite_name: str,
        dataframe: pd.DataFrame | None = None,
        connection_string: str | None = None,
        sql_target: str | None = None,
    ) -> Any:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        gx_logger = logging.getLogger("great_expectations")
        if gx_logger.level == logging.NOTSET:
            # GX logs its own internals at INFO (docs registration, metric declarations): keep task logs readable.
            gx_logger.setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.core.expectation_suite import ExpectationSuite
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.exceptions import ExpectationNotFoundError
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        if gx_logger.level == logging.WARNING:
            # This module forces its own logger to INFO on import.
            logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

        built = []
        for index, item in enumerate(expectations):
            kind = item["type"]
            fields = {key: value for key, value in item.items() if key in _CONFIG_FIELDS}
            try:
                built.append(ExpectationConfiguration(**fields).to_domain_obj())
            except ExpectationNotFoundError as err:
                raise ValueError(
                    f"Unknown expectation type {kind!r} in {origin}[{index}]; see "
                    "https://greatexpectations.io/expectations/ for the available types"
                ) from err
            except Exception as err:
                detail = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
                raise ValueError(f"Invalid kwargs for {kind!r} in {origin}[{index}]: {detail}") from err

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        if dataframe is not None:
            batch = (
                context.data_sources.add_pandas(name="airflow_mlops")
                .add_dataframe_asset(name=name)
                .add_batch_definition_whole_dataframe("snapshot")
                .get_batch(batch_parameters={"dataframe": dataframe})
            )
        else:
            batch = self._sql_batch(context, name, connection_string, sql_target)
        suite = ExpectationSuite(name=suite_name, expectations=built)
        if len(suite.expectations) != len(built):  # GX drops invalid expectations with only a log line
            raise ValueError(f"Great Expectations rejected some expectations of {origin}; see the log above")
        return batch.validate(suite, result_format=self.result_format)

    def _run_checkpoint(self, dataframe: pd.DataFrame) -> Any:
        """Run the checkpoint of the GX file context; return its (single) validation result."""
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        root = str(self.gx_context_dir)
        try:
            context = gx.get_context(mode="file", project_root_dir=root)
            checkpoint = context.checkpoints.get(str(self.checkpoint_name))
        except Exception as err:
            raise ValueError(
                f"Cannot load checkpoint {self.checkpoint_name!r} from the GX context at {root}: {err}"
            ) from err
        definitions = list(checkpoint.validation_definitions)
        if len(definitions) != 1:
            raise ValueError(
                f"Checkpoint {self.checkpoint_name!r} in {root} has {len(definitions)} validation definitions; "
                "this operator validates one dataset per task, so give it exactly one"
            )
        data = definitions[0].data
        is_dataframe = getattr(data.data_asset, "type", "") == "dataframe"
        result = checkpoint.run(batch_parameters={"dataframe": dataframe} if is_dataframe else None)
        (validation,) = result.run_results.values()
        return validation

    def _sql_batch(self, context: Any, name: str, connection_string: str | None, target: str | None) -> Any:
        # The dialect-specific datasources know their SQL quirks; any other SQLAlchemy URL goes through add_sql.
        scheme = (connection_string or "").split(":", 1)[0].split("+", 1)[0]
        add = {
            "sqlite": context.data_sources.add_sqlite,
            "postgresql": context.data_sources.add_postgres,
        }.get(scheme, context.data_sources.add_sql)
        source = add(name="airflow_mlops_sql", connection_string=connection_string)
        try:
            if self.table is not None:
                schema_name, _, table_name = target.rpartition(".")
                asset = source.add_table_asset(
                    name=name, table_name=table_name, schema_name=schema_name or None
                )
            else:
                asset = source.add_query_asset(name=name, query=target)
            return asset.add_batch_definition_whole_table("all").get_batch()
        except Exception as err:
            what = f"table {target}" if self.table is not None else "query"
            raise DatasetError(f"Cannot validate {what} on connection {self.sql_conn_id!r}: {err}") from err

    def _summarize(
        self, result: Any, uri: str, manifest: dict[str, Any], split: str | None, rows: int | None
    ) -> dict[str, Any]:
        failed = []
        for item in result.results:
            if item.success:
                continue
            kwargs = {k: _compact(v) for k, v in item.expectation_config.kwargs.items() if k != "batch_id"}
            severity = str(getattr(item.expectation_config, "severity", None) or "critical")
            severity = getattr(severity, "value", severity).split(".")[-1].lower()
            failed.append(
                {
                    "expectation": item.expectation_config.type,
                    "column": kwargs.get("column"),
                    "severity": severity,
                    "observed": _observed(item.result or {}, item.exception_info),
                    "kwargs": kwargs,
                }
            )
        statistics = result.statistics
        blocking = any(
            self.on_warning == "fail" or failure["severity"] not in NON_BLOCKING_SEVERITIES
            for failure in failed
        )
        return {
            "success": bool(result.success),
            "blocking": bool(not result.success and blocking),
            "dataset": uri,
            "name": manifest.get("name"),
            "snapshot_id": manifest.get("snapshot_id"),
            "split": split,
            "rows": rows,
            "evaluated": int(statistics["evaluated_expectations"]),
            "successful": int(statistics["successful_expectations"]),
            "unsuccessful": int(statistics["unsuccessful_expectations"]),
            "failed": failed,
        }


def _safe(name: str) -> str:
    """*name* made safe as one path segment (Data Docs folders)."""
    return _SAFE_NAME.sub("_", name).strip("._") or "suite"
