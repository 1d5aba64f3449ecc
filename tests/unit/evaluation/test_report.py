"""The evaluation report and summaries, rendered from plain rows. No Airflow, no MLflow."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_mlops import tags as T
from airflow_mlops.evaluation.report import (
    artifact_url,
    champion_history,
    data_docs_uri,
    metrics_summary,
    plot_artifacts,
    render_report,
    short_location,
    upstream_summary,
)

RUN = "0123456789abcdef0123456789abcdef"
SNAPSHOT = "/tmp/worker/data/datasets/churn/41c0ee82f3d3d06b2fb4bd857637a069ad4ed4b0025496591d8858e42b9c20e1"


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
    assert "| accuracy_score | 0.9000 | n/a | n/a | >= 0.7 | pass |" in report
    assert "**Decision: passed** — ok" in report
    assert "- [MLflow evaluation run](http://m/#/run)" in report
    assert "MLflow model version" not in report  # no URL, no link


def gate_row(metric, candidate, champion, threshold, passed):
    return {
        "metric": metric, "candidate": candidate, "champion": champion, "delta": candidate - champion,
        "threshold": threshold, "shown": (candidate, champion), "passed": passed, "reason": "",
    }  # fmt: skip


def full_report(**overrides):
    rows = [gate_row("accuracy_score", 0.81, 0.78, ">= 0.7; >= champion", True)]
    metrics = metrics_summary(
        {"accuracy_score": 0.81, "f1_score": 0.7, "business_cost": 1234.5, "false_negatives": 56.0},
        {"accuracy_score": 0.78, "f1_score": 0.72, "business_cost": 1500.0, "false_negatives": 61.0},
        rows,
    )
    drift = {
        "drift": True,
        "dataset": SNAPSHOT,
        "reference": SNAPSHOT.replace("41c0", "9999"),
        "report": f"{SNAPSHOT}/_drift/9999ee82f3d3d06b/report.json",
        "missing_features": ["region"],
        "added_features": [],
        "drifted_features": ["tenure"],
        "features": {
            "spend": {
                "kind": "numeric", "metrics": {"psi": 0.01, "ks": 0.02, "ks_pvalue": 0.9, "null_rate": 0.0},
                "thresholds": {"psi": 0.2, "ks": 0.2, "null_rate": 0.1}, "exceeded": [],
            },
            "tenure": {
                "kind": "numeric", "metrics": {"psi": 0.45, "ks": 0.31, "ks_pvalue": 0.0, "null_rate": 0.0},
                "thresholds": {"psi": 0.2, "ks": 0.2, "null_rate": 0.1}, "exceeded": ["ks", "psi"],
            },
        },
    }  # fmt: skip
    validation = {
        "success": True, "dataset": f"{SNAPSHOT}#train", "name": "churn", "snapshot_id": SNAPSHOT[-64:],
        "split": "train", "rows": 3000, "evaluated": 7, "successful": 7, "unsuccessful": 0, "failed": [],
        "data_docs": f"{SNAPSHOT}/_docs/index.html",
    }  # fmt: skip
    arguments = dict(
        name="churn", version=4, champion=3, champion_note="", holdout_uri=f"{SNAPSHOT}#holdout",
        rows_count=600, target="label", model_type="classifier", rows=rows, passed=True,
        reason="all 1 gated metric(s) met their thresholds", metrics=metrics,
        upstream={"validation": validation, "drift": drift},
        links={"evaluation_run": "http://mlflow:5000/#/experiments/1/runs/r", "model_version": "", "data_docs": ""},
        artifacts={
            "roc_curve_plot": f"mlflow-artifacts:/1/{RUN}/artifacts/roc_curve_plot.png",
            "confusion_matrix": f"mlflow-artifacts:/1/{RUN}/artifacts/confusion_matrix.png",
            "champion_history": f"runs:/{RUN}/evaluation/champion_history.png",
        },
        mlflow_url="http://user:secret@mlflow:5000/", experiment_id="1",
    )  # fmt: skip
    arguments.update(overrides)
    return render_report(**arguments)


def test_the_report_opens_with_the_decision_and_shows_every_metric_in_one_table():
    report = full_report()
    lines = report.splitlines()
    assert lines[2] == "**Decision: passed** — all 1 gated metric(s) met their thresholds"
    header = lines.index("| metric | candidate | champion | delta | gate | result |")
    table = lines[header + 2 : header + 6]
    assert table == [
        "| accuracy_score | 0.8100 | 0.7800 | +0.0300 | >= 0.7; >= champion | pass |",
        "| business_cost | 1234.5000 | 1500.0000 | -265.5000 | not gated | |",  # a custom metric shows too
        "| f1_score | 0.7000 | 0.7200 | -0.0200 | not gated | |",
        "| false_negatives | 56 | 61 | -5 | not gated | |",  # counts as counts
    ]


def test_drift_is_a_table_per_feature_with_the_drifted_first():
    report = full_report()
    assert (
        "- Drift: **drift detected**; reference `churn@9999ee82f3d3`; current `churn@41c0ee82f3d3`" in report
    )
    assert "full report `churn@41c0ee82f3d3/_drift/9999ee82f3d3d06b/report.json`" in report
    lines = report.splitlines()
    header = lines.index("| feature | statistic | value | threshold | drifted |")
    assert lines[header + 2 : header + 9] == [
        "| region | | | | **yes** (missing from the current data) |",
        "| tenure | ks | 0.31 | 0.2 | **yes** |",
        "| tenure | null_rate | 0 | 0.1 | no |",
        "| tenure | psi | 0.45 | 0.2 | **yes** |",
        "| spend | ks | 0.02 | 0.2 | no |",
        "| spend | null_rate | 0 | 0.1 | no |",
        "| spend | psi | 0.01 | 0.2 | no |",
    ]
    assert "{" not in report  # no raw JSON


def test_plots_are_images_from_the_mlflow_server_that_open_their_artifact_page():
    report = full_report()
    history = "http://mlflow:5000/get-artifact?path=evaluation%2Fchampion_history.png&run_uuid=" + RUN
    page = f"http://mlflow:5000/#/experiments/1/runs/{RUN}/artifactPath/evaluation/champion_history.png"
    lines = report.splitlines()
    header = lines.index("| champion history | confusion matrix | roc curve |")
    assert lines[header + 2].startswith(f"| [![champion history]({history})]({page}) | [![confusion matrix](")
    assert "secret" not in report  # the tracking URI's credentials are not shown


def test_the_report_shows_no_worker_paths():
    report = full_report()
    assert "/tmp" not in report
    assert "Holdout `churn@41c0ee82f3d3#holdout` (600 rows)" in report
    assert (
        "- Data validation: **passed**; 7 of 7 expectations met on `churn@41c0ee82f3d3#train` (3000 rows)"
        in report
    )


def test_without_an_mlflow_server_the_plots_are_named():
    report = full_report(mlflow_url="sqlite:///mlflow.db")
    assert "get-artifact" not in report
    assert "Logged in the evaluation run: `champion_history`, `confusion_matrix`, `roc_curve_plot`" in report


def test_locations_and_artifact_urls():
    assert short_location(f"{SNAPSHOT}#holdout") == "churn@41c0ee82f3d3#holdout"
    assert short_location("/srv/models/report.md") == "report.md"
    assert short_location("s3://lake/datasets/churn/abc#train") == "s3://lake/datasets/churn/abc#train"
    assert artifact_url("https://m.example.com", f"s3://bucket/mlflow/7/{RUN}/artifacts/plots/roc.png") == (
        f"https://m.example.com/get-artifact?path=plots%2Froc.png&run_uuid={RUN}"
    )
    assert artifact_url("https://m.example.com", "models:/churn/3") == ""
    assert artifact_url(None, f"runs:/{RUN}/a.png") == ""


def test_only_pictures_are_plots_of_the_report():
    result = SimpleNamespace(
        artifacts={
            "roc_curve_plot": SimpleNamespace(uri="mlflow-artifacts:/1/r/artifacts/roc_curve_plot.png"),
            "per_class_metrics": SimpleNamespace(uri="mlflow-artifacts:/1/r/artifacts/per_class_metrics.csv"),
            "confusion_matrix": "s3://b/1/r/artifacts/confusion_matrix.PNG",
        }
    )
    assert plot_artifacts(result) == {
        "confusion_matrix": "s3://b/1/r/artifacts/confusion_matrix.PNG",
        "roc_curve_plot": "mlflow-artifacts:/1/r/artifacts/roc_curve_plot.png",
    }
    assert plot_artifacts(SimpleNamespace(artifacts=None)) == {}
