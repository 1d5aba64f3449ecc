"""
Monitoring of a model whose served rows are logged in a SQL database, computed in the database, without Airflow.

The rows of a window (a table or a query: the inputs, the prediction, and optionally the label that arrived
later) are compared where they live: feature drift with :func:`airflow_mlops.data.sql_drift.compute_drift_sql`
against a reference table or query of the same database or the training snapshot (one column at a time),
prediction drift against the champion's predictions on its evaluation holdout (class counts, or the summaries of
:mod:`~airflow_mlops.data.sql_drift` for continuous predictions), data quality (the default suite from the counts
the drift made; a suite of your own run by Great Expectations' SQL datasource), and live performance from the
counts of each (label, prediction) pair (classes) or from averaged errors (regression). Only summaries reach
the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops.data.drift import categorical_drift_from_counts, drift_report, feature_result
from airflow_mlops.data.sql_drift import SqlData, compute_drift_sql
from airflow_mlops.serving.monitor import (
    MAX_CLASSES,
    PERFORMANCE_METRICS,
    PREDICTION_FEATURE,
    prediction_frames,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection, Engine

__all__ = ["column_names", "default_quality", "live_performance_sql", "prediction_drift_sql", "row_count"]

#: Most (label, prediction) pairs a classification metric is computed from (more: not classes).
_MAX_PAIRS = 10_000


def _from(conn: Engine | Connection, data: SqlData) -> Any:
    import sqlalchemy as sa

    return sa.text(f"({data.sql(conn)}) AS mlops_window")


def _col(name: str) -> Any:
    import sqlalchemy as sa

    return sa.column(name, is_literal=False)


def column_names(engine: Engine, data: SqlData) -> list[str]:
    """The columns of a table or query (no row is read)."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        try:
            result: Any = conn.execute(
                sa.select(sa.literal_column("*")).select_from(_from(conn, data)).limit(0)
            )
        except sa.exc.DBAPIError as err:
            raise ValueError(f"Cannot read {data.describe()}: {err.orig}") from err
        return [str(c) for c in result.keys()]


