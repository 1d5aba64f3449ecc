"""The gate's decision and its reason, from the per-metric and per-slice rows. No Airflow, no MLflow."""

from __future__ import annotations

from airflow_mlops.evaluation.gate import describe_threshold, gate_decision


def metric_row(metric: str, passed: bool, reason: str = "") -> dict:
    return {"metric": metric, "passed": passed, "reason": reason}


def slice_row(segment: str, passed: bool) -> dict:
    return {
        "column": "region", "segment": segment, "metric": "accuracy_score", "candidate": 0.5,
        "champion": 0.9, "max_regression": 0.05, "passed": passed, "status": "pass" if passed else "fail",
    }  # fmt: skip


def test_a_pass_without_a_champion_says_only_absolute_thresholds_applied():
    passed, reason = gate_decision([metric_row("f1_score", True)], [], None, "no champion: first run")
    assert passed is True
    assert (
        reason
        == "all 1 gated metric(s) met their thresholds (no champion: first run; only absolute thresholds "
        "applied)"
    )


def test_a_pass_against_a_champion_with_slices_names_both_checks():
    passed, reason = gate_decision(
        [metric_row("f1_score", True)], [slice_row("north", True)], 3, "champion v3"
    )
    assert passed is True
    assert reason == "all 1 gated metric(s) met their thresholds; no slice regressed beyond its limit"


def test_a_rejection_lists_every_failed_metric_and_slice():
    rows = [metric_row("f1_score", False, "threshold check failed"), metric_row("recall_score", True)]
    passed, reason = gate_decision(
        rows, [slice_row("north", True), slice_row("south", False)], 3, "champion v3"
    )
    assert passed is False
    assert reason == (
        "f1_score: threshold check failed | slice accuracy_score on region=south: candidate 0.5000 vs "
        "champion 0.9000 (regression > 0.05)"
    )


def test_thresholds_are_described_in_the_metrics_direction():
    spec = {
        "threshold": 0.5,
        "min_absolute_change": 0.0,
        "min_relative_change": 0.1,
        "greater_is_better": False,
    }
    assert describe_threshold(spec, compare=True) == "<= 0.5; <= champion; <= champion -10%"
    assert describe_threshold(spec, compare=False) == (
        "<= 0.5; <= champion (not applied: no champion); <= champion -10% (not applied: no champion)"
    )
