"""
Drift of data that lives in a SQL database, computed in the database: only summaries reach the worker.

:func:`compute_drift_sql` returns the report of :func:`airflow_mlops.data.drift.compute_drift` for a reference
and a current table or query of one database (any SQLAlchemy dialect with window functions: PostgreSQL,
MySQL 8, SQLite 3.25+, ...). Per source it asks the database for

- the row count and each column's non-null count (one query; gives the null rates),
- whether each numeric column has more than ``quantiles`` distinct values: the first rows settle the columns
  with more, a ``GROUP BY`` that stops at ``quantiles`` + 1 groups counts the others (no column is sorted),
- the order statistics each numeric column needs (one sorted pass per column): those of the reference's PSI
  bin edges and, for a column with more than ``quantiles`` distinct values, ``quantiles`` evenly spaced ones,
- each numeric column's counts in the reference's PSI bins (one query for all columns),
- each categorical column's category counts, and each numeric column's value counts when it has at most
  ``quantiles`` distinct values (one ``GROUP BY`` per column),

and computes the metrics from those summaries. PSI, the categorical distances (L-infinity, Jensen-Shannon) and
the null rates are exactly those of the in-memory path; so are the Kolmogorov-Smirnov statistic and the
Wasserstein distance of a column with few distinct values (counts, codes, ratings). For other numeric columns
the Kolmogorov-Smirnov statistic is within ``1 / quantiles`` (CDFs read off the order statistics) and the
Wasserstein distance is the integral of the distance between the two empirical quantile functions at
``quantiles`` midpoints (within 0.1% of the reference's standard deviation in the tests). What reaches the
worker does not grow with the rows. A column's kind (numeric or categorical) is read from up to 100 rows of
each source.

Either side may instead be a pandas DataFrame (a small sample held by the worker, such as a model's predictions
on its holdout): its summaries are computed the same way in memory, so it compares with a table of any size.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.drift import (
    categorical_drift_from_counts,
    drift_report,
    feature_result,
    psi_edges,
    psi_from_counts,
    select_features,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from sqlalchemy.engine import Connection, Engine

#: Order statistics per numeric column and source for the KS and Wasserstein estimates.
DEFAULT_QUANTILES = 1000
#: Rows whose distinct values settle which numeric columns have many (see ``_Source.distinct_up_to``).
SCREEN_ROWS = 100_000
#: Most categories of one column a comparison fetches (a column with more is not categorical data).
MAX_CATEGORIES = 10_000
_PROBE_ROWS = 100


@dataclass(frozen=True)
class SqlData:
    """A table (``schema.table`` allowed) or a ``SELECT`` query of a SQL database."""

    table: str | None = None
    query: str | None = None

    def __post_init__(self) -> None:
        if bool(self.table) == bool(self.query):
            raise ValueError(f"Give a table or a query, not both or neither (table={self.table!r})")

    def describe(self) -> str:
        return f"table {self.table}" if self.table else f"query {self.query}"

    def sql(self, engine: Engine | Connection) -> str:
        """The ``SELECT`` this source stands for, to be used as a subquery."""
        if self.table:
            quote = engine.dialect.identifier_preparer.quote
            return "SELECT * FROM " + ".".join(quote(part) for part in self.table.split("."))
        return str(self.query).strip().rstrip(";")


def compute_drift_sql(
    engine: Engine,
    reference: SqlData | pd.DataFrame,
    current: SqlData | pd.DataFrame,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    bins: int = 10,
    quantiles: int = DEFAULT_QUANTILES,
    transfer: dict[str, int] | None = None,
) -> dict[str, Any]:
    """
    :func:`~airflow_mlops.data.drift.compute_drift` of two tables or queries, computed in the database.

    :param transfer: A dict this adds to: ``rows_sampled`` (rows read to tell numbers from categories, at
        most 100 per source) and ``summary_rows`` (result rows of the summary queries), what reached the worker.
    """
    with engine.connect() as conn:
        return drift_from_summaries(
            _source(conn, reference), _source(conn, current), thresholds, feature_thresholds, columns,
            exclude_columns, bins, quantiles, transfer,
        )  # fmt: skip


def drift_from_summaries(
    ref: Any,
    cur: Any,
    thresholds: dict[str, float] | None = None,
    feature_thresholds: dict[str, dict[str, float]] | None = None,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    bins: int = 10,
    quantiles: int = DEFAULT_QUANTILES,
    transfer: dict[str, int] | None = None,
) -> dict[str, Any]:
    """
    The drift report of two sources that answer for their summaries (a SQL table, a frame, a Spark table).

    A source has ``columns``, ``total``, ``sampled`` and ``fetched`` and answers ``is_categorical``,
    ``non_null_counts``, ``distinct_up_to``, ``null_rate``, ``quantiles``, ``bin_counts``, ``value_counts``
    and ``categories`` as :class:`_Source` does; the statistics are computed here, the same for every engine.
    """
    wanted, missing, added = select_features(ref.columns, cur.columns, columns, exclude_columns)
    compared = [c for c in wanted if c not in missing]
    categorical = {c: ref.is_categorical(c) or cur.is_categorical(c) for c in compared}
    numeric = [c for c in compared if not categorical[c]]
    ref_counts, cur_counts = ref.non_null_counts(compared), cur.non_null_counts(compared)
    # Few distinct values (counts, codes, ratings): KS and Wasserstein exact, from the values' counts.
    ref_distinct, cur_distinct = ref.distinct_up_to(numeric, quantiles), cur.distinct_up_to(numeric, quantiles)
    discrete = {c for c in numeric if max(ref_distinct[c], cur_distinct[c]) <= quantiles}
    ref_quantiles = _quantiles_of(
        ref, {c: (ref_counts[c], 0 if c in discrete else quantiles, bins) for c in numeric}
    )
    cur_quantiles = _quantiles_of(
        cur, {c: (cur_counts[c], quantiles, 0) for c in numeric if c not in discrete}
    )
    edges = {c: psi_edges(ref_quantiles[c].at_bins) for c in numeric if ref_counts[c]}
    ref_bins, cur_bins = ref.bin_counts(edges), cur.bin_counts(edges)
    features: dict[str, Any] = {}
    for column in compared:
        rows = {"reference": ref_counts[column], "current": cur_counts[column]}
        null_rates = {
            "reference": ref.null_rate(rows["reference"]),
            "current": cur.null_rate(rows["current"]),
        }
        metrics: dict[str, float] = {}
        if rows["reference"] and rows["current"]:
            if categorical[column]:
                metrics = categorical_drift_from_counts(ref.categories(column), cur.categories(column))
            else:
                metrics = {
                    "psi": psi_from_counts(ref_bins[column], cur_bins[column]),
                    **(
                        _exact_ks_wasserstein(ref.value_counts(column), cur.value_counts(column))
                        if column in discrete
                        else _ks_wasserstein(ref_quantiles[column], cur_quantiles[column])
                    ),
                }
        features[column] = feature_result(
            column, categorical[column], metrics, rows, null_rates, thresholds, feature_thresholds
        )
    if transfer is not None:
        for source in (ref, cur):
            transfer["rows_sampled"] = transfer.get("rows_sampled", 0) + source.sampled
            transfer["summary_rows"] = transfer.get("summary_rows", 0) + source.fetched
    return drift_report(features, missing, added)


def _source(conn: Connection, data: Any) -> Any:
    return _Source(conn, data) if isinstance(data, SqlData) else _FrameSource(data)


@dataclass
class Quantiles:
    """The quantiles of one numeric column that the PSI edges, KS and Wasserstein need."""

    at_bins: Any  # the values at probabilities 0, 1/bins, ..., 1 (the PSI edges)
    steps: Any  # the empirical (step) quantile function at the midpoints (i + 1/2) / q
    rows: int


def _quantiles_of(source: Any, wanted: dict[str, tuple[int, int, int]]) -> dict[str, Quantiles]:
    """Each column's quantiles (``{column: (rows, quantiles, bins)}``), in one pass where the source can."""
    many = getattr(source, "quantiles_of", None)
    if many is not None:
        return dict(many(wanted))
    return {column: source.quantiles(column, *args) for column, args in wanted.items()}


