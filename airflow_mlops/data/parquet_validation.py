"""
Validating a Parquet snapshot with a Great Expectations suite in bounded memory.

Great Expectations' pandas engine needs the table as one DataFrame (10M rows x 8 columns: about 2 GiB). Here
the expectations most suites are made of are computed with Arrow over the Parquet file instead, one record
batch at a time and reading only the columns they name: the row count (from the file's footer), and
``expect_column_values_to_not_be_null`` / ``_to_be_between`` / ``_to_be_in_set`` on number and text columns.
Arrow supplies the metrics each of these asks GX for (row count, null count, unexpected count, the first
unexpected values and row numbers) and the expectation's own GX code turns them into its result
(``Expectation.metrics_validate``), so counts, percents, ``mostly``, the partial unexpected lists and the
messages built from them are GX's. The unexpected values are converted to Python by pandas' own Parquet
reader, as they would have been in a whole-frame read.

Expectations about the table's columns and their types (``expect_table_columns_to_match_set``,
``expect_column_values_to_be_in_type_list`` on a column pandas reads with a typed dtype...) are run by GX on a
zero-row frame of the same schema; every other expectation, and every expectation when ``result_format`` is
``COMPLETE`` (which lists all unexpected values), is run by GX on a frame of only the columns it names, as a
whole-frame validation would. The results are put back in the order GX gives them.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.expectations import (
    _exception_message,
    columns_to_read,
    dataframe_batch,
    ephemeral_context,
)
from airflow_mlops.data.snapshots import snapshot_file

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    import pyarrow as pa

    from airflow_mlops.data.storage import Storage

#: Rows per record batch read from the Parquet file: memory grows with this times the columns checked.
BATCH_ROWS = 1 << 20
#: Result formats computed here (``COMPLETE`` lists every unexpected value: it is left to GX).
ARROW_RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY")
_ROW_COUNT = {"expect_table_row_count_to_equal", "expect_table_row_count_to_be_between"}
_MAP = {
    "expect_column_values_to_not_be_null": "column_values.nonnull",
    "expect_column_values_to_be_between": "column_values.between",
    "expect_column_values_to_be_in_set": "column_values.in_set",
}
# Results that depend on the column names and pandas dtypes only.
_SCHEMA_ONLY = {
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
    "expect_column_to_exist",
}
# Results that depend on the dtypes only when pandas reads the column with a typed (not object) dtype.
_DTYPE_ONLY = {"expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type"}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits_int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]


def _plain_kwargs(kwargs: dict[str, Any]) -> bool:
    """No row condition and no suite parameter (``{"$PARAMETER": ...}``): GX handles those."""
    if kwargs.get("row_condition") or kwargs.get("condition_parser"):
        return False
    return not any(isinstance(value, dict) and "$PARAMETER" in value for value in kwargs.values())


@dataclass
class _Check:
    """An expectation computed with Arrow: its position in the suite and the metrics gathered so far."""

    position: int
    config: Any
    metric: str | None = None  # the GX map metric (column_values.between...); None for the row count
    column: str | None = None
    nulls: int = 0
    unexpected: int = 0
    rows: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)  # Arrow arrays of the first unexpected values


def _arrow_check(position: int, config: Any, schema: pa.Schema) -> _Check | None:
    """A :class:`_Check` for *config* if Arrow computes what GX's pandas engine would, else None."""
    import pyarrow as pa

    kind, kwargs = config.type, dict(config.kwargs)
    if not _plain_kwargs(kwargs):
        return None
    if kind in _ROW_COUNT:
        return _Check(position, config)
    metric = _MAP.get(kind)
    column = kwargs.get("column")
    if metric is None or not isinstance(column, str) or schema.get_field_index(column) < 0:
        return None  # a missing column: GX names it in its error
    if len(schema.get_all_field_indices(column)) != 1:
        return None
    arrow_type = schema.field(column).type
    is_text = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    is_int64, is_float64 = pa.types.is_int64(arrow_type), pa.types.is_float64(arrow_type)
    if kind == "expect_column_values_to_not_be_null":
        supported = (
            is_text or pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
            or pa.types.is_boolean(arrow_type) or pa.types.is_timestamp(arrow_type)
        )  # fmt: skip
    elif kind == "expect_column_values_to_be_between":
        # GX compares int64 and float64 columns with the bounds vectorised, as Arrow does.
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        bounds = [value for value in (low, high) if value is not None]
        supported = (
            (is_int64 or is_float64)
            and bool(bounds)
            and all(
                _is_number(value) and (not isinstance(value, int) or _fits_int64(value)) for value in bounds
            )
            and (low is None or high is None or low <= high)
        )
    else:
        value_set = kwargs.get("value_set")
        supported = isinstance(value_set, list) and bool(value_set) and (
            (is_text and all(isinstance(value, str) for value in value_set))
            or (is_int64 and all(_fits_int64(value) for value in value_set))
            or (is_float64 and all(_is_number(value) and abs(value) <= 1 << 53 for value in value_set))
        )  # fmt: skip
    return _Check(position, config, metric, column) if supported else None


