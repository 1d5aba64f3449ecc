"""
The gate: each thresholded metric through ``mlflow.validate_evaluation_results``; the decision and its reason.

No Airflow import; MLflow is imported by :func:`gate_metric` when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops.evaluation.slices import slice_failures
from airflow_mlops.evaluation.values import finite

if TYPE_CHECKING:
    from collections.abc import Mapping


def describe_threshold(spec: Mapping[str, Any], compare: bool) -> str:
    """The threshold of one metric as the report shows it, e.g. ``>= 0.7; >= champion + 0.02``."""
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

    ``champion_result`` None means no champion: only the absolute ``threshold`` applies. Each condition (the
    user's ``threshold``, the change over the champion) is checked on its own, and the reason names only the
    ones that failed, each with its own limit: the user's threshold, or the champion's value and the change
    asked for. A ``min_absolute_change`` of 0 ("no worse than the champion"), which MLflow's
    ``MetricThreshold`` does not accept, is a plain comparison with the champion's value.

    The row is ``{"metric", "candidate", "champion", "delta", "threshold", "shown", "passed", "reason"}``.
    """
    raw_candidate = candidate_result.metrics.get(metric)
    candidate = finite(raw_candidate)
    champion = finite(champion_result.metrics.get(metric)) if champion_result is not None else None
    wants_change = spec["min_absolute_change"] is not None or spec["min_relative_change"] is not None
    compare = champion_result is not None and wants_change
    row: dict[str, Any] = {
        "metric": metric,
        "candidate": candidate,
        "champion": champion,
        "delta": candidate - champion if candidate is not None and champion is not None else None,
        "threshold": describe_threshold(spec, compare or champion_result is not None),
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
    greater = spec["greater_is_better"]
    failures: list[str] = []
    checked = False
    if spec["threshold"] is not None:
        checked = True
        failures += _mlflow_check(metric, {"threshold": spec["threshold"]}, greater, candidate_result, None)
    if compare and champion is not None:
        checked = True
        change = {k: spec[k] for k in ("min_absolute_change", "min_relative_change") if spec[k]}
        if change:
            failures += _mlflow_check(metric, change, greater, candidate_result, champion_result)
        if spec["min_absolute_change"] == 0 and (candidate < champion if greater else candidate > champion):
            failures.append(
                f"{metric} no-worse-than-champion check failed (min_absolute_change 0): candidate "
                f"{candidate:.4f} is {'below' if greater else 'above'} the champion's {champion:.4f}"
            )
    if not checked:
        row.update(passed=True, reason="; ".join([*notes, "no threshold applies without a champion"]))
        return row
    row.update(passed=not failures, reason="; ".join([*failures, *notes]))
    return row


def _mlflow_check(
    metric: str, kwargs: dict[str, Any], greater_is_better: bool, candidate_result: Any, baseline: Any
) -> list[str]:
    """One condition through :func:`mlflow.validate_evaluation_results`: [] if it holds, else MLflow's reason."""
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    try:
        mlflow.validate_evaluation_results(
            validation_thresholds={metric: MetricThreshold(greater_is_better=greater_is_better, **kwargs)},
            candidate_result=candidate_result,
            baseline_result=baseline,
        )
    except ModelValidationFailedException as err:
        return [err.message]
    return []


def gate_decision(
    rows: list[dict[str, Any]],
    slice_rows: list[dict[str, Any]],
    champion: int | None,
    champion_note: str,
) -> tuple[bool, str]:
    """
    Whether the candidate passed, and why: every gated metric and every judged slice must pass.

    :param rows: The rows of :func:`gate_metric`, one per gated metric.
    :param slice_rows: The rows of :func:`~airflow_mlops.evaluation.slices.check_slices` (may be empty).
    :param champion: The champion version compared against, None when there is none.
    :param champion_note: Why there is no champion (used in the reason when *champion* is None).
    """
    failed_slices = slice_failures(slice_rows)
    passed = all(row["passed"] for row in rows) and not failed_slices
    if not passed:
        failures = [f"{row['metric']}: {row['reason']}" for row in rows if not row["passed"]]
        failures += [f"slice {failure}" for failure in failed_slices]
        return False, " | ".join(failures)
    reason = f"all {len(rows)} gated metric(s) met their thresholds"
    if slice_rows:
        reason += "; no slice regressed beyond its limit"
    if champion is None:
        reason += f" ({champion_note}; only absolute thresholds applied)"
    return True, reason