def order_statistic_ranks(rows: int, quantiles: int, bins: int) -> list[int]:
    """The 1-based ranks of the sorted values :func:`quantiles_from_order_statistics` needs."""
    import numpy as np

    at_bins = np.linspace(0, 1, bins + 1)
    midpoints = (np.arange(quantiles) + 0.5) / quantiles
    positions = at_bins * (rows - 1) if bins else np.array([], dtype=float)
    lower = np.floor(positions).astype(int)
    step_ranks = np.clip(np.ceil(midpoints * rows).astype(int) - 1, 0, rows - 1)  # 0-based
    return sorted({int(r) + 1 for r in np.concatenate([lower, np.minimum(lower + 1, rows - 1), step_ranks])})


def quantiles_from_order_statistics(
    rows: int, quantiles: int, bins: int, fetch: Callable[[list[int]], dict[int, Any]]
) -> Quantiles:
    """
    Quantiles as :func:`numpy.quantile` (linear) computes them, from the order statistics they need.

    :param rows: The column's non-null values.
    :param quantiles: Points of the step quantile function (KS, Wasserstein); 0 for none.
    :param bins: PSI bins, whose edges are the linear quantiles at ``0, 1/bins, ..., 1``; 0 for none.
    :param fetch: Called once with the 1-based ranks needed; returns ``{rank: value}`` of the sorted values.
    """
    import numpy as np

    at_bins = np.linspace(0, 1, bins + 1)
    midpoints = (np.arange(quantiles) + 0.5) / quantiles
    step_ranks = np.clip(np.ceil(midpoints * rows).astype(int) - 1, 0, rows - 1)  # 0-based
    values = fetch(order_statistic_ranks(rows, quantiles, bins))
    ranks = np.array(sorted(values)) - 1  # 0-based, as numpy counts
    ordered = np.array([float(values[r + 1]) for r in ranks])

    def at(probabilities: Any) -> Any:
        h = probabilities * (rows - 1)
        lo = np.floor(h).astype(int)
        hi = np.minimum(lo + 1, rows - 1)
        x_lo = ordered[np.searchsorted(ranks, lo)]
        x_hi = ordered[np.searchsorted(ranks, hi)]
        return x_lo + (h - lo) * (x_hi - x_lo)

    steps = ordered[np.searchsorted(ranks, step_ranks)]
    return Quantiles(at(at_bins), steps, rows)


