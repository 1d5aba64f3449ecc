"""One metric through the gate (MLflow's validate_evaluation_results): the reason names only what failed."""

from __future__ import annotations

import pytest
from mlflow.models.evaluation import EvaluationResult

from airflow_mlops.evaluation.gate import gate_metric
from airflow_mlops.evaluation.thresholds import parse_thresholds


def result(**metrics: float) -> EvaluationResult:
    return EvaluationResult(metrics=metrics, artifacts={})


def spec(**thresholds):
    return parse_thresholds({"root_mean_squared_error": thresholds}, "regressor")["root_mean_squared_error"]


def test_only_the_users_limit_failed_and_the_reason_says_that_limit_not_the_champions():
    # Lower is better: 55 is worse than the limit 50 but better than the champion's 60.
    row = gate_metric(
        "root_mean_squared_error",
        spec(threshold=50, min_absolute_change=0),
        result(root_mean_squared_error=55.0),
        result(root_mean_squared_error=60.0),
    )
    assert row["passed"] is False
    assert "threshold check failed" in row["reason"]
    assert "threshold = 50" in row["reason"]
    assert "champion" not in row["reason"]
    assert "60" not in row["reason"]


def test_only_no_worse_than_the_champion_failed_and_the_reason_names_the_champions_value():
    row = gate_metric(
        "root_mean_squared_error",
        spec(threshold=50, min_absolute_change=0),
        result(root_mean_squared_error=45.0),
        result(root_mean_squared_error=40.0),
    )
    assert row["passed"] is False
    assert row["reason"] == (
        "root_mean_squared_error no-worse-than-champion check failed (min_absolute_change 0): candidate "
        "45.0000 is above the champion's 40.0000"
    )


def test_both_failed_lists_each_with_its_own_limit():
    row = gate_metric(
        "root_mean_squared_error",
        spec(threshold=50, min_absolute_change=2),
        result(root_mean_squared_error=55.0),
        result(root_mean_squared_error=54.0),
    )
    assert row["passed"] is False
    first, second = row["reason"].split("; ")
    assert first == (
        "Metric root_mean_squared_error value threshold check failed: candidate model "
        "root_mean_squared_error = 55.0, root_mean_squared_error threshold = 50.0."
    )
    assert "minimum absolute change check failed" in second
    assert "baseline model root_mean_squared_error = 54.0" in second


@pytest.mark.parametrize(("candidate", "passed"), [(39.0, True), (40.0, True), (41.0, False)])
def test_no_worse_than_the_champion_is_inclusive(candidate, passed):
    row = gate_metric(
        "root_mean_squared_error",
        spec(min_absolute_change=0),
        result(root_mean_squared_error=candidate),
        result(root_mean_squared_error=40.0),
    )
    assert row["passed"] is passed, row["reason"]
    assert (row["reason"] == "") is passed


def test_without_a_champion_only_the_users_limit_applies():
    row = gate_metric(
        "root_mean_squared_error", spec(threshold=50, min_absolute_change=0),
        result(root_mean_squared_error=49.0), None,
    )  # fmt: skip
    assert row["passed"] is True
    assert row["threshold"] == "<= 50; <= champion (not applied: no champion)"
