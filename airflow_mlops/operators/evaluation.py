"""
Evaluate a candidate model against the champion on a holdout snapshot and gate it on thresholds.

Metrics come from ``mlflow.models.evaluate`` (default evaluator); the gate is
``mlflow.validate_evaluation_results`` with one ``MetricThreshold`` per gated metric.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, SkipMixin

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ModelEvaluationError, ModelGateFailedError, RegistryError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import MLflowModelVersionLink, MLflowRunLink, model_version_url, run_url
from airflow_mlops.operators.base import ModelOperatorMixin
from airflow_mlops.registry import (
    error_code,
    get_alias_version,
    get_model_version,
    parse_version,
    tag_value,
    validate_model_name,
)
from airflow_mlops.utils.context import airflow_lineage_tags
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import Context
    from mlflow import MlflowClient

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
_THRESHOLDS_SHAPE = (
    '{"<metric>": {"threshold": number, "min_absolute_change": number >= 0, '
    '"min_relative_change": number in [0, 1], "greater_is_better": bool}}'
)
_EVALUATION_EXPERIMENT = "mlops-evaluation"
_REASON_MAX = 5000
_HISTORY_MAX = 20


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _load_string(text: str, field: str = "thresholds", shape: str = _THRESHOLDS_SHAPE) -> Any:
    """Parse JSON, or the Python literal a plain ``{{ params.x }}`` renders a dict to."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"{field} is a string but not valid JSON ({err.msg}); expected {shape}") from err


def _load_thresholds_string(text: str) -> Any:
    return _load_string(text)


def parse_thresholds(thresholds: Any, model_type: str) -> dict[str, dict[str, Any]]:
    """
    Validate a threshold spec and return it normalised (every key present, numbers as floats).

    Pure Python, no MLflow import: runs in ``__init__`` for literal specs and at execute time for specs
    that come from templates (a JSON string, or a dict after native rendering).

    :param thresholds: ``{metric: {"threshold", "min_absolute_change", "min_relative_change",
        "greater_is_better"}}`` or a JSON string of it. ``greater_is_better`` defaults to the metric's
        known direction.
    :param model_type: ``"classifier"`` or ``"regressor"``; selects the metrics allowed.
    """
    if model_type not in METRICS_BY_MODEL_TYPE:
        raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
    known = METRICS_BY_MODEL_TYPE[model_type]
    if isinstance(thresholds, str):
        thresholds = _load_thresholds_string(thresholds)
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ValueError(f"thresholds must be a non-empty dict {_THRESHOLDS_SHAPE}, got {thresholds!r}")
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
        threshold = _number(spec.get("threshold"), f"{where}['threshold']")
        min_abs = _number(spec.get("min_absolute_change"), f"{where}['min_absolute_change']")
        min_rel = _number(spec.get("min_relative_change"), f"{where}['min_relative_change']")
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
_SLICES_SHAPE = (
    '{"column": "<holdout column>", "metrics": {"<metric>": {"max_regression": number >= 0}}, '
    '"min_rows": int >= 1} (or a list of them)'
)