class _Source:
    """One table or query of an open connection, asked only for summaries."""

    def __init__(self, conn: Connection, data: SqlData) -> None:
        import sqlalchemy as sa

        self.conn = conn
        self.data = data
        self.from_ = sa.text(f"({data.sql(conn)}) AS mlops_source")
        try:
            probe: Any = conn.execute(
                sa.select(sa.literal_column("*")).select_from(self.from_).limit(_PROBE_ROWS)
            )
        except sa.exc.DBAPIError as err:
            raise ValueError(f"Cannot read {data.describe()}: {err.orig}") from err
        self.columns = [str(c) for c in probe.keys()]
        self._sample = probe.fetchall()
        self.sampled = len(self._sample)
        self.fetched = 0
        self.total = 0

    def _rows(self, statement: Any) -> list[Any]:
        """All result rows of *statement*, counted (what reached the worker)."""
        rows = self.conn.execute(statement).all()
        self.fetched += len(rows)
        return list(rows)

    def _column(self, name: str) -> Any:
        import sqlalchemy as sa

        return sa.column(name, is_literal=False)

    def is_categorical(self, column: str) -> bool:
        """Numbers (not booleans) are numeric, anything else categorical; an all-null probe asks for one value."""
        import sqlalchemy as sa

        index = self.columns.index(column)
        value = next((row[index] for row in self._sample if row[index] is not None), None)
        if value is None:
            col = self._column(column)
            found = self._rows(sa.select(col).select_from(self.from_).where(col.is_not(None)).limit(1))
            value = found[0][0] if found else None
        if value is None:
            return False
        return isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal)

    def non_null_counts(self, columns: list[str]) -> dict[str, int]:
        """Each column's non-null count (one pass, nothing sorted); the row count in ``total``."""
        import sqlalchemy as sa

        counts = [sa.func.count(self._column(c)) for c in columns]
        (row,) = self._rows(sa.select(sa.func.count(), *counts).select_from(self.from_))
        self.total = int(row[0])
        return dict(zip(columns, map(int, row[1:]), strict=True))

    def distinct_up_to(self, columns: list[str], limit: int) -> dict[str, int]:
        """
        Each column's number of distinct non-null values where it is at most *limit*, else a number above it.

        The first :data:`SCREEN_ROWS` rows settle every column with more than *limit* values there (the whole
        table cannot have fewer); each other column is counted with a ``GROUP BY`` that stops at *limit* + 1
        groups: for a column of few values, one pass with a small hash table. Nothing sorts a whole column.
        """
        import sqlalchemy as sa

        if not columns:
            return {}
        head = sa.select(*(self._column(c) for c in columns)).select_from(self.from_).limit(SCREEN_ROWS).subquery()
        (row,) = self._rows(sa.select(*(sa.func.count(head.c[c].distinct()) for c in columns)))
        out = dict(zip(columns, map(int, row), strict=True))
        for column in [c for c in columns if out[c] <= limit]:
            col = self._column(column)
            groups = (
                sa.select(col).select_from(self.from_).where(col.is_not(None)).group_by(col).limit(limit + 1)
            ).subquery()
            (counted,) = self._rows(sa.select(sa.func.count()).select_from(groups))
            out[column] = int(counted[0])
        return out

    def null_rate(self, non_null: int) -> float:
        return (self.total - non_null) / self.total if self.total else 0.0

    def quantiles(self, column: str, rows: int, quantiles: int, bins: int) -> Quantiles:
        """Quantiles as :func:`numpy.quantile` (linear) computes them, from the order statistics they need."""
        import numpy as np
        import sqlalchemy as sa

        at_bins = np.linspace(0, 1, bins + 1)
        if not rows:
            return Quantiles(np.array([]), np.array([]), 0)
        midpoints = (np.arange(quantiles) + 0.5) / quantiles
        if self.conn.dialect.name == "postgresql":
            return self._postgres_quantiles(column, rows, at_bins if bins else None, midpoints)
        col = self._column(column)

        def fetch(needed: list[int]) -> dict[int, Any]:
            ranked = (
                sa.select(col.label("value"), sa.func.row_number().over(order_by=col).label("mlops_rank"))
                .select_from(self.from_)
                .where(col.is_not(None))
                .subquery("ranked")
            )
            return dict(
                self._rows(
                    sa.select(ranked.c.mlops_rank, ranked.c.value).where(ranked.c.mlops_rank.in_(needed))
                )
            )

        return quantiles_from_order_statistics(rows, quantiles, bins, fetch)

    def _postgres_quantiles(self, column: str, rows: int, at_bins: Any, midpoints: Any) -> Quantiles:
        """The same quantiles from PostgreSQL's ordered-set aggregates, in one sorted pass and one row."""
        import numpy as np
        import sqlalchemy as sa
        from sqlalchemy.dialects.postgresql import ARRAY

        col = self._column(column)

        def fractions(values: Any) -> Any:
            return sa.literal([float(v) for v in values], ARRAY(sa.Float))

        # percentile_cont interpolates as numpy's "linear" quantiles; percentile_disc(u) is x_(ceil(u n)).
        cont = sa.func.percentile_cont(fractions([] if at_bins is None else at_bins)).within_group(col)
        disc = sa.func.percentile_disc(fractions(midpoints)).within_group(col)
        ((at, steps),) = self._rows(sa.select(cont, disc).select_from(self.from_))
        return Quantiles(np.array(at or [], dtype=float), np.array(steps or [], dtype=float), rows)

    def bin_counts(self, edges: dict[str, Any]) -> dict[str, list[int]]:
        """Each column's counts in its PSI bins ``[e_i, e_i+1)`` (outer bins open), one query for all columns."""
        import sqlalchemy as sa

        if not edges:
            return {}
        sums: list[Any] = []
        layout: list[tuple[str, int]] = []
        for column, column_edges in edges.items():
            col = self._column(column)
            inner = [float(e) for e in column_edges[1:-1]]
            for i in range(len(inner) + 1):
                conditions = []
                if i > 0:
                    conditions.append(col >= inner[i - 1])
                if i < len(inner):
                    conditions.append(col < inner[i])
                if conditions:
                    sums.append(sa.func.sum(sa.case((sa.and_(*conditions), 1), else_=0)))
                else:  # one bin (a constant reference): every non-null value
                    sums.append(sa.func.count(col))
            layout.append((column, len(inner) + 1))
        (row,) = self._rows(sa.select(*sums).select_from(self.from_))
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
        import sqlalchemy as sa

        col = self._column(column)
        rows = self._rows(
            sa.select(col, sa.func.count())
            .select_from(self.from_)
            .where(col.is_not(None))
            .group_by(col)
            .limit(MAX_CATEGORIES + 1)
        )
        if len(rows) > MAX_CATEGORIES:
            raise ValueError(
                f"Column {column!r} of {self.data.describe()} has more than {MAX_CATEGORIES} distinct values: "
                "too many to compare as categories; exclude it (exclude_columns) or compare it in memory"
            )
        return [(value, int(count)) for value, count in rows]


