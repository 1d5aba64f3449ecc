"""
Slice checks: split the holdout by a column and compare candidate and champion in every segment.

Pure Python at import; :func:`slice_metric` and :func:`check_slices` import scikit-learn and numpy when
called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_mlops.evaluation.thresholds import METRICS_BY_MODEL_TYPE, check_model_type
from airflow_mlops.evaluation.values import finite, fmt, load_spec, number

if TYPE_CHECKING:
    import pandas as pd

# Metrics a slice check can compute per segment from the models' predictions (scikit-learn, the way MLflow's
# default evaluator computes them on the whole holdout). Probability-based metrics are left out.
SLICE_METRICS: dict[str, tuple[str, ...]] = {
    "classifier": ("accuracy_score", "precision_score", "recall_score", "f1_score"),
    "regressor": (
        "mean_squared_error",
        "root_mean_squared_error",
        "mean_absolute_error",
        "mean_absolute_percentage_error",
        "max_error",
        "r2_score",
    ),
}
SLICE_KEYS = ("column", "metrics", "min_rows")
DEFAULT_SLICE_MIN_ROWS = 30
#: A slice column with more distinct values than this is not a segment column (an id, a float).
MAX_SEGMENTS = 100
SLICES_SHAPE = (
    '{"column": "<holdout column>", "metrics": {"<metric>": {"max_regression": number >= 0}}, '
    '"min_rows": int >= 1} (or a list of them)'
)


def parse_slices(slices: Any, model_type: str) -> list[dict[str, Any]]:
    """
    Validate a slice-check spec and return it normalised as a list (empty when no slices are given).

    Pure Python, like :func:`~airflow_mlops.evaluation.thresholds.parse_thresholds`; raises ValueError. A
    slice check splits the holdout by the values of ``column`` and requires, in every segment of at least
    ``min_rows`` rows, that the candidate is not worse than the champion by more than ``max_regression``
    (absolute, in the metric's direction).

    :param slices: ``{"column", "metrics": {metric: {"max_regression"}}, "min_rows"}``, a list of them, or a
        JSON string of either. ``min_rows`` defaults to 30.
    :param model_type: ``"classifier"`` or ``"regressor"``; selects the metrics allowed.
    """
    check_model_type(model_type)
    if slices is None or slices == "" or slices == []:
        return []
    if isinstance(slices, str):
        slices = load_spec(slices, "slices", SLICES_SHAPE)
    specs = [slices] if isinstance(slices, Mapping) else slices
    if not isinstance(specs, list | tuple) or not specs:
        raise ValueError(f"slices must be {SLICES_SHAPE}, got {slices!r}")
    allowed = SLICE_METRICS[model_type]
    parsed: list[dict[str, Any]] = []
    for index, spec in enumerate(specs):
        where = f"slices[{index}]" if len(specs) > 1 else "slices"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a dict {SLICES_SHAPE}, got {spec!r}")
        unknown = sorted(set(spec) - set(SLICE_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; allowed: {', '.join(SLICE_KEYS)}")
        column = spec.get("column")
        if not isinstance(column, str) or not column.strip():
            raise ValueError(f"{where}['column'] must be the name of a holdout column, got {column!r}")
        min_rows = spec.get("min_rows", DEFAULT_SLICE_MIN_ROWS)
        if isinstance(min_rows, str) and min_rows.strip().isdigit():
            min_rows = int(min_rows)
        if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
            raise ValueError(f"{where}['min_rows'] must be a whole number >= 1, got {min_rows!r}")
        metrics = spec.get("metrics")
        if not isinstance(metrics, Mapping) or not metrics:
            raise ValueError(
                f"{where}['metrics'] must be a non-empty dict {{metric: {{'max_regression': number}}}}"
            )
        checks: dict[str, dict[str, Any]] = {}
        for metric, check in metrics.items():
            if metric not in allowed:
                raise ValueError(
                    f"Metric {metric!r} cannot be checked per slice for model_type {model_type!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
            if not isinstance(check, Mapping) or set(check) != {"max_regression"}:
                raise ValueError(
                    f"{where}['metrics'][{metric!r}] must be {{'max_regression': number >= 0}}, got {check!r}"
                )
            max_regression = number(
                check["max_regression"], f"{where}['metrics'][{metric!r}]['max_regression']"
            )
            if max_regression is None or max_regression < 0:
                raise ValueError(
                    f"{where}['metrics'][{metric!r}]['max_regression'] must be a number >= 0 "
                    f"(0 = no worse than the champion), got {check['max_regression']!r}"
                )
            checks[metric] = {
                "max_regression": max_regression,
                "greater_is_better": METRICS_BY_MODEL_TYPE[model_type][metric],
            }
        parsed.append({"column": column, "metrics": checks, "min_rows": min_rows})
    return parsed


def slice_metric(
    metric: str, y_true: Any, y_pred: Any, labels: list[Any] | None = None, average: str = "weighted"
) -> float | None:
    """
    One metric of one segment, computed with scikit-learn as MLflow's default evaluator does.

    Classifiers: binary averaging with the last of the sorted ``labels`` as positive label when there are
    at most two labels, else *average* (``weighted``, ``macro`` or ``micro``). Returns None for a value that
    is not a finite number.
    """
    from sklearn import metrics as skm

    if metric == "accuracy_score":
        value = skm.accuracy_score(y_true, y_pred)
    elif metric in ("precision_score", "recall_score", "f1_score"):
        labels = list(labels or [])
        binary = len(labels) <= 2
        kwargs: dict[str, Any] = {"labels": labels or None, "zero_division": 0}
        if binary:
            kwargs.update(average="binary", pos_label=labels[-1] if labels else 1)
        else:
            kwargs["average"] = average
        value = getattr(skm, metric)(y_true, y_pred, **kwargs)
    elif metric == "root_mean_squared_error":
        value = math.sqrt(skm.mean_squared_error(y_true, y_pred))
    elif metric in SLICE_METRICS["regressor"]:
        if metric == "r2_score" and len(y_true) < 2:
            return None
        value = getattr(skm, metric)(y_true, y_pred)
    else:  # parse_slices lets no other metric through
        raise ValueError(f"Metric {metric!r} cannot be computed per slice")
    return finite(value)


def check_slices(
    slices: list[dict[str, Any]],
    data: pd.DataFrame,
    target: str,
    candidate_pred: Any,
    champion_pred: Any | None,
    model_type: str = "classifier",
    average: str = "weighted",
) -> list[dict[str, Any]]:
    """
    Compute each slice metric per segment for candidate and champion and decide each segment.

    Multiclass precision, recall and F1 average over the classes as *average* says (as the gate does).

    Returns one row per (column, segment, metric): ``{"column", "segment", "rows", "metric", "candidate",
    "champion", "delta", "max_regression", "status", "passed"}``. ``status`` is ``pass``, ``fail``,
    ``not enough rows`` or ``no champion``; only ``fail`` rows have ``passed`` False (the others do not gate).
    Raises ValueError for a slice column with more than :data:`MAX_SEGMENTS` distinct values.
    """
    import numpy as np

    y_all = data[target].to_numpy()
    candidate_pred = np.asarray(candidate_pred).reshape(len(data), -1)[:, 0]
    if champion_pred is not None:
        champion_pred = np.asarray(champion_pred).reshape(len(data), -1)[:, 0]
    labels: list[Any] = []
    if model_type == "classifier":
        preds = [candidate_pred] + ([champion_pred] if champion_pred is not None else [])
        labels = sorted(set(y_all.tolist()).union(*(p.tolist() for p in preds)), key=str)
    rows: list[dict[str, Any]] = []
    for spec in slices:
        column = spec["column"]
        segments = data[column].astype("object").where(data[column].notna(), "(missing)")
        values = list(dict.fromkeys(segments.tolist()))
        if len(values) > MAX_SEGMENTS:
            raise ValueError(
                f"Slice column {column!r} has {len(values)} distinct values (more than {MAX_SEGMENTS}): slice by "
                "a categorical column such as a region or a plan, not by an id or a continuous value"
            )
        for value in sorted(values, key=str):
            mask = (segments == value).to_numpy()
            count = int(mask.sum())
            for metric, check in spec["metrics"].items():
                row: dict[str, Any] = {
                    "column": column,
                    "segment": str(value),
                    "rows": count,
                    "metric": metric,
                    "candidate": None,
                    "champion": None,
                    "delta": None,
                    "max_regression": check["max_regression"],
                    "status": "not enough rows",
                    "passed": True,
                }
                rows.append(row)
                if count < spec["min_rows"]:
                    continue
                y_true = y_all[mask]
                candidate = slice_metric(metric, y_true, candidate_pred[mask], labels, average)
                row["candidate"] = candidate
                if champion_pred is None:
                    row["status"] = "no champion"
                    continue
                champion = slice_metric(metric, y_true, champion_pred[mask], labels, average)
                row["champion"] = champion
                if candidate is None or champion is None:
                    row["status"] = "no champion" if champion is None and candidate is not None else "fail"
                    row["passed"] = row["status"] != "fail"
                    continue
                row["delta"] = candidate - champion
                regression = -row["delta"] if check["greater_is_better"] else row["delta"]
                row["passed"] = regression <= check["max_regression"] + 1e-12
                row["status"] = "pass" if row["passed"] else "fail"
    return rows


def slice_failures(rows: list[dict[str, Any]]) -> list[str]:
    """One line per failed segment and metric, naming both models' values and the limit."""
    return [
        f"{row['metric']} on {row['column']}={row['segment']}: candidate {fmt(row['candidate'])} vs "
        f"champion {fmt(row['champion'])} (regression > {row['max_regression']:g})"
        for row in rows
        if not row["passed"]
    ]


def slice_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Compact slice outcome for the ``mlops.evaluation.summary`` tag."""
    return {
        "checked": sum(1 for row in rows if row["status"] in ("pass", "fail")),
        "not_enough_rows": sorted(
            {f"{row['column']}={row['segment']}" for row in rows if row["status"] == "not enough rows"}
        ),
        "failed": [
            {key: row[key] for key in ("column", "segment", "metric", "candidate", "champion", "delta")}
            for row in rows
            if row["status"] == "fail"
        ],
    }
