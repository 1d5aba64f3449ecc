"""
Great Expectations suites: checking them, running them, and summarising their results, without Airflow.

Expectations are plain dicts, ``{"type": "expect_...", "kwargs": {...}}`` (the GX 1.x suite format), checked
without importing Great Expectations (:func:`check_expectations`). A validation result is summarised into a
small JSON value that never holds data rows (:func:`summarize`). Great Expectations is imported only by the
functions that run a suite.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

#: GX result formats, from the least to the most detailed.
RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")
#: What to do when only non-blocking expectations fail.
ON_WARNING = ("fail", "continue")
#: Expectation severities (GX 1.x) whose failures do not block when ``on_warning="continue"``.
NON_BLOCKING_SEVERITIES = frozenset({"warning", "info"})
#: The keys an expectation may have.
EXPECTATION_KEYS = frozenset(
    {"type", "kwargs", "meta", "notes", "description", "severity", "id", "rendered_content"}
)
# Passed on to GX; the ids and rendered content of an exported suite are not.
_CONFIG_FIELDS = EXPECTATION_KEYS - {"id", "rendered_content"}
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
_SAFE_NAME = r"[^A-Za-z0-9._-]+"  # compiled (and cached by re) when first used
# Table-level expectations that need the rows but no particular column.
_ROW_COUNT_EXPECTATIONS = {"expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"}
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_EXAMPLE = '[{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}}]'


def safe_name(name: str) -> str:
    """*name* made safe as one path segment (Data Docs folders)."""
    return re.sub(_SAFE_NAME, "_", name).strip("._") or "suite"


def is_valid_suite_name(name: object) -> bool:
    """Whether *name* is a string with at least one letter, digit, ``.``, ``_`` or ``-``."""
    return isinstance(name, str) and bool(re.sub(_SAFE_NAME, "", name))


def check_expectations(expectations: object, origin: str = "expectations") -> list[dict[str, Any]]:
    """
    Check the shape of declared expectations without importing Great Expectations.

    Each item must be a dict with a string ``type`` starting with ``expect_`` and a dict ``kwargs``
    (optionally ``meta``, ``notes``, ``description``, ``id``, ``severity``).

    :param expectations: The list to check.
    :param origin: Where the list comes from, for error messages (the argument or the suite file).
    :raises ValueError: naming the offending item and what is allowed.
    """
    if not isinstance(expectations, list | tuple) or not expectations:
        raise ValueError(f"{origin} must be a non-empty list of expectations like {_EXAMPLE}")
    out = []
    for index, item in enumerate(expectations):
        where = f"{origin}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be a dict like {_EXAMPLE[1:-1]}, got {item!r}")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind.startswith("expect_"):
            raise ValueError(
                f"{where} needs a 'type' naming a Great Expectations expectation (expect_...), got {kind!r}"
            )
        if not isinstance(item.get("kwargs"), dict):
            raise ValueError(f"{where} ({kind}) needs a dict 'kwargs', got {item.get('kwargs')!r}")
        unknown = sorted(set(item) - EXPECTATION_KEYS)
        if unknown:
            raise ValueError(
                f"{where} ({kind}) has unknown keys {unknown}; allowed: {sorted(EXPECTATION_KEYS)}"
            )
        out.append(dict(item))
    return out


#: The column types :func:`table_suite` pins (``types=``), and the pandas dtypes each accepts, as Great
#: Expectations 1.x matches them (nullable pandas dtypes by their class names). Text is not among them: GX
#: cannot match pandas' text dtypes reliably, so text columns are left unpinned.
_INTEGER_DTYPES = (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
)  # fmt: skip
COLUMN_TYPES: dict[str, tuple[str, ...]] = {
    "number": (*_INTEGER_DTYPES, "float16", "float32", "float64", "Float32Dtype", "Float64Dtype"),
    "integer": _INTEGER_DTYPES,
    "boolean": ("bool", "BooleanDtype"),
    "datetime": ("datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"),
}
#: Where a pinned type is recorded in an expectation (its ``meta``), for messages.
TYPE_META_KEY = "mlops_column_type"
_TYPE_EXPECTATION = "expect_column_values_to_be_in_type_list"


def column_type(dtype: str) -> str | None:
    """
    The :data:`COLUMN_TYPES` name of a pandas dtype (as a manifest's ``schema`` writes it), or None.

    Integers and floats are both ``"number"`` (an integer column with a missing value is read as floats);
    timezone-aware timestamps, text, categories and objects are None (not pinned).
    """
    dtype = dtype.strip()
    if dtype.lower().startswith(("int", "uint", "float")):
        return "number"
    if dtype.lower() in ("bool", "boolean"):
        return "boolean"
    if dtype.startswith("datetime64[") and "," not in dtype:
        return "datetime"
    return None


def types_from_schema(schema: dict[str, str]) -> dict[str, str]:
    """
    The column types a good snapshot pins, from its manifest ``schema`` (``{column: pandas dtype}``).

    Pass the result to :func:`table_suite` (``types=``) so that a later file with text, timestamps or lists
    where this one had numbers fails validation, naming the column and the type expected. Columns whose
    type cannot be pinned (:func:`column_type`) are left out.
    """
    return {column: kind for column, dtype in schema.items() if (kind := column_type(str(dtype)))}


def types_of_snapshot(uri: str, storage: Any = None) -> dict[str, str]:
    """
    :func:`types_from_schema` of the snapshot at *uri* (its manifest only is read; a ``#split`` is ignored).

    Meant to be run once on a snapshot known to be good, and its result written into the DAG
    (``table_suite(..., types={...})``): nothing is read when a DAG is parsed.

    :param storage: A :class:`~airflow_mlops.data.storage.Storage` for ``s3://`` snapshots (None: default).
    """
    from airflow_mlops.data.snapshots import load_manifest, parse_snapshot_uri

    return types_from_schema(load_manifest(parse_snapshot_uri(uri)[0], storage)["schema"])


def type_expectation(column: str, kind: str) -> dict[str, Any]:
    """
    The expectation that column *column* is of type *kind* (one of :data:`COLUMN_TYPES`).

    :raises ValueError: if *kind* is not one of them.
    """
    if kind not in COLUMN_TYPES:
        raise ValueError(
            f"Column {column!r}: type {kind!r} cannot be pinned; use one of {', '.join(COLUMN_TYPES)} "
            "(text columns are not pinned)"
        )
    return {
        "type": _TYPE_EXPECTATION,
        "kwargs": {"column": column, "type_list": list(COLUMN_TYPES[kind])},
        "meta": {TYPE_META_KEY: kind},
    }


def _label_type(label_values: Sequence[Any] | None) -> str | None:
    """The type the allowed label values pin: numbers (not booleans) or booleans; None for anything else."""
    values = list(label_values or [])
    if values and all(isinstance(v, bool) for v in values):
        return "boolean"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"  # true/false equal 1/0 in Python: only the column's type tells them apart
    return None


def table_suite(
    features: Sequence[str],
    label: str,
    label_values: Sequence[Any] | None = None,
    min_rows: int = 1,
    types: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """
    The suite a training table needs before anything trains on it, as expectation dicts.

    Exactly the columns *features* plus *label* (an extra, junk or missing column fails), at least
    *min_rows* rows, a label that is never null (an all-null label fails) and, when *label_values* is
    given, always one of them, and features that are never null. The names may be Jinja templates
    (``"{{ params.target }}"``): the operator renders them.

    Numeric *label_values* also pin the label's type to numbers, so ``true``/``false`` labels fail (Python
    takes them for 1/0); boolean ones pin it to booleans. *types* pins the features' types: a column
    written with thousands separators (``"1,234"``, read as text), holding timestamps or lists where
    numbers are expected fails, and the message names the column and the type expected.

    :param features: The feature columns.
    :param label: The label column.
    :param label_values: The values the label may take (None: any).
    :param min_rows: The fewest rows accepted.
    :param types: ``{column: type}`` with a type of :data:`COLUMN_TYPES` (``"number"``, ``"integer"``,
        ``"boolean"``, ``"datetime"``), for features and the label; :func:`types_of_snapshot` derives it
        from a good snapshot. None: only the label's type is pinned, by *label_values*.
    :raises ValueError: if *types* names a column that is not in the table, or a type that cannot be pinned.
    """
    pinned = dict(types or {})
    unknown = sorted(set(pinned) - {*features, label})
    if unknown:
        raise ValueError(f"types names columns that are not features or the label: {unknown}")
    label_type = pinned.pop(label, None) or _label_type(label_values)
    suite: list[dict[str, Any]] = [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": [*features, label], "exact_match": True},
        },
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": min_rows}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": label}},
    ]
    if label_values is not None:
        suite.append(
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": label, "value_set": list(label_values)},
            }
        )
    if label_type is not None:
        suite.append(type_expectation(label, label_type))
    suite += [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}} for column in features
    ]
    suite += [type_expectation(column, pinned[column]) for column in features if column in pinned]
    return suite


def parse_suite(raw: bytes, path: str) -> tuple[list[dict[str, Any]], str | None]:
    """
    The expectations and name of the GX 1.x suite JSON *raw*, read from *path* (named in messages).

    :raises ValueError: if it is not valid JSON or not a suite of well-formed expectations.
    """
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
    name = suite.get("name")
    return expectations, name if isinstance(name, str) and name.strip() else None


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


# -- summarising results ---------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):  # numpy scalars
            return obj.item()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def compact(value: Any) -> Any:
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


def observed(result: dict[str, Any], exception_info: Any) -> dict[str, Any]:
    """What a failed expectation saw: observed value, unexpected counts, up to five examples, or its error."""
    out: dict[str, Any] = {}
    error = _exception_message(exception_info)
    if error:
        out["error"] = error[:_MAX_CHARS]
    for key in _OBSERVED_KEYS:
        if result.get(key) is None:
            continue
        if key == "partial_unexpected_list":
            out["unexpected_examples"] = compact(result[key][:_MAX_EXAMPLES])
        elif key == "unexpected_percent":
            out[key] = round(float(result[key]), 4)
        else:
            out[key] = compact(result[key])
    return out


def summarize(result: Any, on_warning: str = "fail") -> dict[str, Any]:
    """
    A compact, JSON-safe summary of a GX validation result, never holding data rows.

    :param result: A GX ``ExpectationSuiteValidationResult``.
    :param on_warning: ``"continue"``: failures of ``warning``/``info`` expectations do not block.
    :returns: ``{"success", "blocking", "evaluated", "successful", "unsuccessful", "failed"}``, each item
        of ``failed`` being ``{"expectation", "column", "severity", "observed", "kwargs"}``.
    """
    failed = []
    for item in result.results:
        if item.success:
            continue
        kwargs = {k: compact(v) for k, v in item.expectation_config.kwargs.items() if k != "batch_id"}
        severity = str(getattr(item.expectation_config, "severity", None) or "critical")
        severity = getattr(severity, "value", severity).split(".")[-1].lower()
        failure = {
            "expectation": item.expectation_config.type,
            "column": kwargs.get("column"),
            "severity": severity,
            "observed": observed(item.result or {}, item.exception_info),
            "kwargs": kwargs,
        }
        expected_type = (getattr(item.expectation_config, "meta", None) or {}).get(TYPE_META_KEY)
        if expected_type:
            failure["expected_type"] = str(expected_type)
            kwargs.pop("type_list", None)  # the type's name says it; the dtype list only floods the message
        failed.append(failure)
    statistics = result.statistics
    blocking = any(
        on_warning == "fail" or failure["severity"] not in NON_BLOCKING_SEVERITIES for failure in failed
    )
    return {
        "success": bool(result.success),
        "blocking": bool(not result.success and blocking),
        "evaluated": int(statistics["evaluated_expectations"]),
        "successful": int(statistics["successful_expectations"]),
        "unsuccessful": int(statistics["unsuccessful_expectations"]),
        "failed": failed,
    }


_TYPE_WORDS = {
    "number": "numbers",
    "integer": "whole numbers",
    "boolean": "booleans",
    "datetime": "timestamps",
}
_OBSERVED_WORDS = {"str": "text", "object": "text or mixed values", "bool": "booleans (true/false)",
                   "datetime64": "timestamps", "Timestamp": "timestamps"}  # fmt: skip


def _type_problem(failure: dict[str, Any]) -> str:
    """What a failed type pin means: the column, the type expected, what it holds and the likely cause."""
    column, expected = failure.get("column"), failure["expected_type"]
    seen = failure["observed"].get("observed_value")
    holds = _OBSERVED_WORDS.get(str(seen), f"{seen}" if seen else "values of other types (lists, text...)")
    text = f"column {column!r} must hold {_TYPE_WORDS.get(expected, expected)} ({expected}), it holds {holds}"
    if expected in ("number", "integer") and seen == "str":
        text += (
            " (a CSV column is read as text when a value is not a plain number: a timestamp, a list, or a "
            "number written with thousands separators, \"1,234\", which csv_options={'thousands': ','} reads)"
        )
    elif expected in ("number", "integer") and seen == "bool":
        text += "; true/false are not taken for 1/0: write the values the label check allows"
    return text


def describe_failure(failure: dict[str, Any]) -> str:
    """One line for a failed expectation of a summary: ``- type(kwargs): observed``."""
    arguments = ", ".join(f"{key}={json.dumps(value)}" for key, value in failure["kwargs"].items())
    if failure.get("expected_type"):
        arguments += f", type={json.dumps(failure['expected_type'])}"
    seen = ", ".join(f"{key}={json.dumps(value)}" for key, value in failure["observed"].items())
    line = f"- {failure['expectation']}({arguments}): {seen or 'failed'}"
    return f"{line} -- {_type_problem(failure)}" if failure.get("expected_type") else line


def failure_message(label: str, summary: dict[str, Any]) -> str:
    """The message of a failed validation of *label*: counts, one line per failure, and the Data Docs."""
    message = (
        f"Dataset {label} failed {summary['unsuccessful']} of {summary['evaluated']} expectations:\n"
        + "\n".join(describe_failure(failure) for failure in summary["failed"])
    )
    if summary.get("data_docs"):
        message += f"\nData Docs: {summary['data_docs']}"
    return message


# -- running suites (imports Great Expectations) ---------------------------------------------------------


def _quiet_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        # GX logs its own internals at INFO (docs registration, metric declarations): keep task logs readable.
        gx_logger.setLevel(logging.WARNING)
    if "great_expectations" not in sys.modules:
        # Its import warns about modules it uses (sre_constants, sre_parse...): nothing a task's user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import great_expectations  # noqa: F401
        _quiet_gx_config_logger()


def _quiet_gx_config_logger() -> None:
    if logging.getLogger("great_expectations").level == logging.WARNING:
        # This module forces its own logger to INFO on import.
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


def build_suite(expectations: list[dict[str, Any]], origin: str, suite_name: str) -> Any:
    """
    A GX ``ExpectationSuite`` named *suite_name* of checked *expectations* (from *origin*, for messages).

    :raises ValueError: naming an unknown expectation type or invalid kwargs.
    """
    _quiet_gx()
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    _quiet_gx_config_logger()
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
    suite = ExpectationSuite(name=suite_name, expectations=built)
    if len(suite.expectations) != len(built):  # GX drops invalid expectations with only a log line
        raise ValueError(f"Great Expectations rejected some expectations of {origin}; see the log above")
    return suite


def ephemeral_context() -> Any:
    """An in-memory GX data context without progress bars."""
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx_config_logger()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def dataframe_batch(context: Any, name: str, dataframe: pd.DataFrame) -> Any:
    """A GX batch of the whole *dataframe*, as asset *name* of *context*."""
    return (
        context.data_sources.add_pandas(name="airflow_mlops")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("snapshot")
        .get_batch(batch_parameters={"dataframe": dataframe})
    )


def sql_batch(
    context: Any, name: str, connection_string: str, table: str | None = None, query: str | None = None
) -> Any:
    """
    A GX batch of a database *table* (``[schema.]table``) or *query*, validated where it lives.

    GX sends the metric queries to the database; no rows are loaded here.
    """
    # The dialect-specific datasources know their SQL quirks; any other SQLAlchemy URL goes through add_sql.
    scheme = connection_string.split(":", 1)[0].split("+", 1)[0]
    add = {
        "sqlite": context.data_sources.add_sqlite,
        "postgresql": context.data_sources.add_postgres,
    }.get(scheme, context.data_sources.add_sql)
    source = add(name="airflow_mlops_sql", connection_string=connection_string)
    if table is not None:
        schema_name, _, table_name = table.rpartition(".")
        asset = source.add_table_asset(name=name, table_name=table_name, schema_name=schema_name or None)
    else:
        asset = source.add_query_asset(name=name, query=query)
    return asset.add_batch_definition_whole_table("all").get_batch()


def spark_batch(context: Any, name: str, dataframe: Any) -> Any:
    """
    A GX batch of a Spark DataFrame, through GX's Spark datasource: the metrics run as Spark jobs.

    GX reuses the active ``SparkSession`` (the one the DataFrame belongs to); no rows are collected here.
    """
    return (
        context.data_sources.add_spark(name="airflow_mlops_spark")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": dataframe})
    )


def run_checkpoint(context_dir: str, checkpoint_name: str, dataframe: pd.DataFrame) -> Any:
    """
    Run checkpoint *checkpoint_name* of the GX file context at *context_dir*; return its one validation result.

    Its validation definition validates *dataframe* when its batch definition is a dataframe one, or its own
    data otherwise.

    :raises ValueError: if the checkpoint cannot be loaded or has not exactly one validation definition.
    """
    _quiet_gx()
    import great_expectations as gx

    try:
        context = gx.get_context(mode="file", project_root_dir=context_dir)
        checkpoint = context.checkpoints.get(checkpoint_name)
    except Exception as err:
        raise ValueError(
            f"Cannot load checkpoint {checkpoint_name!r} from the GX context at {context_dir}: {err}"
        ) from err
    definitions = list(checkpoint.validation_definitions)
    if len(definitions) != 1:
        raise ValueError(
            f"Checkpoint {checkpoint_name!r} in {context_dir} has {len(definitions)} validation definitions; "
            "this operator validates one dataset per task, so give it exactly one"
        )
    data = definitions[0].data
    is_dataframe = getattr(data.data_asset, "type", "") == "dataframe"
    result = checkpoint.run(batch_parameters={"dataframe": dataframe} if is_dataframe else None)
    (validation,) = result.run_results.values()
    return validation


def _plain(value: Any) -> Any:
    """*value* with numpy scalars (``float64`` means of columns...) as Python numbers, in nested lists and dicts."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def render_data_docs(result: Any) -> str:
    """
    The Data Docs HTML page of a GX validation result.

    Observed values GX computed as numpy scalars (e.g. the ``float64`` mean of
    ``expect_column_mean_to_be_between``) are made Python numbers first: GX's renderer refuses numpy ones.
    """
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    for item in getattr(result, "results", None) or []:
        if isinstance(getattr(item, "result", None), dict):
            item.result = _plain(item.result)
    return str(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result)))