class _FrameSource:
    """A pandas DataFrame held by the worker, asked for the same summaries as :class:`_Source`."""

    sampled = 0
    fetched = 0

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.columns = [str(c) for c in frame.columns]
        self.total = len(frame)

    def is_categorical(self, column: str) -> bool:
        from airflow_mlops.data.drift import is_categorical

        return is_categorical(self.frame[column])

    def non_null_counts(self, columns: list[str]) -> dict[str, int]:
        return {c: int(self.frame[c].notna().sum()) for c in columns}

    def distinct_up_to(self, columns: list[str], limit: int) -> dict[str, int]:
        return {c: int(self.frame[c].nunique(dropna=True)) for c in columns}

    def null_rate(self, non_null: int) -> float:
        return (self.total - non_null) / self.total if self.total else 0.0

    def _sorted(self, column: str) -> Any:
        import numpy as np

        return np.sort(self.frame[column].dropna().to_numpy(dtype=float))

    def quantiles(self, column: str, rows: int, quantiles: int, bins: int) -> Quantiles:
        import numpy as np

        values = self._sorted(column)
        if not rows:
            return Quantiles(np.array([]), np.array([]), 0)
        at_bins = np.quantile(values, np.linspace(0, 1, bins + 1)) if bins else np.array([])
        midpoints = (np.arange(quantiles) + 0.5) / quantiles
        steps = values[np.clip(np.ceil(midpoints * rows).astype(int) - 1, 0, rows - 1)]
        return Quantiles(at_bins, steps, rows)

    def bin_counts(self, edges: dict[str, Any]) -> dict[str, list[int]]:
        import numpy as np

        return {
            column: [int(n) for n in np.histogram(self._sorted(column), column_edges)[0]]
            for column, column_edges in edges.items()
        }

    def value_counts(self, column: str) -> dict[float, int]:
        counts = self.frame[column].dropna().value_counts()
        return {float(value): int(count) for value, count in counts.items()}

    def categories(self, column: str) -> dict[str, int]:
        counts = self.frame[column].dropna().astype(str).value_counts()
        return {str(value): int(count) for value, count in counts.items()}


