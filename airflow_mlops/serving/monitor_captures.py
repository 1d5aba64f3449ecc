"""
Monitoring a window of captured traffic in bounded memory, without Airflow.

The window's rows are read from the capture files one record batch at a time, with only the columns the checks
need (the model's features, the prediction and, for live performance, the request id), filtered and typed as
:func:`~airflow_mlops.serving.capture.read_captures` filters and types them, and staged in two local Parquet
files, row for row: the inputs, and the capture's own columns (:func:`staged_window`). Each check then reads
them as the snapshot checks read a snapshot:

- feature drift one column of each side at a time (:func:`airflow_mlops.data.drift.compute_drift_parquet`:
  streaming PSI bins on the reference's edges, counts of categories in Arrow, KS and Wasserstein over the
  sorted values);
- prediction drift from the prediction column alone, class labels counted in Arrow
  (:func:`prediction_drift`);
- the data-quality suite with the Arrow validation engine, whose results are Great Expectations' own
  (:func:`airflow_mlops.data.parquet_validation.validate_parquet`);
- live performance joining the labels on ``_request_id`` one record batch of the window at a time
  (:func:`airflow_mlops.serving.monitor.live_performance`).

So the worker's memory grows with one column of the window (and the labels), not with the window; its disk
holds the window's projected columns while it is monitored. The results are those of the whole-frame
functions of :mod:`airflow_mlops.serving.monitor` on the same rows.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.drift import (
    SnapshotColumns,
    arrow_feature,
    compute_drift,
    compute_drift_parquet,
    drift_report,
)
from airflow_mlops.serving import monitor
from airflow_mlops.serving.capture import META_COLUMNS, PREDICTION, REQUEST_ID, window_tables

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from datetime import datetime

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_mlops.data.storage import Storage

__all__ = [
    "BATCH_ROWS",
    "JOIN_ROWS",
    "StagedWindow",
    "data_quality",
    "feature_drift",
    "live_performance",
    "prediction_drift",
    "reference_columns",
    "staged_window",
]

#: Rows per record batch read from a capture file or a staged file, and per row group of a staged file.
BATCH_ROWS = 1 << 17
#: Rows of the window joined with the labels at a time (each join hashes the labels once).
JOIN_ROWS = 1 << 20


@dataclass
class StagedWindow:
    """
    A window of captured rows staged as two local Parquet files, row for row.

    :param inputs: The input columns (what :func:`~airflow_mlops.serving.monitor.feature_columns` names).
    :param meta: The capture's own columns that were asked for (the prediction, the request id).
    :param rows: Rows in the window.
    :param bad_rows: Rows left out for a value not of its column's type.
    :param bad_columns: The columns those values were in.
    """

    inputs: Path
    meta: Path
    rows: int = 0
    bad_rows: int = 0
    bad_columns: list[str] = field(default_factory=list)

    def input_columns(self) -> SnapshotColumns:
        """The inputs as a read-only frame whose columns are read one at a time (for plots)."""
        import pyarrow.parquet as pq

        return SnapshotColumns(pq.ParquetFile(self.inputs))

    def column(self, name: str) -> pa.ChunkedArray:
        """One of the capture's own columns, e.g. the predictions."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.meta).read(columns=[name]).column(name)

    def batches(self, columns: Sequence[str], batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """The capture's own *columns*, a frame of at most *batch_rows* rows at a time."""
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(self.meta).iter_batches(batch_size=batch_rows, columns=list(columns)):
            yield batch.to_pandas()


class _StagedFile:
    """
    A Parquet file written one table at a time, with the schema the tables have together.

    The columns and types are those :func:`pyarrow.concat_tables` (``promote_options="permissive"``) gives the
    same tables: a column one table lacks is null there, a type is promoted. Small tables are gathered into row
    groups of about :data:`BATCH_ROWS` rows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._parts: list[Path] = []
        self._schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa

        if self._schema is not None and not table.schema.equals(self._schema):
            unified = pa.unify_schemas([self._schema, table.schema], promote_options="permissive")
            if unified.equals(self._schema):
                table = _conform(table, self._schema)
            else:  # a new type or column: a new part, the parts put together at the end
                self._close_part()
        if self._schema is None:
            self._schema = table.schema.remove_metadata()
            table = _conform(table, self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            return
        if self._writer is None:
            part = self.path.with_name(f"{self.path.stem}-{len(self._parts)}.parquet")
            self._parts.append(part)
            self._writer = pq.ParquetWriter(part, self._schema)
        if self._pending_rows:
            self._writer.write_table(
                pa.concat_tables(self._pending), row_group_size=max(self._pending_rows, 1)
            )
        self._pending, self._pending_rows = [], 0

    def _close_part(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._schema = None

    def close(self) -> None:
        """Write what is left, and put the parts together in :attr:`path` (nothing when no table came)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._close_part()
        if len(self._parts) == 1:
            os.replace(self._parts[0], self.path)
        elif self._parts:
            files = [pq.ParquetFile(part) for part in self._parts]
            schema = pa.unify_schemas([f.schema_arrow for f in files], promote_options="permissive")
            with pq.ParquetWriter(self.path, schema) as writer:
                for parquet in files:
                    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                        writer.write_table(_conform(pa.Table.from_batches([batch]), schema))
            for part in self._parts:
                part.unlink()
        self._parts = []


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """*table* with the columns and types of *schema* (null where it lacks a column)."""
    import pyarrow as pa

    arrays = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


@contextmanager
def staged_window(
    root: str,
    model_name: str,
    start: datetime,
    end: datetime,
    columns: Sequence[str],
    storage: Storage | None = None,
    meta: Sequence[str] = (PREDICTION,),
    version: str | None = None,
    types: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[StagedWindow]:
    """
    The rows :func:`~airflow_mlops.serving.capture.read_captures` returns, staged in a temporary folder.

    The arguments are :func:`~airflow_mlops.serving.capture.read_captures`'; capture files are read
    *batch_rows* rows at a time. The files are deleted on leaving the context.
    """
    with tempfile.TemporaryDirectory(prefix="mlops-monitor-") as tmp:
        folder = Path(tmp)
        window = StagedWindow(inputs=folder / "inputs.parquet", meta=folder / "meta.parquet")
        inputs, own = _StagedFile(window.inputs), _StagedFile(window.meta)
        bad_columns: set[str] = set()
        for table, bad, found in window_tables(
            root, model_name, start, end, columns, storage, meta, version, types, batch_rows=batch_rows
        ):
            window.rows += table.num_rows
            window.bad_rows += bad
            bad_columns |= found
            inputs.write(table.select([c for c in table.column_names if c not in META_COLUMNS]))
            own.write(table.select([c for c in table.column_names if c in meta]))
            del table
        inputs.close()
        own.close()
        window.bad_columns = sorted(bad_columns)
        yield window


def reference_columns(reference: pq.ParquetFile) -> list[str]:
    """The columns pandas reads from a snapshot's Parquet file (not a stored index)."""
    index = (reference.schema_arrow.pandas_metadata or {}).get("index_columns", [])
    stored = {name for name in index if isinstance(name, str)}
    return [name for name in reference.schema_arrow.names if name not in stored]


def feature_drift(
    reference: pq.ParquetFile,
    window: StagedWindow,
    features: Sequence[str],
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """
    :func:`~airflow_mlops.data.drift.compute_drift` of the window's inputs against the training snapshot.

    :param reference: The training snapshot's Parquet file.
    :param features: The model's features (its columns that are not the label or excluded).
    """
    import pyarrow.parquet as pq

    excluded = [c for c in reference.schema_arrow.names if c not in set(features)]
    try:
        return compute_drift_parquet(
            reference, pq.ParquetFile(window.inputs), thresholds, feature_thresholds, exclude_columns=excluded
        )
    finally:
        _release_arrow_memory()


def prediction_drift(
    reference: Sequence[Any], window: StagedWindow, thresholds: dict[str, float] | None = None
) -> dict[str, Any]:
    """
    Drift of the served predictions from *reference* (the champion's on its holdout), as the whole frame has it.

    That is :func:`~airflow_mlops.data.drift.compute_drift` of :func:`~airflow_mlops.serving.monitor.
    prediction_frames`: numbers as floats, and as categories when both sides together have at most 20 distinct
    values (class labels). The served predictions stay in Arrow: numbers as one float column, class labels
    counted; a mix of types the capture does not write (numbers served, text in the reference) is compared
    through pandas.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    current = window.column(PREDICTION)
    ref = monitor.as_predictions(reference)
    numbers = _is_numeric(current) and pd.api.types.is_numeric_dtype(ref)
    if not (numbers or _is_text(current)):
        ref_frame, cur_frame = monitor.prediction_frames(reference, current.to_pandas())
        return compute_drift(ref_frame, cur_frame, thresholds=thresholds)
    if numbers:  # 1 and 1.0 are the same class
        ref = ref.astype(float)
    classes = _distinct(current, monitor.MAX_CLASSES, numbers)
    if classes is not None and len(set(ref.dropna().unique()) | set(classes)) > monitor.MAX_CLASSES:
        classes = None
    if numbers and classes is None:
        ref_column, cur_column = pa.array(ref.to_numpy(dtype=float, na_value=np.nan)), _floats(current)
    else:  # as categories: the text of each value, as pandas writes it
        ref_column = pa.array([None if pd.isna(v) else str(v) for v in ref], type=pa.string())
        cur_column = current if classes is None or not numbers else _class_labels(current, classes)
    feature = arrow_feature(monitor.PREDICTION_FEATURE, ref_column, cur_column, thresholds=thresholds)
    return drift_report({monitor.PREDICTION_FEATURE: feature}, [], [])


def _is_numeric(column: pa.ChunkedArray) -> bool:
    import pyarrow as pa

    kind = column.type
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )  # fmt: skip


def _is_text(column: pa.ChunkedArray) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def _floats(column: pa.ChunkedArray) -> pa.Array:
    """A numeric column as float64, NaN as null (missing, as pandas has it)."""
    import numpy as np
    import pyarrow as pa

    values = np.asarray(column.cast(pa.float64()).to_numpy(), dtype=float)  # nulls become NaN
    return pa.array(values, mask=np.isnan(values))


def _distinct(column: pa.ChunkedArray, limit: int, numbers: bool) -> list[Any] | None:
    """The distinct non-missing values of *column* (floats when *numbers*), or None beyond *limit* of them."""
    import pyarrow.compute as pc

    found: set[Any] = set()
    step = 1 << 20
    for offset in range(0, len(column), step):
        part = column.slice(offset, step)
        part = _floats(part) if numbers else part
        found.update(pc.unique(part.drop_null()).to_pylist())
        if len(found) > limit:
            return None
    return sorted(found, key=repr)


def _class_labels(column: pa.ChunkedArray, classes: list[float]) -> pa.DictionaryArray:
    """Served numeric predictions of a few distinct values as text, as pandas writes each value."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    labels = pd.Series(classes, dtype=float).astype("string")
    indices = pc.index_in(_floats(column), value_set=pa.array(classes, type=pa.float64()))
    return pa.DictionaryArray.from_arrays(indices, pa.array(labels, type=pa.string()))


def data_quality(window: StagedWindow, expectations: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """:func:`~airflow_mlops.serving.monitor.run_quality` of the window's inputs, by the Arrow validation engine."""
    from airflow_mlops.data.expectations import build_suite, summarize
    from airflow_mlops.data.parquet_validation import validate_parquet

    suite = build_suite(expectations, "expectations", f"{name}-captures")
    try:
        # Batches of the staging's row groups: the window's 20-odd columns a batch at a time.
        result, _ = validate_parquet(window.inputs, suite, f"{name}-captures", batch_rows=BATCH_ROWS)
    finally:
        _release_arrow_memory()
    return summarize(result)


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's pool keeps after a stage back to the system, so the next stage starts low."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def live_performance(
    window: StagedWindow,
    labels: pd.DataFrame,
    label_column: str,
    metric: str,
    baseline: float | None,
    max_drop: float,
    min_labels: int,
) -> dict[str, Any]:
    """:func:`~airflow_mlops.serving.monitor.live_performance` of the window, joined a record batch at a time."""
    return monitor.live_performance(
        window.batches([REQUEST_ID, PREDICTION], JOIN_ROWS), labels, label_column, metric, baseline, max_drop,
        min_labels,
    )  # fmt: skip