def row_count(engine: Engine, data: SqlData) -> int:
    """The number of rows of a table or query, counted by the database."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        try:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_from(conn, data))).scalar() or 0)
        except sa.exc.DBAPIError as err:
            raise ValueError(f"Cannot read {data.describe()}: {err.orig}") from err


def prediction_drift_sql(
    engine: Engine,
    current: SqlData,
    column: str,
    reference_predictions: Sequence[Any],
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """
    Drift of the predictions in *column* of *current* from *reference_predictions*, as the in-memory path.

    Class labels (at most 20 distinct values on both sides together) are compared by their counts, which the
    database groups; other predictions by the summaries of :func:`compute_drift_sql`.
    """
    import pandas as pd
    import sqlalchemy as sa

    col = _col(column)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(col, sa.func.count())
            .select_from(_from(conn, current))
            .group_by(col)
            .limit(MAX_CLASSES + 2)
        ).all()
    counts = {value: int(count) for value, count in rows if value is not None}
    nulls = sum(int(count) for value, count in rows if value is None)
    reference = pd.Series(list(reference_predictions))
    distinct = set(reference.dropna().unique())
    if len(counts) <= MAX_CLASSES and len(distinct | set(counts)) <= MAX_CLASSES:
        values = list(counts)
        ref_frame, cur_frame = prediction_frames(reference, values)
        cur_keys = cur_frame[PREDICTION_FEATURE]
        if not isinstance(
            ref_frame[PREDICTION_FEATURE].dtype, pd.StringDtype
        ):  # more classes once normalised
            return _numeric_prediction_drift(engine, current, column, reference, thresholds)
        cur_counts: dict[str, int] = {}
        for key, value in zip(cur_keys, values, strict=True):
            cur_counts[str(key)] = cur_counts.get(str(key), 0) + counts[value]
        ref_values = ref_frame[PREDICTION_FEATURE].dropna()
        ref_counts = {str(k): int(v) for k, v in ref_values.astype(str).value_counts().items()}
        total = sum(cur_counts.values()) + nulls
        rows_by_side = {"reference": len(ref_values), "current": sum(cur_counts.values())}
        null_rates = {
            "reference": float(ref_frame[PREDICTION_FEATURE].isna().mean()) if len(ref_frame) else 0.0,
            "current": nulls / total if total else 0.0,
        }
        metrics = (
            categorical_drift_from_counts(ref_counts, cur_counts)
            if rows_by_side["reference"] and rows_by_side["current"]
            else {}
        )
        feature = feature_result(PREDICTION_FEATURE, True, metrics, rows_by_side, null_rates, thresholds)
        return drift_report({PREDICTION_FEATURE: feature}, [], [])
    return _numeric_prediction_drift(engine, current, column, reference, thresholds)


def _numeric_prediction_drift(
    engine: Engine, current: SqlData, column: str, reference: Any, thresholds: dict[str, float] | None
) -> dict[str, Any]:
    import pandas as pd

    quote = engine.dialect.identifier_preparer.quote
    predictions = SqlData(
        query=f"SELECT {quote(column)} AS {PREDICTION_FEATURE} FROM ({current.sql(engine)}) AS mlops_predictions"
    )
    frame = pd.DataFrame({PREDICTION_FEATURE: pd.to_numeric(reference, errors="coerce").astype(float)})
    return compute_drift_sql(engine, frame, predictions, thresholds=thresholds)


def default_quality(
    features: Sequence[str], columns: Sequence[str], records: int, non_null: dict[str, int]
) -> dict[str, Any]:
    """
    The summary of the default suite of logged rows, from counts already made (no query).

    The suite: at least the model's features, at least one row, no feature null; the summary is shaped as
    :func:`~airflow_mlops.data.expectations.summarize` gives it. Great Expectations reads every row of a query to learn its columns, so the default suite is not sent to it;
    *non_null* holds each feature's non-null count (those the drift computation returned).
    """
    failed: list[dict[str, Any]] = []
    missing = [f for f in features if f not in columns]
    if missing:
        failed.append(
            _failure("expect_table_columns_to_match_set", None, {"observed_value": list(columns)},
                     {"column_set": list(features), "exact_match": False})
        )  # fmt: skip
    if records < 1:
        failed.append(
            _failure(
                "expect_table_row_count_to_be_between", None, {"observed_value": records}, {"min_value": 1}
            )
        )
    for feature in features:
        if feature in missing:
            observed: dict[str, Any] = {"error": f"column {feature!r} is not in the data"}
        elif non_null.get(feature, records) < records:
            nulls = records - non_null[feature]
            observed = {"unexpected_count": nulls, "unexpected_percent": round(100.0 * nulls / records, 4)}
        else:
            continue
        failed.append(_failure("expect_column_values_to_not_be_null", feature, observed, {"column": feature}))
    evaluated = 2 + len(features)
    return {
        "success": not failed, "blocking": bool(failed), "evaluated": evaluated,
        "successful": evaluated - len(failed), "unsuccessful": len(failed), "failed": failed,
    }  # fmt: skip


def _failure(
    expectation: str, column: str | None, observed: dict[str, Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    return {
        "expectation": expectation, "column": column, "severity": "critical", "observed": observed,
        "kwargs": kwargs,
    }  # fmt: skip


def live_performance_sql(
    engine: Engine,
    current: SqlData,
    label_column: str,
    prediction_column: str,
    metric: str,
    baseline: float | None,
    max_drop: float,
    min_labels: int,
) -> dict[str, Any]:
    """
    *metric* of the logged predictions against the labels logged next to them, from database aggregates.

    Classification metrics come from the count of each (label, prediction) pair, errors from their averages.
    :returns: as :func:`airflow_mlops.serving.monitor.live_performance`.
    """
    import math

    import numpy as np
    import sqlalchemy as sa

    label, prediction = _col(label_column), _col(prediction_column)
    both = sa.and_(label.is_not(None), prediction.is_not(None))
    regression = metric in ("mean_absolute_error", "root_mean_squared_error")
    with engine.connect() as conn:
        source = _from(conn, current)
        if regression:
            error = sa.cast(prediction, sa.Float) - sa.cast(label, sa.Float)
            labelled, mae, mse = conn.execute(
                sa.select(sa.func.count(), sa.func.avg(sa.func.abs(error)), sa.func.avg(error * error))
                .select_from(source)
                .where(both)
            ).one()
            pairs: list[Any] = []
        else:
            pairs = list(
                conn.execute(
                    sa.select(label, prediction, sa.func.count())
                    .select_from(source)
                    .where(both)
                    .group_by(label, prediction)
                    .limit(_MAX_PAIRS + 1)
                ).all()
            )
            if len(pairs) > _MAX_PAIRS:
                raise ValueError(
                    f"{label_column!r} and {prediction_column!r} of {current.describe()} have more than "
                    f"{_MAX_PAIRS} distinct pairs: not classes; use a regression metric"
                )
            labelled = sum(int(count) for _, _, count in pairs)
    out: dict[str, Any] = {
        "metric": metric,
        "value": None,
        "baseline": baseline,
        "labelled": int(labelled or 0),
    }
    if out["labelled"] < min_labels:
        out["degraded"] = False
        return out
    if regression:
        value = float(mae) if metric == "mean_absolute_error" else math.sqrt(float(mse))
    else:
        from sklearn import metrics as skm

        from airflow_mlops.serving.monitor import _aligned, class_metric_kwargs

        y_true, y_pred = _aligned([p[0] for p in pairs], [p[1] for p in pairs])
        weights = np.array([int(p[2]) for p in pairs], dtype=float)
        kwargs: dict[str, Any] = {"sample_weight": weights, **class_metric_kwargs(metric, y_true, y_pred)}
        value = float(getattr(skm, metric)(y_true, y_pred, **kwargs))
    out["value"] = round(value, 6)
    if baseline is not None:
        drop = (baseline - value) if PERFORMANCE_METRICS[metric] else (value - baseline)
        out["drop"] = round(drop, 6)
        out["degraded"] = drop > max_drop
    else:
        out["degraded"] = False
    return out