def _exact_ks_wasserstein(reference: dict[float, int], current: dict[float, int]) -> dict[str, float]:
    """KS statistic (asymptotic p-value) and Wasserstein-1 distance of two ``{value: count}`` tallies, exactly."""
    import numpy as np
    from scipy.stats import kstwo

    values = np.array(sorted(set(reference) | set(current)))
    ref = np.array([reference.get(v, 0) for v in values], dtype=float)
    cur = np.array([current.get(v, 0) for v in values], dtype=float)
    ref_cdf, cur_cdf = np.cumsum(ref) / ref.sum(), np.cumsum(cur) / cur.sum()
    ks = float(np.max(np.abs(ref_cdf - cur_cdf)))
    wasserstein = float(np.sum(np.abs(ref_cdf - cur_cdf)[:-1] * np.diff(values)))
    m, n = sorted([ref.sum(), cur.sum()], reverse=True)
    pvalue = float(kstwo.sf(ks, round(m * n / (m + n))))
    return {"ks": ks, "ks_pvalue": min(max(pvalue, 0.0), 1.0), "wasserstein": wasserstein}


def _ks_wasserstein(reference: Quantiles, current: Quantiles) -> dict[str, float]:
    """KS statistic (and its asymptotic p-value) and Wasserstein-1 distance from two quantile grids."""
    import numpy as np
    from scipy.stats import kstwo

    points = np.union1d(reference.steps, current.steps)
    ks = float(
        np.max(
            np.abs(
                np.searchsorted(reference.steps, points, side="right") / len(reference.steps)
                - np.searchsorted(current.steps, points, side="right") / len(current.steps)
            )
        )
    )
    # W1 is the integral over (0, 1) of the distance between the two step quantile functions (midpoint rule).
    wasserstein = float(np.mean(np.abs(reference.steps - current.steps)))
    m, n = sorted([float(reference.rows), float(current.rows)], reverse=True)
    pvalue = float(kstwo.sf(ks, round(m * n / (m + n))))
    return {"ks": ks, "ks_pvalue": min(max(pvalue, 0.0), 1.0), "wasserstein": wasserstein}
