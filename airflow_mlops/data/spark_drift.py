"""
Drift of data that Spark reads, computed by Spark SQL aggregates: only summaries reach the worker.

:func:`compute_drift_spark` returns the report of :func:`airflow_mlops.data.drift.compute_drift` for a reference
and a current Spark table, Spark SQL query or data path (Parquet, Delta, ...). It asks Spark for the same
summaries as :mod:`airflow_mlops.data.sql_drift` asks a database, and computes the statistics with the same code
(:func:`~airflow_mlops.data.sql_drift.drift_from_summaries`):

- the row count and each column's non-null and distinct counts (one aggregate),
- the order statistics each numeric column needs (``percentile_approx`` at the needed ranks, one aggregate per
  column; exact for a column of fewer than :data:`ACCURACY` values, within ``rows / ACCURACY`` ranks above),
- each numeric column's counts in the reference's PSI bins (one aggregate for all columns),
- category counts and the value counts of numbers with few distinct values (one ``GROUP BY`` per column).

A column's kind comes from the Spark schema: numbers (not booleans) are numeric, anything else categorical.
What is exact and what is within a tolerance is as for :mod:`~airflow_mlops.data.sql_drift`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.sql_drift import (
    DEFAULT_QUANTILES,
    MAX_CATEGORIES,
    Quantiles,
    drift_from_summaries,
    order_statistic_ranks,
    quantiles_from_order_statistics,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import DataFrame, SparkSession

#: ``percentile_approx``'s accuracy: order statistics are exact below this many values, within ``n / ACCURACY``
#: ranks above (the sketch's memory grows with it, not with the rows).
ACCURACY = 1_000_000


@dataclass(frozen=True)
class SparkData:
    """
    Data Spark reads: a table of its catalog, a Spark SQL ``SELECT``, or a path with its format.

    :param table: A catalog table (``db.table``), or a path table such as ``parquet.`/data/events```.
    :param query: A Spark SQL ``SELECT``, instead of ``table``.
    :param path: A file or folder Spark reads with ``format`` (``s3a://``, ``hdfs://``, a local path).
    :param format: The format of ``path``: ``parquet`` (default), ``delta``, ``orc``, ``csv``, ``json``...
    """

    table: str | None = None
    query: str | None = None
    path: str | None = None
    format: str = "parquet"

    def __post_init__(self) -> None:
        if sum(bool(v) for v in (self.table, self.query, self.path)) != 1:
            raise ValueError(
                f"Give exactly one of a table, a query or a path (table={self.table!r}, path={self.path!r})"
            )

    def describe(self) -> str:
        if self.table:
            return f"table {self.table}"
        if self.query:
            return f"query {self.query}"
        return f"{self.format} path {self.path}"

    def frame(self, session: SparkSession) -> DataFrame:
        """The Spark DataFrame this stands for (lazy: nothing is read yet)."""
        if self.table:
            return session.sql(f"SELECT * FROM {self.table}")
        if self.query:
            return session.sql(str(self.query).strip().rstrip(";"))
        return session.read.format(self.format).load(self.path)


def compute_drift_spark(
    session: SparkSession,
    reference: SparkData,
    current: SparkData,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    bins: int = 10,
    quantiles: int = DEFAULT_QUANTILES,
    transfer: dict[str, int] | None = None,
) -> dict[str, Any]:
    """
    :func:`~airflow_mlops.data.drift.compute_drift` of two Spark sources, computed by Spark.

    :param session: The Spark session (:meth:`airflow_mlops.hooks.spark.SparkHook.get_conn`).
    :param transfer: A dict this adds to: ``rows_sampled`` (always 0: kinds come from the schema) and
        ``summary_rows`` (result rows of the aggregates), what reached the worker.
    :raises ValueError: A source Spark cannot read (naming it), or a column of too many categories.
    """
    return drift_from_summaries(
        _SparkSource(session, reference), _SparkSource(session, current), thresholds, feature_thresholds,
        columns, exclude_columns, bins, quantiles, transfer,
    )  # fmt: skip


class _SparkSource:
    """One Spark source, asked only for summaries (the interface of ``sql_drift._Source``)."""

    sampled = 0

    def __init__(self, session: SparkSession, data: SparkData) -> None:
        from pyspark.errors import PySparkException
        from pyspark.sql import types

        self.data = data
        try:
            self.frame = data.frame(session)
            schema = self.frame.schema
        except PySparkException as err:
            raise ValueError(f"Cannot read {data.describe()}: {_first_line(err)}") from err
        self.columns = [field.name for field in schema.fields]
        self._numeric = {
            field.name
            for field in schema.fields
            if isinstance(field.dataType, types.NumericType)
            and not isinstance(field.dataType, types.BooleanType)
        }
        self.fetched = 0
        self.total = 0
        self._distinct: dict[str, int] = {}

    def _collect(self, frame: DataFrame) -> list[Any]:
        rows = frame.collect()
        self.fetched += len(rows)
        return rows

    def is_categorical(self, column: str) -> bool:
        return column not in self._numeric

    def non_null_counts(self, columns: list[str]) -> dict[str, int]:
        from pyspark.sql import functions as F  # noqa: N812

        (row,) = self._collect(
            self.frame.agg(
                F.count(F.lit(1)),
                *(F.count(F.col(c)) for c in columns),
                *(F.count_distinct(F.col(c)) for c in columns),
            )
        )
        self.total = int(row[0])
        self._distinct = dict(zip(columns, map(int, row[1 + len(columns) :]), strict=True))
        return dict(zip(columns, map(int, row[1 : 1 + len(columns)]), strict=True))

    def distinct_up_to(self, columns: list[str], limit: int) -> dict[str, int]:
        """Each column's distinct non-null values (counted with the non-null counts, in the same aggregate)."""
        return {c: self._distinct[c] for c in columns}

    def null_rate(self, non_null: int) -> float:
        return (self.total - non_null) / self.total if self.total else 0.0

    def quantiles_of(self, wanted: dict[str, tuple[int, int, int]]) -> dict[str, Quantiles]:
        """Each column's quantiles (``{column: (rows, quantiles, bins)}``), one aggregate per column."""
        import numpy as np
        from pyspark.sql import functions as F  # noqa: N812

        found = {
            c: Quantiles(np.array([]), np.array([]), 0) for c, (rows, _, _) in wanted.items() if not rows
        }
        ranks = {c: order_statistic_ranks(*args) for c, args in wanted.items() if c not in found}
        if not ranks:
            return found
        # The value of 1-based rank r is the smallest with at least r values at or below it: ask at
        # (r - 1/2) / rows, away from the rounding of r / rows. One column per job: a sketch of ACCURACY holds up
        # to that many values, so several at once in one task would need several times the executor's memory.
        for column, needed in ranks.items():
            (row,) = self._collect(
                self.frame.agg(
                    F.percentile_approx(
                        F.col(column).cast("double"), [(r - 0.5) / wanted[column][0] for r in needed], ACCURACY
                    )
                )
            )
            by_rank: dict[int, Any] = dict(zip(needed, row[0], strict=True))
            found[column] = quantiles_from_order_statistics(*wanted[column], _known(by_rank))
        return found

    def bin_counts(self, edges: dict[str, Any]) -> dict[str, list[int]]:
        """Each column's counts in its PSI bins ``[e_i, e_i+1)`` (outer bins open), one aggregate for all."""
        from pyspark.sql import functions as F  # noqa: N812

        if not edges:
            return {}
        sums: list[Any] = []
        layout: list[tuple[str, int]] = []
        for column, column_edges in edges.items():
            col = F.col(column)
            inner = [float(e) for e in column_edges[1:-1]]
            for i in range(len(inner) + 1):
                condition = col.isNotNull()
                if i > 0:
                    condition = condition & (col >= inner[i - 1])
                if i < len(inner):
                    condition = condition & (col < inner[i])
                sums.append(F.sum(F.when(condition, 1).otherwise(0)))
            layout.append((column, len(inner) + 1))
        (row,) = self._collect(self.frame.agg(*sums))
        counts, start = {}, 0
        for column, size in layout:
            counts[column] = [int(value or 0) for value in row[start : start + size]]
            start += size
        return counts

    def value_counts(self, column: str) -> dict[float, int]:
        return {float(value): count for value, count in self._counts(column)}

    def categories(self, column: str) -> dict[str, int]:
        return {str(value): count for value, count in self._counts(column)}

    def _counts(self, column: str) -> list[tuple[Any, int]]:
        from pyspark.sql import functions as F  # noqa: N812

        rows = self._collect(
            self.frame.where(F.col(column).isNotNull()).groupBy(column).count().limit(MAX_CATEGORIES + 1)
        )
        if len(rows) > MAX_CATEGORIES:
            raise ValueError(
                f"Column {column!r} of {self.data.describe()} has more than {MAX_CATEGORIES} distinct values: "
                "too many to compare as categories; exclude it (exclude_columns)"
            )
        return [(row[0], int(row[1])) for row in rows]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:500]


def _known(values: dict[int, Any]) -> Callable[[list[int]], dict[int, Any]]:
    """A ``fetch`` for :func:`quantiles_from_order_statistics` over order statistics already collected."""
    return lambda _ranks: values