def parse_slices(slices: Any, model_type: str) -> list[dict[str, Any]]:
    """
    Validate a slice-check spec and return it normalised as a list (empty when no slices are given).

    Pure Python, like :func:`parse_thresholds`. A slice check splits the holdout by the values of
    ``column`` and requires, in every segment of at least ``min_rows`` rows, that the candidate is not worse
    than the champion by more than ``max_regression`` (absolute, in the metric's direction).

    :param slices: ``{"column", "metrics": {metric: {"max_regression"}}, "min_rows"}``, a list of them, or a
        JSON string of either. ``min_rows`` defaults to 30.
    :param model_type: ``"classifier"`` or ``"regressor"``; selects the metrics allowed.
    """
    if model_type not in METRICS_BY_MODEL_TYPE:
        raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
    if slices is None or slices == "" or slices == []:
        return []
    if isinstance(slices, str):
        slices = _load_string(slices, "slices", _SLICES_SHAPE)
    specs = [slices] if isinstance(slices, Mapping) else slices
    if not isinstance(specs, list | tuple) or not specs:
        raise ValueError(f"slices must be {_SLICES_SHAPE}, got {slices!r}")
    allowed = SLICE_METRICS[model_type]
    parsed: list[dict[str, Any]] = []
    for index, spec in enumerate(specs):
        where = f"slices[{index}]" if len(specs) > 1 else "slices"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a dict {_SLICES_SHAPE}, got {spec!r}")
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
            max_regression = _number(
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


def slice_metric(metric: str, y_true: Any, y_pred: Any, labels: list[Any] | None = None) -> float | None:
    """
    One metric of one segment, computed with scikit-learn as MLflow's default evaluator does.

    Classifiers: binary averaging with the last of the sorted ``labels`` as positive label when there are
    at most two labels, else ``weighted`` averaging. Returns None for a value that is not a finite number.
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
            kwargs["average"] = "weighted"
        value = getattr(skm, metric)(y_true, y_pred, **kwargs)
    elif metric == "root_mean_squared_error":
        value = math.sqrt(skm.mean_squared_error(y_true, y_pred))
    elif metric in SLICE_METRICS["regressor"]:
        if metric == "r2_score" and len(y_true) < 2:
            return None
        value = getattr(skm, metric)(y_true, y_pred)
    else:  # parse_slices lets no other metric through
        raise ValueError(f"Metric {metric!r} cannot be computed per slice")
    return _finite(value)


def check_slices(
    slices: list[dict[str, Any]],
    data: pd.DataFrame,
    target: str,
    candidate_pred: Any,
    champion_pred: Any | None,
    model_type: str = "classifier",
) -> list[dict[str, Any]]:
    """
    Compute each slice metric per segment for candidate and champion and decide each segment.

    Returns one row per (column, segment, metric): ``{"column", "segment", "rows", "metric", "candidate",
    "champion", "delta", "max_regression", "status", "passed"}``. ``status`` is ``pass``, ``fail``,
    ``not enough rows`` or ``no champion``; only ``fail`` rows have ``passed`` False (the others do not gate).
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
            raise ModelEvaluationError(
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
                candidate = slice_metric(metric, y_true, candidate_pred[mask], labels)
                row["candidate"] = candidate
                if champion_pred is None:
                    row["status"] = "no champion"
                    continue
                champion = slice_metric(metric, y_true, champion_pred[mask], labels)
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


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


def _describe_threshold(spec: Mapping[str, Any], compare: bool) -> str:
    op = ">=" if spec["greater_is_better"] else "<="
    sign = "+" if spec["greater_is_better"] else "-"
    parts = []
    if spec["threshold"] is not None:
        parts.append(f"{op} {spec['threshold']:g}")
    suffix = "" if compare else " (not applied: no champion)"
    if spec["min_absolute_change"] is not None:
        change = spec["min_absolute_change"]
        parts.append(f"{op} champion {sign} {change:g}{suffix}" if change else f"{op} champion{suffix}")
    if spec["min_relative_change"] is not None:
        parts.append(f"{op} champion {sign}{spec['min_relative_change']:.0%}{suffix}")
    return "; ".join(parts)


def gate_metric(
    metric: str,
    spec: Mapping[str, Any],
    candidate_result: Any,
    champion_result: Any | None,
) -> dict[str, Any]:
    """
    Gate one metric with :func:`mlflow.validate_evaluation_results` and return its report row.

    ``champion_result`` None means no champion: only the absolute ``threshold`` applies. A
    ``min_absolute_change`` of 0 ("no worse than the champion"), which MLflow's ``MetricThreshold`` does not
    accept, is applied as an absolute threshold at the champion's value.
    """
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    raw_candidate = candidate_result.metrics.get(metric)
    candidate = _finite(raw_candidate)
    champion = _finite(champion_result.metrics.get(metric)) if champion_result is not None else None
    wants_change = spec["min_absolute_change"] is not None or spec["min_relative_change"] is not None
    compare = champion_result is not None and wants_change
    row: dict[str, Any] = {
        "metric": metric,
        "candidate": candidate,
        "champion": champion,
        "delta": candidate - champion if candidate is not None and champion is not None else None,
        "threshold": _describe_threshold(spec, compare or champion_result is not None),
        "shown": (
            raw_candidate,
            champion_result.metrics.get(metric) if champion_result is not None else None,
        ),
        "passed": False,
        "reason": "",
    }
    if candidate is None:
        row["reason"] = (
            f"candidate {metric} is {raw_candidate!r}: a metric that is not a finite number cannot pass the gate"
        )
        return row
    notes = []
    if compare and champion is None:
        compare = False
        notes.append(f"champion {metric} is not a finite number; change thresholds not applied")
    kwargs: dict[str, Any] = {"greater_is_better": spec["greater_is_better"]}
    if spec["threshold"] is not None:
        kwargs["threshold"] = spec["threshold"]
    if compare:
        if spec["min_absolute_change"]:
            kwargs["min_absolute_change"] = spec["min_absolute_change"]
        elif spec["min_absolute_change"] is not None:  # 0: no worse than the champion
            pick = max if spec["greater_is_better"] else min
            kwargs["threshold"] = pick(kwargs.get("threshold", champion), champion)
            notes.append(f"min_absolute_change 0: must be no worse than the champion's {champion:.4f}")
        if spec["min_relative_change"] is not None:
            kwargs["min_relative_change"] = spec["min_relative_change"]
    if len(kwargs) == 1:
        row.update(passed=True, reason="; ".join([*notes, "no threshold applies without a champion"]))
        return row
    try:
        mlflow.validate_evaluation_results(
            validation_thresholds={metric: MetricThreshold(**kwargs)},
            candidate_result=candidate_result,
            baseline_result=champion_result if compare else None,
        )
    except ModelValidationFailedException as err:
        row["reason"] = "; ".join([err.message, *notes])
        return row
    row.update(passed=True, reason="; ".join(notes))
    return row


class EvaluateModelOperator(ModelOperatorMixin, BaseOperator, SkipMixin):
    """
    Evaluate a candidate model version against the champion on a holdout snapshot and gate it.

    Both models are evaluated on the same rows with ``mlflow.models.evaluate`` (default evaluator) inside
    an MLflow run ``evaluate <model> v<version>`` that has one nested run per model; the gate applies
    ``mlflow.validate_evaluation_results`` per metric. Without a champion (first run, or the ``champion``
    alias points at a version that no longer exists) only absolute ``threshold`` values apply and the report
    says so. The candidate version gets the tags ``mlops.evaluation.summary``, ``mlops.gate.decision``
    (``passed``/``rejected``) and ``mlops.gate.reason``.

    When the gate rejects the candidate, the result is still pushed to XCom and the direct downstream
    tasks are skipped (so nothing gets promoted), or the task fails with
    :class:`~airflow_mlops.exceptions.ModelGateFailedError` if ``fail_on_gate`` is set.

    The report (Markdown, logged as ``evaluation/report.md``) has the comparison table, the slice table,
    the upstream validation and drift summaries, the gated metrics of past champions and links to the
    evaluation run, the model version and the Data Docs. The default evaluator's plots (ROC, precision-recall,
    confusion matrix... when matplotlib is installed) are logged to the candidate's nested run, and a
    ``evaluation/champion_history.png`` of the past champions' gated metrics to the evaluation run.

    Returns (XCom) ``{"passed", "model_name", "candidate_version", "candidate_model_uri", "champion_version",
    "metrics", "report", "reason", "evaluation_run_id", "slices", "artifacts", "links"}``; ``metrics`` maps
    every metric the candidate produced to ``{"candidate", "champion", "delta", "passed"}`` (``passed`` is
    None for metrics not gated); ``slices`` has one row per segment and metric (see :func:`check_slices`);
    ``artifacts`` maps plot names to artifact URIs; ``links`` holds the MLflow and Data Docs URLs.

    :param model_name: Registered model name (templated).
    :param candidate_version: Version of the candidate (templated), e.g. the ``version`` of
        :class:`~airflow_mlops.operators.registry.RegisterModelOperator`'s result.
    :param candidate_model_uri: Model URI to evaluate instead (templated); used when no version is given
        (``models:/<name>/<version>`` and ``models:/<name>@<alias>`` also identify the version to tag).
    :param holdout_data: Snapshot URI of the holdout rows (templated), e.g. ``<snapshot-uri>#holdout``.
    :param target: Name of the label column in the holdout.
    :param thresholds: Gate spec (templated) ``{metric: {"threshold", "min_absolute_change",
        "min_relative_change", "greater_is_better"}}``, or a JSON string of it (e.g. from DAG params).
        ``min_absolute_change: 0`` means "no worse than the champion".
    :param model_type: ``"classifier"`` or ``"regressor"``.
    :param fail_on_gate: Fail the task when the gate rejects, instead of skipping downstream tasks.
    :param slices: Optional slice checks (templated): ``{"column": "region", "metrics": {"accuracy_score":
        {"max_regression": 0.05}}, "min_rows": 30}``, a list of them, or a JSON string. Each metric is
        computed per value of ``column`` for candidate and champion on the same holdout rows; a segment where
        the candidate is worse than the champion by more than ``max_regression`` rejects the candidate.
        Segments with fewer than ``min_rows`` rows (default 30) are reported as "not enough rows" and do not
        gate; without a champion the slice metrics are reported only.
    :param validation_summary: Result of the upstream data validation (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='validate') }}"``; shown in the report, with a link to its
        ``data_docs_uri`` when present.
    :param drift_summary: Result of an upstream drift check (templated); shown in the report.
    :param experiment_name: MLflow experiment of the evaluation runs; default: the experiment of the
        candidate's training run, else ``mlops-evaluation``.
    :param mlflow_conn_id: The MLflow connection to use.
    :param aws_conn_id: The ``aws`` connection used to read ``s3://`` holdouts.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "candidate_version",
        "candidate_model_uri",
        "holdout_data",
        "target",
        "thresholds",
        "slices",
        "validation_summary",
        "drift_summary",
        "experiment_name",
    )
    template_fields_renderers = {
        "thresholds": "json",
        "slices": "json",
        "validation_summary": "json",
        "drift_summary": "json",
    }
    inherits_from_skipmixin = True
    operator_extra_links = (MLflowModelVersionLink(), MLflowRunLink())
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        model_name: str,
        holdout_data: str,
        thresholds: dict[str, dict[str, Any]] | str,
        candidate_version: int | str | None = None,
        candidate_model_uri: str | None = None,
        target: str = "label",
        model_type: str = "classifier",
        fail_on_gate: bool = False,
        slices: dict[str, Any] | list[dict[str, Any]] | str | None = None,
        validation_summary: dict[str, Any] | str | None = None,
        drift_summary: dict[str, Any] | str | None = None,
        experiment_name: str | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if model_type not in METRICS_BY_MODEL_TYPE:
            raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
        if not is_templated(model_name):
            validate_model_name(model_name)
        if candidate_version in (None, "") and not candidate_model_uri:
            raise ValueError(
                "Give candidate_version (the registered version to evaluate) or candidate_model_uri"
            )
        if candidate_version not in (None, "") and not is_templated(candidate_version):
            parse_version(candidate_version, str(model_name), "candidate_version")
        if not isinstance(holdout_data, str) or not holdout_data.strip():
            raise ValueError("holdout_data must be a snapshot URI, e.g. '<snapshot-uri>#holdout'")
        if not isinstance(target, str) or not target:
            raise ValueError("target must be the name of the label column in the holdout data")
        if not _has_template(thresholds):
            parse_thresholds(thresholds, model_type)
        if not _has_template(slices):
            parse_slices(slices, model_type)
        for field, value in (("validation_summary", validation_summary), ("drift_summary", drift_summary)):
            if value is not None and not isinstance(value, Mapping | str):
                raise ValueError(
                    f"{field} must be a dict (the upstream task's result) or a template of one, got {value!r}"
                )
        self.model_name = model_name
        self.candidate_version = candidate_version
        self.candidate_model_uri = candidate_model_uri
        self.holdout_data = holdout_data
        self.target = target
        self.thresholds = thresholds
        self.model_type = model_type
        self.fail_on_gate = fail_on_gate
        self.slices = slices
        self.validation_summary = validation_summary
        self.drift_summary = drift_summary
        self.experiment_name = experiment_name
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    # -- execute ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        thresholds = parse_thresholds(self.thresholds, self.model_type)
        slices = parse_slices(self.slices, self.model_type)
        upstream = {
            "validation": _summary_dict(self.validation_summary, "validation_summary"),
            "drift": _summary_dict(self.drift_summary, "drift_summary"),
        }
        name = validate_model_name(self.model_name)
        version = (
            parse_version(self.candidate_version, name, "candidate_version")
            if self.candidate_version not in (None, "")
            else None
        )
        candidate_uri = (self.candidate_model_uri or "").strip() or None
        if version is None and candidate_uri is None:
            raise ValueError(
                f"Nothing to evaluate for model {name!r}: candidate_version and candidate_model_uri are empty"
            )
        holdout_uri = str(self.holdout_data).strip()
        client = self.hook.client

        if version is None:
            version = self._version_from_uri(client, name, candidate_uri)
        candidate_mv = get_model_version(client, name, version) if version is not None else None
        if version is not None:
            self.link_model_version(name, version)
        candidate_uri = candidate_uri or f"models:/{name}/{version}"
        champion, champion_note = self._champion(client, name, version)

        data = self._read_holdout(holdout_uri)
        missing_columns = [spec["column"] for spec in slices if spec["column"] not in data.columns]
        if missing_columns:
            raise ModelEvaluationError(
                f"Holdout data {holdout_uri} has no slice column(s) {missing_columns}; its columns are "
                f"{list(data.columns)}"
            )
        label = f"model {name!r} v{version}" if version is not None else candidate_uri
        experiment_id = self._experiment_id(client, candidate_mv)

        import mlflow

        lineage = airflow_lineage_tags(context)
        parent_name = f"evaluate {name} v{version}" if version is not None else f"evaluate {name}"
        with self._start_run(client, experiment_id, parent_name, lineage) as parent:
            run_id = parent.info.run_id
            self.mlflow_run_url = run_url(self.hook.tracking_uri, experiment_id, run_id)
            candidate_result = self._evaluate(
                client,
                experiment_id,
                run_id,
                candidate_uri,
                data,
                f"candidate v{version}" if version is not None else "candidate",
                label,
                holdout_uri,
            )
            produced = sorted(candidate_result.metrics)
            missing = [metric for metric in thresholds if metric not in candidate_result.metrics]
            if missing:
                raise ModelEvaluationError(
                    f"{label} does not produce the gated metric(s) {missing} on {holdout_uri}; it produces "
                    f"{produced}. Remove them from thresholds (roc_auc, log_loss and precision_recall_auc "
                    "need a model with predict_proba; multiclass models have no confusion-matrix counts)."
                )
            champion_result = None
            if champion is not None:
                champion_result = self._evaluate(
                    client, experiment_id, run_id, f"models:/{name}/{champion}", data, f"champion v{champion}",
                    f"champion of model {name!r} (v{champion})", holdout_uri,
                )  # fmt: skip

            rows = [
                gate_metric(metric, spec, candidate_result, champion_result)
                for metric, spec in thresholds.items()
            ]
            slice_rows: list[dict[str, Any]] = []
            if slices:
                slice_rows = check_slices(
                    slices,
                    data,
                    self.target,
                    self._predict(candidate_uri, data, label, holdout_uri),
                    self._predict(f"models:/{name}/{champion}", data, f"champion v{champion}", holdout_uri)
                    if champion is not None
                    else None,
                    self.model_type,
                )
            slice_failures = [
                f"{row['metric']} on {row['column']}={row['segment']}: candidate {_fmt(row['candidate'])} vs "
                f"champion {_fmt(row['champion'])} (regression > {row['max_regression']:g})"
                for row in slice_rows
                if not row["passed"]
            ]
            passed = all(row["passed"] for row in rows) and not slice_failures
            failures = [f"{row['metric']}: {row['reason']}" for row in rows if not row["passed"]]
            failures += [f"slice {failure}" for failure in slice_failures]
            if passed:
                reason = f"all {len(rows)} gated metric(s) met their thresholds"
                if slice_rows:
                    reason += "; no slice regressed beyond its limit"
                if champion is None:
                    reason += f" ({champion_note}; only absolute thresholds applied)"
            else:
                reason = " | ".join(failures)
            artifacts = _plot_artifacts(candidate_result)
            history = self._champion_history(client, name, list(thresholds), version)
            history_plot = self._log_history_plot(name, history, list(thresholds), version, candidate_result)
            if history_plot:
                artifacts["champion_history"] = f"runs:/{run_id}/{history_plot}"
            links = {
                "evaluation_run": self.mlflow_run_url,
                "model_version": (
                    model_version_url(self.hook.tracking_uri, name, version) if version is not None else ""
                ),
                "data_docs": _data_docs_link(upstream["validation"]),
            }
            report = self._report(
                name, version, champion, champion_note, holdout_uri, len(data), rows, passed, reason,
                slice_rows=slice_rows, slices=slices, upstream=upstream, links=links, artifacts=artifacts,
                history=history,
            )  # fmt: skip
            metrics = self._metrics(candidate_result, champion_result, rows)
            mlflow.log_text(report, "evaluation/report.md")
            if slice_rows:
                mlflow.log_dict({"slices": slice_rows}, "evaluation/slices.json")
            mlflow.set_tags(
                {T.GATE_DECISION: "passed" if passed else "rejected", T.GATE_REASON: reason[:_REASON_MAX]}
            )
            evaluation_run_id = run_id

        result = {
            "passed": passed,
            "model_name": name,
            "candidate_version": version,
            "candidate_model_uri": candidate_uri,
            "champion_version": champion,
            "metrics": metrics,
            "report": report,
            "reason": reason,
            "evaluation_run_id": evaluation_run_id,
            "slices": slice_rows,
            "artifacts": artifacts,
            "links": links,
        }
        if version is not None:
            summary = {
                "passed": passed,
                "holdout": holdout_uri,
                "rows": len(data),
                "champion_version": champion,
                "evaluation_run_id": evaluation_run_id,
                "metrics": {
                    row["metric"]: {"candidate": row["candidate"], "champion": row["champion"]}
                    for row in rows
                },
                "artifacts": artifacts,
            }
            if slice_rows:
                summary["slices"] = _slice_summary(slice_rows)
            for key, value in (
                (T.EVALUATION_SUMMARY, tag_value(summary)),
                (T.GATE_DECISION, "passed" if passed else "rejected"),
                (T.GATE_REASON, reason[:_REASON_MAX]),
            ):
                client.set_model_version_tag(name, str(version), key, value)
        else:
            self.log.warning(
                "%s is not a registered version; gate decision not written to the registry", candidate_uri
            )

        self.log.info("Evaluation report:\n%s", report)
        if passed:
            self.log.info("Gate passed for %s", label)
            return result
        self.log.warning("Gate rejected %s: %s", label, reason)
        return self._on_rejected(context, result, label)

    def _on_rejected(self, context: Context, result: dict[str, Any], label: str) -> dict[str, Any]:
        ti = context.get("ti")
        if self.fail_on_gate:
            if ti is not None:  # the return value is lost when the task raises
                ti.xcom_push(key="return_value", value=result)
            raise ModelGateFailedError(f"{label} did not pass the evaluation gate: {result['reason']}")
        task = context.get("task") or self
        if ti is None or not task.downstream_task_ids:
            return result
        downstream = [t for t in task.get_direct_relatives(upstream=False) if not t.is_teardown]
        if not downstream:
            return result
        ti.xcom_push(key="return_value", value=result)
        self.log.info("Skipping downstream tasks %s", [t.task_id for t in downstream])
        self.skip(ti=ti, tasks=downstream)  # raises DownstreamTasksSkipped for the task runner
        return result

    # -- steps ---------------------------------------------------------------------------------------

    def _version_from_uri(self, client: MlflowClient, name: str, uri: str | None) -> int | None:
        match = re.match(r"^models:/([^/@]+)(?:/(\d+)|@([\w\-]+))/?$", uri or "")
        if not match or match.group(1) != name:
            return None
        if match.group(2):
            return int(match.group(2))
        version = get_alias_version(client, name, match.group(3))
        if version is None:
            raise RegistryError(f"Model {name!r} has no alias {match.group(3)!r} (from {uri})")
        return version

    def _champion(self, client: MlflowClient, name: str, candidate: int | None) -> tuple[int | None, str]:
        from mlflow.exceptions import MlflowException

        champion = get_alias_version(client, name, T.CHAMPION)
        if champion is None:
            return None, f"no champion: model {name!r} has no '{T.CHAMPION}' alias (first run)"
        if champion == candidate:
            return (
                None,
                f"the candidate v{candidate} already is the champion; compared against thresholds only",
            )
        try:
            client.get_model_version(name, str(champion))
        except MlflowException as err:
            if error_code(err) != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.log.warning("Alias %s of model %s points at missing version %s", T.CHAMPION, name, champion)
            return None, (
                f"no champion: alias '{T.CHAMPION}' of model {name!r} points at version {champion}, which no "
                "longer exists"
            )
        return champion, f"champion v{champion}"

    def _read_holdout(self, uri: str) -> pd.DataFrame:
        from airflow_mlops.data.snapshots import read_snapshot
        from airflow_mlops.data.storage import is_s3

        storage = None
        if is_s3(uri):
            from airflow_mlops.hooks.storage import StorageHook

            storage = StorageHook(aws_conn_id=self.aws_conn_id).get_conn()
        try:
            data = read_snapshot(uri, storage=storage)
        except (FileNotFoundError, KeyError) as err:
            raise ModelEvaluationError(f"Cannot read holdout data {uri}: {err}") from err
        if self.target not in data.columns:
            raise ModelEvaluationError(
                f"Holdout data {uri} has no target column {self.target!r}; its columns are {list(data.columns)}"
            )
        if data.empty:
            raise ModelEvaluationError(f"Holdout data {uri} has no rows; cannot evaluate on it")
        return data

    def _experiment_id(self, client: MlflowClient, candidate_mv: Any | None) -> str:
        if self.experiment_name:
            experiment = client.get_experiment_by_name(self.experiment_name)
            return experiment.experiment_id if experiment else client.create_experiment(self.experiment_name)
        if candidate_mv is not None and candidate_mv.run_id:
            from mlflow.exceptions import MlflowException

            try:
                return client.get_run(candidate_mv.run_id).info.experiment_id
            except MlflowException as err:
                self.log.info("Training run %s not found (%s)", candidate_mv.run_id, error_code(err))
        experiment = client.get_experiment_by_name(_EVALUATION_EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(_EVALUATION_EXPERIMENT)
        except MlflowException as err:  # created concurrently
            if error_code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(_EVALUATION_EXPERIMENT).experiment_id

    def _start_run(self, client: MlflowClient, experiment_id: str, run_name: str, lineage: dict[str, str]):
        """Start the evaluation run, resuming the one of an earlier try of this task (retry-safe)."""
        import mlflow

        existing = self._find_run(
            client, experiment_id, run_name, {f"tags.`{key}`": value for key, value in lineage.items()}
        ) if len(lineage) == 4 else None  # fmt: skip
        if existing:
            self.log.info("Resuming evaluation run %s of an earlier try", existing)
            return mlflow.start_run(run_id=existing)
        return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=lineage)

    def _find_run(
        self, client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]
    ) -> str | None:
        wanted = {"attributes.run_name": run_name, **tags}
        wanted.pop("tags.`mlops.airflow.try_number`", None)
        if any("'" in value for value in wanted.values()):
            return None
        filter_string = " and ".join(f"{key} = '{value}'" for key, value in wanted.items())
        runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=1)
        return runs[0].info.run_id if runs else None

    def _evaluate(
        self, client: MlflowClient, experiment_id: str, parent_run_id: str, model_uri: str,
        data: pd.DataFrame, run_name: str, label: str, holdout_uri: str,
    ) -> Any:  # fmt: skip
        import mlflow

        existing = self._find_run(client, experiment_id, run_name, {"tags.mlflow.parentRunId": parent_run_id})
        run_kwargs: dict[str, Any] = (
            {"run_id": existing} if existing else {"run_name": run_name, "experiment_id": experiment_id}
        )
        with mlflow.start_run(nested=True, **run_kwargs):
            try:
                result = mlflow.models.evaluate(
                    model=model_uri,
                    data=data,
                    targets=self.target,
                    model_type=self.model_type,
                    evaluators=["default"],
                    evaluator_config={"default": {"log_model_explainability": False}},
                )
            except Exception as err:
                raise ModelEvaluationError(
                    f"Cannot evaluate {label} ({model_uri}) on holdout {holdout_uri} with target "
                    f"{self.target!r} as a {self.model_type}: {type(err).__name__}: {err}"
                ) from err
        return result

    def _predict(self, model_uri: str, data: pd.DataFrame, label: str, holdout_uri: str) -> Any:
        """Predictions of *model_uri* on the holdout features, for the slice checks."""
        import mlflow

        try:
            model = mlflow.pyfunc.load_model(model_uri)
            return model.predict(data.drop(columns=[self.target]))
        except Exception as err:
            raise ModelEvaluationError(
                f"Cannot compute slice metrics of {label} ({model_uri}) on holdout {holdout_uri}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _champion_history(
        self, client: MlflowClient, name: str, metrics: list[str], candidate: int | None
    ) -> list[dict[str, Any]]:
        """
        Past champions, oldest first: versions carrying ``mlops.promotion.time``, with the gated metrics
        their own evaluation measured (``mlops.evaluation.summary``).
        """
        if "'" in name:
            return []
        history = []
        for mv in client.search_model_versions(f"name = '{name}'"):
            tags = mv.tags or {}
            promoted_at = tags.get(T.PROMOTED_AT)
            if not promoted_at or (candidate is not None and int(mv.version) == candidate):
                continue
            try:
                summary = json.loads(tags.get(T.EVALUATION_SUMMARY) or "{}")
            except ValueError:
                summary = {}
            measured = summary.get("metrics") if isinstance(summary, dict) else None
            values = {}
            for metric in metrics:
                entry = (measured or {}).get(metric)
                values[metric] = _finite(entry.get("candidate")) if isinstance(entry, dict) else None
            history.append({"version": int(mv.version), "promoted_at": promoted_at, "metrics": values})
        history.sort(key=lambda entry: (entry["promoted_at"], entry["version"]))
        return history[-_HISTORY_MAX:]

    def _log_history_plot(
        self, name: str, history: list[dict[str, Any]], metrics: list[str], version: int | None,
        candidate_result: Any,
    ) -> str | None:  # fmt: skip
        """Log a PNG of the gated metrics of past champions and this candidate; return its artifact path."""
        if not any(value is not None for entry in history for value in entry["metrics"].values()):
            return None
        try:
            from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot is not touched
        except ImportError:
            self.log.info("matplotlib is not installed; champion history plot not drawn")
            return None
        import mlflow

        labels = [f"v{entry['version']}\n{entry['promoted_at'][:10]}" for entry in history]
        labels.append(f"v{version}\ncandidate" if version is not None else "candidate")
        fig = Figure(figsize=(7, 3.5), layout="constrained")
        ax = fig.subplots()
        for metric in metrics[:8]:
            values = [entry["metrics"].get(metric) for entry in history]
            values.append(_finite(candidate_result.metrics.get(metric)))
            ax.plot(
                range(len(values)),
                [float("nan") if value is None else value for value in values],
                marker="o",
                label=metric,
            )
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{name}: gated metrics of past champions (each on its own holdout)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = "evaluation/champion_history.png"
        mlflow.log_figure(fig, path)
        return path

    @staticmethod
    def _metrics(
        candidate_result: Any, champion_result: Any | None, rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        gated = {row["metric"]: row["passed"] for row in rows}
        metrics = {}
        for metric in sorted(candidate_result.metrics):
            candidate = _finite(candidate_result.metrics[metric])
            champion = _finite(champion_result.metrics.get(metric)) if champion_result is not None else None
            metrics[metric] = {
                "candidate": candidate,
                "champion": champion,
                "delta": candidate - champion if candidate is not None and champion is not None else None,
                "passed": gated.get(metric),
            }
        return metrics

    def _report(
        self, name: str, version: int | None, champion: int | None, champion_note: str, holdout_uri: str,
        rows_count: int, rows: list[dict[str, Any]], passed: bool, reason: str, *,
        slice_rows: list[dict[str, Any]] | None = None, slices: list[dict[str, Any]] | None = None,
        upstream: Mapping[str, Mapping[str, Any] | None] | None = None, links: Mapping[str, str] | None = None,
        artifacts: Mapping[str, str] | None = None, history: list[dict[str, Any]] | None = None,
    ) -> str:  # fmt: skip
        title = f"v{version}" if version is not None else "candidate"
        against = f"champion v{champion}" if champion is not None else "no champion"
        lines = [
            f"### Evaluation of `{name}` {title} against {against}",
            "",
            f"Holdout `{holdout_uri}` ({rows_count} rows), target `{self.target}`, model type {self.model_type}.",
            "",
        ]
        if champion is None:
            lines += [
                f"**{champion_note[0].upper()}{champion_note[1:]}**: only absolute thresholds apply; "
                "min_absolute_change / min_relative_change are not applied.",
                "",
            ]
        lines += [
            "| metric | champion | candidate | delta | threshold | result |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            delta = "n/a" if row["delta"] is None else f"{row['delta']:+.4f}"
            lines.append(
                f"| {row['metric']} | {_fmt(row['shown'][1])} | {_fmt(row['shown'][0])} | {delta} | "
                f"{row['threshold']} | {'pass' if row['passed'] else 'FAIL'} |"
            )
        if slice_rows:
            lines += ["", "#### Slices", ""]
            for spec in slices or []:
                limits = ", ".join(
                    f"{m} max regression {c['max_regression']:g}" for m, c in spec["metrics"].items()
                )
                lines.append(f"By `{spec['column']}` ({limits}; segments need {spec['min_rows']} rows).")
            lines += [
                "",
                "| slice | rows | metric | champion | candidate | delta | result |",
                "|---|---|---|---|---|---|---|",
            ]
            for row in slice_rows:
                delta = "n/a" if row["delta"] is None else f"{row['delta']:+.4f}"
                result = "FAIL" if row["status"] == "fail" else row["status"]
                lines.append(
                    f"| {row['column']}={row['segment']} | {row['rows']} | {row['metric']} | "
                    f"{_fmt(row['champion'])} | {_fmt(row['candidate'])} | {delta} | {result} |"
                )
        lines += ["", f"**Decision: {'passed' if passed else 'rejected'}** — {reason}"]
        upstream = upstream or {}
        if upstream.get("validation") or upstream.get("drift"):
            lines += ["", "#### Upstream checks", ""]
            if upstream.get("validation"):
                lines.append(f"- Data validation: {_describe_upstream(upstream['validation'])}")
            if upstream.get("drift"):
                lines.append(f"- Drift: {_describe_upstream(upstream['drift'])}")
        if history:
            lines += [
                "",
                "#### Past champions",
                "",
                "| version | promoted | " + " | ".join(_metric_names(rows)) + " |",
            ]
            lines.append("|---|---|" + "---|" * len(rows))
            for entry in history:
                values = " | ".join(_fmt(entry["metrics"].get(metric)) for metric in _metric_names(rows))
                lines.append(f"| v{entry['version']} | {entry['promoted_at']} | {values} |")
        named_links = [
            (label, (links or {}).get(key))
            for key, label in (
                ("evaluation_run", "MLflow evaluation run"),
                ("model_version", "MLflow model version"),
                ("data_docs", "Data Docs"),
            )
        ]
        if any(url for _, url in named_links) or artifacts:
            lines += ["", "#### Links", ""]
            lines += [f"- [{label}]({url})" for label, url in named_links if url]
            if artifacts:
                lines.append("- Plots: " + ", ".join(f"`{key}`" for key in sorted(artifacts)))
        return "\n".join(lines)


def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["metric"] for row in rows]


def _summary_dict(value: Any, field: str) -> dict[str, Any] | None:
    """An upstream summary given as a dict, a JSON string or the literal a plain template renders to."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = _load_string(value, field, "a dict (the upstream task's result)")
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must render to a dict (the upstream task's result), got {value!r:.200}")
    return dict(value)


def _data_docs_link(validation: Mapping[str, Any] | None) -> str:
    """Browser URL of the Data Docs named by a validation summary (``data_docs_uri`` or ``data_docs``)."""
    uri = (validation or {}).get("data_docs_uri") or (validation or {}).get("data_docs")
    if not isinstance(uri, str) or not uri:
        return ""
    if uri.startswith(("http://", "https://")):
        return uri
    try:
        from airflow_mlops.links import data_docs_url
    except ImportError:
        return uri
    return data_docs_url(uri)


def _describe_upstream(summary: Mapping[str, Any]) -> str:
    """One line about an upstream check: its outcome, its counts, what failed."""
    outcome_keys = ("success", "passed", "drift", "drift_detected")
    parts = []
    for key in outcome_keys:
        if key in summary:
            value = summary[key]
            if key in ("drift", "drift_detected"):
                parts.append("**drift detected**" if value else "no drift detected")
            else:
                parts.append("**passed**" if value else "**FAILED**")
    for key, value in summary.items():
        if (
            key in outcome_keys
            or key in ("data_docs_uri", "data_docs")
            or isinstance(value, Mapping | list | tuple)
        ):
            continue
        parts.append(f"{key} `{value}`")
    failed = summary.get("failed")
    if isinstance(failed, list) and failed:
        names = [
            f"{item.get('expectation')}" + (f" on `{item['column']}`" if item.get("column") else "")
            for item in failed[:5]
            if isinstance(item, Mapping)
        ]
        parts.append(
            "failed: " + ", ".join(names) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        )
    for key, value in summary.items():
        if key != "failed" and isinstance(value, Mapping | list | tuple) and value:
            parts.append(f"{key} `{json.dumps(value, sort_keys=True, default=str)[:300]}`")
    return "; ".join(parts) or "(empty summary)"


def _plot_artifacts(result: Any) -> dict[str, str]:
    """Artifact URIs the default evaluator logged for the candidate (plots need matplotlib)."""
    artifacts = getattr(result, "artifacts", None) or {}
    return {key: str(getattr(value, "uri", value)) for key, value in sorted(artifacts.items())}


def _slice_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
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


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_templated(value)
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    return False
