"""Operator that validates a dataset snapshot with a Great Expectations suite."""

from __future__ import annotations

import json
import logging
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.exceptions import DatasetError, DataValidationError
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.runtime.datasets import load_manifest, parse_snapshot_uri, read_snapshot
from airflow_mlops.runtime.storage import Storage, is_s3, local_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from airflow.sdk import Context

RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")
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
    Validate a dataset snapshot (or one of its splits) with Great Expectations.

    Expectations are declared in the DAG file (``expectations``) or in a Great Expectations 1.x suite JSON
    file (``suite_path``: ``{"name": ..., "expectations": [{"type": ..., "kwargs": ...}]}``). The snapshot is
    validated in memory with an ephemeral GX context; nothing is written.

    Returns (XCom) a compact summary, never data rows: ``{"success", "dataset", "name", "snapshot_id",
    "split", "rows", "evaluated", "successful", "unsuccessful", "failed"}``, where each item of ``failed`` is
    ``{"expectation", "column", "observed", "kwargs"}`` and ``observed`` holds the observed value, unexpected
    counts, up to five unexpected values, or the error the expectation raised.

    :param dataset_uri: Snapshot URI, optionally with ``#train`` / ``#valid`` / ``#holdout``. (templated)
    :param expectations: List of ``{"type": "expect_...", "kwargs": {...}}``.
    :param suite_path: Path (local or ``s3://``) of a GX suite JSON file, instead of ``expectations``.
        (templated)
    :param soft_fail: If True, a failed validation logs a warning and returns the summary with
        ``success: false`` instead of failing the task.
    :param result_format: GX result format: ``BOOLEAN_ONLY``, ``BASIC``, ``SUMMARY`` or ``COMPLETE``.
        ``BOOLEAN_ONLY`` reports no unexpected values at all.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` snapshots and suite files.
    """

    template_fields: Sequence[str] = ("dataset_uri", "suite_path", "expectations")

    def __init__(
        self,
        *,
        dataset_uri: str,
        expectations: list[dict[str, Any]] | None = None,
        suite_path: str | None = None,
        soft_fail: bool = False,
        result_format: str = "SUMMARY",
        aws_conn_id: str | None = StorageHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(dataset_uri, str) or not dataset_uri.strip():
            raise ValueError(f"dataset_uri must be a snapshot URI, got {dataset_uri!r}")
        if (expectations is None) == (suite_path is None):
            raise ValueError("Pass exactly one of expectations (a list declared in the DAG) or suite_path")
        if suite_path is not None and (not isinstance(suite_path, str) or not suite_path.strip()):
            raise ValueError(f"suite_path must be the path of a suite JSON file, got {suite_path!r}")
        if result_format not in RESULT_FORMATS:
            raise ValueError(
                f"result_format must be one of {', '.join(RESULT_FORMATS)}, got {result_format!r}"
            )
        self.dataset_uri = dataset_uri
        self.expectations = check_expectations(expectations) if expectations is not None else None
        self.suite_path = suite_path
        self.soft_fail = soft_fail
        self.result_format = result_format
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)

    def _storage_for(self, *uris: str) -> Storage:
        return self.hook.storage if any(is_s3(uri) for uri in uris) else Storage()

    def execute(self, context: Context) -> dict[str, Any]:
        uri = self.dataset_uri.strip()
        base, split = parse_snapshot_uri(uri)
        storage = self._storage_for(base, self.suite_path or "")
        if self.expectations is not None:
            expectations, origin = self.expectations, "expectations"
        else:
            expectations = self._load_suite(storage, self.suite_path.strip())
            origin = f"suite file {self.suite_path.strip()}: expectations"

        try:
            manifest = load_manifest(base, storage)
            df = read_snapshot(uri, storage=storage)
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(f"Cannot validate {uri}: {err}") from err
        name = manifest.get("name", base)
        label = f"{name!r} ({uri})"
        self.log.info(
            "Validating dataset %s: %d rows against %d expectations", label, len(df), len(expectations)
        )

        result = self._run_gx(df, name, expectations, origin)
        summary = self._summarize(result, uri, manifest, split, len(df))
        if summary["success"]:
            self.log.info("Dataset %s passed all %d expectations", label, summary["evaluated"])
            return summary
        message = (
            f"Dataset {label} failed {summary['unsuccessful']} of {summary['evaluated']} expectations:\n"
            + ("\n".join(_describe_failure(failure) for failure in summary["failed"]))
        )
        if self.soft_fail:
            self.log.warning("%s\n(soft_fail=True: continuing)", message)
            return summary
        raise DataValidationError(message)

    def _load_suite(self, storage: Storage, path: str) -> list[dict[str, Any]]:
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
        return check_expectations(
            suite["expectations"], origin=f"Expectation suite file {path}: expectations"
        )

    def _run_gx(self, df: pd.DataFrame, name: str, expectations: list[dict[str, Any]], origin: str) -> Any:
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
        batch = (
            context.data_sources.add_pandas(name="airflow_mlops")
            .add_dataframe_asset(name=name)
            .add_batch_definition_whole_dataframe("snapshot")
            .get_batch(batch_parameters={"dataframe": df})
        )
        suite = ExpectationSuite(name=f"{name}-suite", expectations=built)
        if len(suite.expectations) != len(built):  # GX drops invalid expectations with only a log line
            raise ValueError(f"Great Expectations rejected some expectations of {origin}; see the log above")
        return batch.validate(suite, result_format=self.result_format)

    @staticmethod
    def _summarize(
        result: Any, uri: str, manifest: dict[str, Any], split: str | None, rows: int
    ) -> dict[str, Any]:
        failed = []
        for item in result.results:
            if item.success:
                continue
            kwargs = {k: _compact(v) for k, v in item.expectation_config.kwargs.items() if k != "batch_id"}
            failed.append(
                {
                    "expectation": item.expectation_config.type,
                    "column": kwargs.get("column"),
                    "observed": _observed(item.result or {}, item.exception_info),
                    "kwargs": kwargs,
                }
            )
        statistics = result.statistics
        return {
            "success": bool(result.success),
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