def _unexpected(check: _Check, values: pa.Array, missing: pa.Array) -> pa.Array:
    """Which rows of *values* (one record batch of the check's column) the expectation does not accept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if check.metric == "column_values.nonnull":
        return missing
    kwargs = check.config.kwargs
    if check.metric == "column_values.between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        accepted = None
        if low is not None:
            accepted = (pc.greater if kwargs.get("strict_min") else pc.greater_equal)(values, low)
        if high is not None:
            upper = (pc.less if kwargs.get("strict_max") else pc.less_equal)(values, high)
            accepted = upper if accepted is None else pc.and_(accepted, upper)
    else:
        value_set = pa.array(kwargs["value_set"]).cast(
            values.type.value_type if pa.types.is_dictionary(values.type) else values.type
        )
        if pa.types.is_dictionary(values.type):  # text read as a dictionary: look up each distinct value once
            accepted = pc.take(pc.is_in(values.dictionary, value_set=value_set), values.indices)
        else:
            accepted = pc.is_in(values, value_set=value_set)
    # Missing values (null, NaN) are not unexpected: GX leaves them out of map expectations.
    return pc.and_(pc.invert(pc.fill_null(accepted, True)), pc.invert(missing))


def _scan(path: str | Path, checks: list[_Check], limit: int, batch_rows: int) -> None:
    """Count nulls and unexpected rows of the column *checks*, keeping the first *limit* of each, batch by batch."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(check.column for check in checks if check.column is not None))
    if not columns:
        return
    schema = pq.read_schema(path)
    text = [name for name in columns if pa.types.is_string(schema.field(name).type)
            or pa.types.is_large_string(schema.field(name).type)]  # fmt: skip
    # pre_buffer would read the chunks of every row group up front and hold them until the scan ends: a file of
    # many row groups (captures staged 131,072 rows at a time) would sit in memory whole.
    parquet = pq.ParquetFile(path, read_dictionary=text, pre_buffer=False)
    offset = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        missing_of: dict[str, pa.Array] = {}
        for check in checks:
            if check.column is None:
                continue
            values = batch.column(check.column)
            if check.column not in missing_of:
                floating = pa.types.is_floating(values.type)
                missing_of[check.column] = pc.is_null(values, nan_is_null=floating)
            missing = missing_of[check.column]
            check.nulls += missing.true_count
            bad = _unexpected(check, values, missing)
            count = bad.true_count
            check.unexpected += count
            if count and len(check.rows) < limit:
                found = pc.indices_nonzero(bad).slice(0, limit - len(check.rows))
                check.rows += [offset + row for row in found.to_pylist()]
                check.values.append(pc.take(values, found))
        offset += batch.num_rows


