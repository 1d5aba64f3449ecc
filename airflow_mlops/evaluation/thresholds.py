"""
The metrics MLflow's default evaluator produces per model type, and the threshold spec of the gate.

Pure Python: :func:`parse_thresholds` runs in ``__init__`` for literal specs (DAG parse time) and at execute
time for specs that come from templates (a JSON string, or a dict after native rendering).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def check_model_type(model_type: Any) -> str:
    """Return *model_type* if it is ``"classifier"`` or ``"regressor"``, else raise ValueError."""
    if model_type not in METRICS_BY_MODEL_TYPE:
        raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
    return str(model_type)


def parse_thresholds(thresholds: Any, model_type: str) -> dict[str, dict[str, Any]]:
    """
    Validate a threshold spec and return it normalised (every key present, numbers as floats).

    Raises ValueError saying what is wrong and what is allowed.

    :param thresholds: ``{metric: {"threshold", "min_absolute_change", "min_relative_change",
        "greater_is_better"}}`` or a JSON string of it. ``greater_is_better`` defaults to the metric's
        known direction.
    :param model_type: ``"classifier"`` or ``"regressor"``; selects the metrics allowed.
    """
    known = METRICS_BY_MODEL_TYPE[check_model_type(model_type)]
    if isinstance(thresholds, str):
        thresholds = load_spec(thresholds, "thresholds", THRESHOLDS_SHAPE)
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ValueError(f"thresholds must be a non-empty dict {THRESHOLDS_SHAPE}, got {thresholds!r}")
    parsed: dict[str, dict[str, Any]] = {}
    for metric, spec in thresholds.items():
        if metric not in known:
            raise ValueError(
                f"Unknown metric {metric!r} for model_type {model_type!r} in thresholds; "
                f"allowed: {', '.join(sorted(known))}"
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
