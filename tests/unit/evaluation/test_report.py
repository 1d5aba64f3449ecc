"""The evaluation report and summaries, rendered from plain rows. No Airflow, no MLflow."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_mlops import tags as T
from airflow_mlops.evaluation.report import (
    champion_history,
    data_docs_uri,
    metrics_summary,
    render_report,
    upstream_summary,
)


def version(number: int, promoted_at: str | None, accuracy: float | None = None) -> SimpleNamespace:
    tags = {}
    if promoted_at:
        tags[T.PROMOTED_AT] = promoted_at
    if accuracy is not None:
        tags[T.EVALUATION_SUMMARY] = json.dumps({"metrics": {"accuracy_score": {"candidate": accuracy}}})
    return SimpleNamespace(version=str(number), tags=tags)


def test_past_champions_are_the_promoted_versions_oldest_first_without_the_candidate():
    versions = [
        version(3, "2026-03-01T00:00:00+00:00", 0.8),
        version(1, "2026-01-01T00:00:00+00:00", 0.7),
        version(2, None, 0.9),  # never promoted
        version(4, "2026-04-01T00:00:00+00:00"),  # promoted without an evaluation summary
        version(5, "2026-05-01T00:00:00+00:00", 0.95),  # the candidate itself
    ]
    history = champion_history(versions, ["accuracy_score"], candidate=5)
    assert [(entry["version"], entry["metrics"]["accuracy_score"]) for entry in history] == [
        (1, 0.7), (3, 0.8), (4, None),
    ]  # fmt: skip


def test_upstream_summaries_come_as_dicts_json_or_rendered_literals():
    assert upstream_summary(None, "drift_summary") is None
    assert upstream_summary('{"drift": false}', "drift_summary") == {"drift": False}
    assert upstream_summary(str({"success": True}), "validation_summary") == {"success": True}
    with pytest.raises(ValueError, match="validation_summary must render to a dict"):
        upstream_summary("[1, 2]", "validation_summary")
    assert data_docs_uri({"data_docs": "s3://docs/index.html"}) == "s3://docs/index.html"
    assert data_docs_uri(None) == ""


def test_metrics_summary_marks_only_gated_metrics():
    summary = metrics_summary(
        {"accuracy_score": 0.9, "log_loss": float("nan")},
        {"accuracy_score": 0.8},
        [{"metric": "accuracy_score", "passed": True}],
    )
    assert summary["accuracy_score"] == pytest.approx(
        {"candidate": 0.9, "champion": 0.8, "delta": 0.1, "passed": True}
    )
    assert summary["log_loss"] == {"candidate": None, "champion": None, "delta": None, "passed": None}


def test_a_report_without_champion_says_why_and_which_thresholds_apply():
    row = {
        "metric": "accuracy_score", "candidate": 0.9, "champion": None, "delta": None,
        "threshold": ">= 0.7", "shown": (0.9, None), "passed": True, "reason": "",
    }  # fmt: skip
    report = render_report(
        name="churn", version=2, champion=None, champion_note="no champion: first run",
        holdout_uri="/d#holdout",
        rows_count=10, target="label", model_type="classifier", rows=[row], passed=True, reason="ok",
        links={"evaluation_run": "http://m/#/run", "model_version": "", "data_docs": ""},
    )  # fmt: skip
    assert report.splitlines()[0] == "### Evaluation of `churn` v2 against no champion"
    assert "**No champion: first run**: only absolute thresholds apply" in report
    assert "| accuracy_score | n/a | 0.9000 | n/a | >= 0.7 | pass |" in report
    assert "**Decision: passed** — ok" in report
    assert "- [MLflow evaluation run](http://m/#/run)" in report
    assert "MLflow model version" not in report  # no URL, no link
