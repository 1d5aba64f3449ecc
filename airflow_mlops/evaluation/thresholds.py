"""
The metrics MLflow's default evaluator produces per model type, and the threshold spec of the gate.

Pure Python: :func:`parse_thresholds` runs in ``__init__`` for literal specs (DAG parse time) and at execute
time for specs that come from templates (a JSON string, or a dict after native rendering).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from airflow_mlops.evaluation.values import load_spec, number

# Metrics MLflow's default evaluator produces (mlflow.models.evaluate, evaluators=["default"]), with whether
# greater is better. Checked against MLflow 3: binary classifiers produce all classifier metrics when the
# model has predict_proba (roc_auc, log_loss, precision_recall_auc need it); multiclass ones produce no
# confusion-matrix counts and no precision_recall_auc.
CLASSIFIER_METRICS: dict[str, bool] = {
    "accuracy_score": True,
    "precision_score": True,
    "recall_score": True,
    "f1_score": True,
    "roc_auc": True,
    "precision_recall_auc": True,
    "log_loss": False,
    "score": True,
    "true_positives": True,
    "true_negatives": True,
    "false_positives": False,
    "false_negatives": False,
}
REGRESSOR_METRICS: dict[str, bool] = {
    "mean_squared_error": False,
    "root_mean_squared_error": False,
    "mean_absolute_error": False,
    "mean_absolute_percentage_error": False,
    "max_error": False,
    "r2_score": True,
    "score": True,
}
METRICS_BY_MODEL_TYPE: dict[str, dict[str, bool]] = {
    "classifier": CLASSIFIER_METRICS,
    "regressor": REGRESSOR_METRICS,
}
THRESHOLD_KEYS = ("threshold", "min_absolute_change", "min_relative_change", "greater_is_better")
THRESHOLDS_SHAPE = (
    '{"<metric>": {"threshold": number, "min_absolute_change": number >= 0, '
    '"min_relative_change": number in [0, 1], "greater_is_better": bool}}'
)


#: How ``precision_score``, ``recall_score``, ``f1_score`` (and ``roc_auc``) of a multiclass classifier average
#: over its classes (scikit-learn's ``average``); MLflow's default is ``weighted``. Binary classifiers always
#: score their positive label.
AVERAGES = ("weighted", "macro", "micro")


def check_average(average: Any) -> str:
    """Return *average* if it is one of :data:`AVERAGES`, else raise ValueError naming them."""
    if average not in AVERAGES:
        raise ValueError(
            f"average must be one of {', '.join(repr(a) for a in AVERAGES)} (how multiclass precision, "
            f"recall and F1 average over the classes), got {average!r}"
        )
    return str(average)


def check_model_type(model_type: Any) -> str:
    """Return *model_type* if it is ``"classifier"`` or ``"regressor"``, else raise ValueError."""
    if model_type not in METRICS_BY_MODEL_TYPE:
        raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
    return str(model_type)


class _CustomMetricFields(NamedTuple):
    name: str
    eval_fn: Callable[..., Any]
    greater_is_better: bool


class CustomMetric(_CustomMetricFields):
    """
    A metric of the user's own, computed by MLflow's evaluation next to the built-in ones and gated like them.

    Built without importing MLflow (DAG files stay cheap to parse); the operator turns it into
    ``mlflow.models.make_metric(eval_fn=..., greater_is_better=..., name=...)`` when it runs. An
    ``EvaluationMetric`` made with ``make_metric`` is accepted as well.

    :param name: Name of the metric (the key in the results, the report and ``thresholds``).
    :param eval_fn: ``eval_fn(predictions, targets, metrics) -> float`` (pandas Series in, a number or an
        ``mlflow.metrics.MetricValue`` out), as ``make_metric`` expects.
    :param greater_is_better: Whether a higher value is better (the gate's default direction).
    """

    # A named tuple rather than a dataclass: this module loads when a DAG file is parsed, and a dataclass is
    # built by generating and compiling code (about 0.3 ms).
    __slots__ = ()

    def __new__(cls, name: str, eval_fn: Callable[..., Any], greater_is_better: bool) -> CustomMetric:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
            raise ValueError(f"Custom metric name must be a word such as 'business_cost', got {name!r}")
        if not callable(eval_fn):
            raise ValueError(f"Custom metric {name!r}: eval_fn must be callable, got {eval_fn!r}")
        if not isinstance(greater_is_better, bool):
            raise ValueError(
                f"Custom metric {name!r}: greater_is_better must be true or false, got {greater_is_better!r}"
            )
        return super().__new__(cls, name, eval_fn, greater_is_better)


def custom_metrics(extra_metrics: Sequence[Any] | None) -> dict[str, bool]:
    """
    ``{name: greater_is_better}`` of *extra_metrics* (:class:`CustomMetric` or MLflow ``EvaluationMetric``).

    Raises ValueError for anything else, a duplicate name, or a name of a built-in metric.
    """
    found: dict[str, bool] = {}
    if extra_metrics is None:
        return found
    if isinstance(extra_metrics, str | Mapping | CustomMetric) or not isinstance(extra_metrics, Sequence):
        raise ValueError(
            "extra_metrics must be a list of CustomMetric(name, eval_fn, greater_is_better) or of metrics made "
            f"with mlflow.models.make_metric, got {extra_metrics!r}"
        )
    builtin = {metric for metrics in METRICS_BY_MODEL_TYPE.values() for metric in metrics}
    for item in extra_metrics:
        name = getattr(item, "name", None)
        greater = getattr(item, "greater_is_better", None)
        if (
            not isinstance(name, str)
            or not callable(getattr(item, "eval_fn", None))
            or not isinstance(greater, bool)
        ):
            raise ValueError(
                f"extra_metrics item {item!r} is not a CustomMetric(name, eval_fn, greater_is_better) or a "
                "metric made with mlflow.models.make_metric"
            )
        if name in builtin:
            raise ValueError(f"Custom metric {name!r} has the name of a built-in metric; rename it")
        if name in found:
            raise ValueError(f"Two extra_metrics are named {name!r}")
        found[name] = greater
    return found


def allowed_metrics(custom: Mapping[str, bool] | None = None) -> str:
    """The metrics allowed for each model type (and the custom ones), for error messages."""
    lines = [
        f"{kind}: {', '.join(sorted(metrics))}" for kind, metrics in sorted(METRICS_BY_MODEL_TYPE.items())
    ]
    if custom:
        lines.append(f"custom (extra_metrics): {', '.join(sorted(custom))}")
    return "; ".join(lines)


def infer_model_type(metrics: Sequence[str]) -> str | None:
    """
    The model type the gated *metrics* belong to, or None when they fit both (``score``) or neither.

    Raises ValueError when they mix classifier-only and regressor-only metrics.
    """
    kinds = {
        kind
        for metric in metrics
        for kind, known in METRICS_BY_MODEL_TYPE.items()
        if metric in known and not all(metric in other for other in METRICS_BY_MODEL_TYPE.values())
    }
    if len(kinds) > 1:
        by_kind = {
            kind: sorted(m for m in metrics if m in known) for kind, known in METRICS_BY_MODEL_TYPE.items()
        }
        raise ValueError(
            f"thresholds mix classifier metrics {by_kind['classifier']} and regressor metrics "
            f"{by_kind['regressor']}; a model is one or the other. Allowed: {allowed_metrics()}"
        )
    return kinds.pop() if kinds else None


def resolve_model_type(
    model_type: str | None, thresholds: Any, custom: Mapping[str, bool] | None = None
) -> str | None:
    """
    The model type given, else the one the metrics of *thresholds* imply; None when they do not tell.

    Raises ValueError for an unknown model type, thresholds that are not a spec, or metrics of both types.
    """
    if model_type is not None:
        return check_model_type(model_type)
    if isinstance(thresholds, str):
        thresholds = load_spec(thresholds, "thresholds", THRESHOLDS_SHAPE)
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ValueError(f"thresholds must be a non-empty dict {THRESHOLDS_SHAPE}, got {thresholds!r}")
    return infer_model_type([str(metric) for metric in thresholds if metric not in (custom or {})])


def parse_thresholds(
    thresholds: Any, model_type: str, custom: Mapping[str, bool] | None = None
) -> dict[str, dict[str, Any]]:
    """
    Validate a threshold spec and return it normalised (every key present, numbers as floats).

    Raises ValueError saying what is wrong and what is allowed.

    :param thresholds: ``{metric: {"threshold", "min_absolute_change", "min_relative_change",
        "greater_is_better"}}`` or a JSON string of it. ``greater_is_better`` defaults to the metric's
        known direction.
    :param model_type: ``"classifier"`` or ``"regressor"``; selects the metrics allowed.
    :param custom: ``{name: greater_is_better}`` of the custom metrics (see :func:`custom_metrics`).
    """
    known = {**METRICS_BY_MODEL_TYPE[check_model_type(model_type)], **(custom or {})}
    if isinstance(thresholds, str):
        thresholds = load_spec(thresholds, "thresholds", THRESHOLDS_SHAPE)
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ValueError(f"thresholds must be a non-empty dict {THRESHOLDS_SHAPE}, got {thresholds!r}")
    parsed: dict[str, dict[str, Any]] = {}
    for metric, spec in thresholds.items():
        if metric not in known:
            raise ValueError(
                f"Unknown metric {metric!r} for model_type {model_type!r} in thresholds; allowed per "
                f"model type: {allowed_metrics(custom)}"
            )
        if not isinstance(spec, Mapping):
            raise ValueError(f"thresholds[{metric!r}] must be a dict with keys {list(THRESHOLD_KEYS)}")
        unknown = sorted(set(spec) - set(THRESHOLD_KEYS))
        if unknown:
            raise ValueError(
                f"thresholds[{metric!r}] has unknown keys {unknown}; allowed: {', '.join(THRESHOLD_KEYS)}"
            )
        where = f"thresholds[{metric!r}]"
        threshold = number(spec.get("threshold"), f"{where}['threshold']")
        min_abs = number(spec.get("min_absolute_change"), f"{where}['min_absolute_change']")
        min_rel = number(spec.get("min_relative_change"), f"{where}['min_relative_change']")
        if min_abs is not None and min_abs < 0:
            raise ValueError(
                f"{where}['min_absolute_change'] must be >= 0 (0 = no worse than the champion), got {min_abs}"
            )
        if min_rel is not None and not 0 <= min_rel <= 1:
            raise ValueError(f"{where}['min_relative_change'] must be between 0 and 1, got {min_rel}")
        if threshold is None and min_abs is None and min_rel is None:
            raise ValueError(
                f"{where} sets no threshold: give at least one of threshold, min_absolute_change, "
                "min_relative_change"
            )
        greater_is_better = spec.get("greater_is_better", known[metric])
        if greater_is_better is None:
            greater_is_better = known[metric]
        if not isinstance(greater_is_better, bool):
            raise ValueError(f"{where}['greater_is_better'] must be true or false, got {greater_is_better!r}")
        parsed[metric] = {
            "threshold": threshold,
            "min_absolute_change": min_abs,
            "min_relative_change": min_rel,
            "greater_is_better": greater_is_better,
        }
    return parsed
