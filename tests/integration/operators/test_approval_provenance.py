"""What a reviewer sees changed between a candidate and the champion, read from a real MLflow server."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from airflow.sdk import DAG

from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.provenance import per_class_metrics, render_diff, version_provenance
from tests.support.provenance import COMMIT, QUERY, register_champion_and_candidate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(client, tmp_path_factory) -> dict:
    return register_champion_and_candidate(client, tmp_path_factory.mktemp("provenance"))


@pytest.fixture(scope="module")
def provenance(client, model) -> dict:
    return {
        "candidate": version_provenance(client, model["name"], model["candidate"]),
        "champion": version_provenance(client, model["name"], model["champion"]),
    }


def test_a_version_says_what_it_was_trained_with_and_where_its_data_came_from(provenance):
    candidate, champion = provenance["candidate"], provenance["champion"]

    assert candidate["params"] == {"max_iter": "300", "C": "1.0"}
    assert list(candidate["signature"]["inputs"]) == ["a", "b", "c"]
    assert candidate["code_version"] == COMMIT
    assert {"sklearn", "python", "mlflow"} <= set(candidate["packages"])
    assert candidate["data"]["source"] == {"kind": "sql", "connection": "warehouse", "query": QUERY}
    assert candidate["infra_validation"]["latency_ms"]["p95"] == 7.4
    assert champion["code_version"] is None
    (obj,) = champion["data"]["source"]["objects"]
    assert obj["uri"] == "s3://raw/penguins.csv"
    assert obj["etag"] == '"9b2cf535f27731c974343645a3985328"'
    assert obj["modified"] == "2025-12-01T09:40:00+00:00"


def test_the_diff_marks_what_changed_from_the_champion(provenance):
    markdown = render_diff(provenance["candidate"], provenance["champion"])
    rows = {
        line.split(" | ")[1]: line
        for line in markdown.splitlines()
        if line.startswith("| ") and " | " in line
    }

    assert "`100` | `300` | **changed**" in rows["max_iter"]
    assert rows["C"].endswith("| `1.0` | `1.0` |  |")  # unchanged: not marked
    assert "`absent` | `double` | **changed**" in rows["c"]  # a feature added
    assert "| `s3://raw/penguins.csv` | `connection warehouse` | **changed** |" in rows["source"]
    assert QUERY in rows["query"]
    assert f"`not recorded` | `{COMMIT}` | **changed**" in rows["code version"]
    assert "| candidate | 3.1 | 7.4 | 9.02 |" in markdown  # latency p50, p95, max
    assert "Smoke test **passed** on the `local` target, 20 requests answered (20 sample rows)." in markdown


def test_per_class_metrics_are_a_table_read_from_the_evaluation_run(client, provenance):
    rows = per_class_metrics(client, provenance["candidate"]["evaluation"])
    markdown = render_diff({**provenance["candidate"], "per_class": rows}, provenance["champion"])

    assert [row["positive_class"] for row in rows] == ["Adelie", "Chinstrap", "Gentoo"]
    assert (
        "| class | true negatives | false positives | false negatives | true positives | recall | precision | f1 score |"
        in markdown
    )
    assert "| Chinstrap | 45 | 1 | 3 | 11 | 0.7857 | 0.9167 | 0.8462 |" in markdown


def test_the_approval_request_shows_the_changes_with_a_short_subject_and_only_web_links(model):
    report = (
        "### Evaluation\n\n| [![per class metrics](http://mlflow/get-artifact?path=per_class_metrics.csv&run_uuid=a)]"
        "(http://mlflow/#/runs/a) |\n\n- [Data Docs](file:///worker/data/_validation/index.html)"
    )
    with DAG("approve_provenance", schedule=None):
        op = ApproveModelOperator(
            task_id="approve", model_name=model["name"], candidate_version=model["candidate"], report=report,
            response_timeout=timedelta(hours=4),
        )  # fmt: skip
    op.prepare_request()

    assert op.subject == f"{model['name']} v2: promote over v1?"
    assert len(op.subject) < 50
    assert "| hyper-parameters | max_iter | `100` | `300` | **changed** |" in op.body
    assert "### Per-class metrics" in op.body
    assert "| latency (ms) | p50 | p95 | max |" in op.body
    assert f"**Approve** makes `{model['name']}` v2 the champion, replacing v1." in op.body
    # The report's CSV "picture" is a link to its page; the Data Docs page on the worker's disk is not linked.
    assert re.findall(r"\]\(([^)\s]*)\)", op.body) == ["http://mlflow/#/runs/a"]
    assert "file://" not in op.body
