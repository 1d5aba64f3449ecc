"""The approval request a reviewer reads: a subject the Required Actions list shows whole, links that open."""

from __future__ import annotations

from airflow_mlops.links import http_links_only
from airflow_mlops.operators.approval import request_subject
from airflow_mlops.provenance import diff_rows, render_diff

REPORT = """\
| [![confusion matrix](http://mlflow:5000/get-artifact?path=confusion_matrix.png&run_uuid=ab)](http://mlflow:5000/#/r) \
| [![per class metrics](http://mlflow:5000/get-artifact?path=per_class_metrics.csv&run_uuid=ab)](http://mlflow:5000/#/p) |

- [MLflow evaluation run](https://mlflow.example.com/#/experiments/1/runs/ab)
- [Data Docs](file:///var/lib/airflow/data/datasets/churn/abc/_validation/index.html)
- [plot](/tmp/plot.png)"""


def test_the_subject_starts_with_model_and_version_and_fits_the_list():
    assert request_subject("demo_churn_classifier", 2, 1) == "demo_churn_classifier v2: promote over v1?"
    assert (
        request_subject("demo_churn_classifier", 1, None) == "demo_churn_classifier v1: promote to champion?"
    )
    assert len(request_subject("demo_churn_classifier", 12, 11)) < 50


def test_only_links_a_browser_can_open_are_kept():
    kept = http_links_only(REPORT)

    assert (
        "[![confusion matrix](http://mlflow:5000/get-artifact?path=confusion_matrix.png&run_uuid=ab)]" in kept
    )
    assert "[per class metrics](http://mlflow:5000/#/p)" in kept  # a CSV is no picture: its page is linked
    assert "[MLflow evaluation run](https://mlflow.example.com/#/experiments/1/runs/ab)" in kept
    assert "- Data Docs\n" in kept
    assert "file://" not in kept
    assert "/tmp/plot.png" not in kept


def test_without_a_champion_nothing_is_marked_changed():
    candidate = {"version": "1", "params": {"max_iter": "100"}, "code_version": None, "packages": {}}
    rows = diff_rows(candidate, None)
    markdown = render_diff(candidate, None, rows)

    assert not any(row["changed"] for row in rows)
    assert "No champion to compare with" in markdown
    assert "| hyper-parameters | max_iter | — | `100` |  |" in markdown
    assert "| code version | code version | — | `not recorded` |  |" in markdown
    assert "Not infra-validated" in markdown
    assert "| packages | packages | — | `not recorded` |  |" in markdown