def _pandas_values(schema: pa.Schema, column: str, arrays: list[pa.Array]) -> list[Any]:
    """*arrays* of *column* as the Python values GX would list: read back by pandas' own Parquet reader."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not arrays:
        return []
    target = schema.field(column)
    values = pa.concat_arrays([array.cast(target.type) for array in arrays])
    metadata = dict(schema.metadata or {})
    if b"pandas" in metadata:  # keep what pandas records about this column (its dtype), not the others
        pandas_meta = json.loads(metadata[b"pandas"])
        pandas_meta["index_columns"] = []
        pandas_meta["columns"] = [c for c in pandas_meta.get("columns", []) if c.get("field_name") == column]
        metadata[b"pandas"] = json.dumps(pandas_meta).encode()
    table = pa.Table.from_arrays([values], schema=pa.schema([target], metadata=metadata))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    return list(pd.read_parquet(buffer)[column])


def _metric(name: str, check: _Check, rows: int, values: list[Any]) -> Any:
    """The value of GX metric *name* for *check*."""
    if name == "table.row_count":
        return rows
    if name == "column_values.nonnull.unexpected_count":
        return check.nulls
    suffix = name.removeprefix(f"{check.metric}.")
    if suffix == "unexpected_count":
        return check.unexpected
    if suffix == "unexpected_values":
        return values
    if suffix == "unexpected_index_list":
        return list(check.rows)
    if suffix == "unexpected_index_query":
        return None  # only reported when a result format asks for it (GX's whole list of row numbers)
    raise KeyError(name)


def _schema_frame(path: str | Path) -> pd.DataFrame:
    """A zero-row frame with the columns and dtypes pandas reads the Parquet file at *path* with."""
    import pandas as pd
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pq.read_schema(path).empty_table(), buffer)
    buffer.seek(0)
    return pd.read_parquet(buffer)


def _gx_run(name: str, frame: pd.DataFrame, suite: Any, configs: list[Any], result_format: str) -> Any:
    """GX's own validation of *configs* (of *suite*) on *frame*."""
    from great_expectations.core.expectation_suite import ExpectationSuite

    part = ExpectationSuite(name=suite.name, expectations=[config.to_domain_obj() for config in configs])
    return dataframe_batch(ephemeral_context(), name, frame).validate(part, result_format=result_format)


def validate_parquet(
    path: str | Path, suite: Any, name: str, result_format: str = "SUMMARY", batch_rows: int = BATCH_ROWS
) -> tuple[Any, int]:
    """
    Validate the Parquet file at *path* with the GX ``ExpectationSuite`` *suite*, as GX validates it whole.

    :param name: The data asset's name (GX's batch id is ``airflow_mlops-<name>``, as for a whole frame).
    :param result_format: ``BOOLEAN_ONLY``, ``BASIC``, ``SUMMARY`` or ``COMPLETE`` (all by GX).
    :param batch_rows: Rows per record batch (memory grows with it).
    :returns: The GX ``ExpectationSuiteValidationResult`` and the number of rows.
    :raises ValueError: if the file is not a readable Parquet file.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path} is not a readable Parquet file: {err}") from err
    rows = int(metadata.num_rows)
    configs = list(suite.expectation_configurations)
    dtypes = _schema_frame(path).dtypes
    checks: list[_Check] = []
    by_schema: list[Any] = []
    by_rows: list[Any] = []
    for position, config in enumerate(configs):
        check = _arrow_check(position, config, schema) if result_format in ARROW_RESULT_FORMATS else None
        column = config.kwargs.get("column")
        schema_only = config.type in _SCHEMA_ONLY or (
            config.type in _DTYPE_ONLY and column in dtypes.index and str(dtypes[column]) != "object"
        )
        if check is not None:
            checks.append(check)
        elif schema_only and result_format in ARROW_RESULT_FORMATS and _plain_kwargs(dict(config.kwargs)):
            by_schema.append(config)
        else:
            by_rows.append(config)

    runs = []  # GX's own results, with the expectations each validated
    if by_rows:
        plain = [{"type": config.type, "kwargs": dict(config.kwargs)} for config in by_rows]
        frame = pd.read_parquet(path, columns=columns_to_read(plain, list(dtypes.index)))
        runs.append((_gx_run(name, frame, suite, by_rows, result_format), by_rows))
        del frame
    if by_schema or not by_rows:  # also the run that gives an all-Arrow suite GX's batch id and metadata
        runs.append((_gx_run(name, _schema_frame(path), suite, by_schema, result_format), by_schema))
    base = runs[0][0]

    rank = _gx_order(configs)
    limit = 20  # GX's partial_unexpected_count for string result formats
    _scan(path, checks, limit, batch_rows)
    engine = PandasExecutionEngine()
    computed = []
    for check in checks:
        evaluated = copy.deepcopy(check.config)
        if base.batch_id:
            evaluated.kwargs.update({"batch_id": base.batch_id})
        expectation = evaluated.to_domain_obj()
        runtime = {"result_format": result_format}
        dependencies = expectation.get_validation_dependencies(
            execution_engine=engine, runtime_configuration=copy.deepcopy(runtime)
        )
        values = _pandas_values(schema, check.column, check.values) if check.column else []
        metrics = {
            configuration.id: _metric(metric_name, check, rows, values)
            for metric_name, configuration in dependencies.metric_configurations.items()
        }
        computed.append((rank[check.position], expectation.metrics_validate(
            metrics=metrics, runtime_configuration=copy.deepcopy(runtime), execution_engine=engine
        )))  # fmt: skip

    # GX lists the expectations that raised first, then the others grouped by column (in GX's order).
    position_of = {id(config): rank[position] for position, config in enumerate(configs)}
    raised, ordered = [], list(computed)
    for run, group in runs:
        by_key = {_key(config): position_of[id(config)] for config in group}
        for item in run.results:
            if _exception_message(item.exception_info) is not None:
                raised.append(item)
            else:
                ordered.append((by_key[_key(item.expectation_config)], item))
    results = raised + [item for _, item in sorted(ordered, key=lambda pair: pair[0])]
    statistics = calc_validation_statistics(results)
    merged = ExpectationSuiteValidationResult(
        results=results,
        success=statistics.success,
        suite_name=base.suite_name,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=base.meta,
        batch_id=base.batch_id,
    )
    return merged, rows


def arrow_computed(suite: Any, path: str | Path) -> list[int]:
    """The positions in *suite* of the expectations :func:`validate_parquet` computes with Arrow for *path*."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    configs = suite.expectation_configurations
    return [position for position, config in enumerate(configs) if _arrow_check(position, config, schema)]


def _gx_order(configs: list[Any]) -> list[int]:
    """Where GX evaluates each expectation: grouped by column, the groups in the order they first appear."""
    groups: dict[str | None, list[int]] = {}
    for position, config in enumerate(configs):
        column = config.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else None, []).append(position)
    order = [position for group in groups.values() for position in group]
    return [order.index(position) for position in range(len(configs))]


def _key(config: Any) -> str:
    """An expectation configuration's type and kwargs (less the batch id), to find it in a GX result."""
    kwargs = {key: value for key, value in dict(config.kwargs).items() if key != "batch_id"}
    return json.dumps([config.type, kwargs, config.meta or {}], sort_keys=True, default=str)


def validate_snapshot(
    uri: str,
    suite: Any,
    name: str,
    result_format: str = "SUMMARY",
    storage: Storage | None = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[Any, int]:
    """
    :func:`validate_parquet` of the snapshot (or split: ``#train``...) at *uri*, local or ``s3://`` (downloaded).

    :raises FileNotFoundError: if there is no snapshot at *uri*.
    :raises ValueError: if it has no such split, or its file is not readable Parquet.
    """
    with snapshot_file(uri, storage=storage) as path:
        return validate_parquet(path, suite, name, result_format, batch_rows)
