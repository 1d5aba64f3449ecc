"""
OpenLineage events of a real run: the continuous-training DAG up to the approval, then a deploy.

One run in a module fixture, many assertions on its events.

The real ``apache-airflow-providers-openlineage`` listener writes the events through its file transport. The
DAGs run in a child process: the provider reads its configuration once per process, and the rest of the suite
runs without it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_mlops.demo.data import make_demo_data
from tests.support.lineage import MODEL, REPO, UP_TO_APPROVAL
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytest.importorskip("airflow.providers.openlineage")

pytestmark = pytest.mark.integration

COLUMNS = ["tenure_months", "monthly_spend", "support_calls", "usage_hours", "discount_rate", "label"]


@pytest.fixture(scope="module")
def lineage_run(airflow_db, mlflow_server, tmp_path_factory):
    """One run of the pipeline with the file transport; its events by job name, its states and version."""
    folder = tmp_path_factory.mktemp("openlineage")
    source = make_demo_data(folder / "customers.csv", rows=400)
    events_file = folder / "events.jsonl"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server.uri,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "mlops-tests",
    }
    code = (
        "import sys; from tests.support.lineage import run_pipeline; "
        "run_pipeline(sys.argv[1], int(sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(source), str(_free_port())],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    # The result is the child's last JSON line; the OpenLineage listener may log after it.
    run = json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith('{"states"')))
    events: dict[str, list[dict]] = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        events.setdefault(event["job"]["name"], []).append(event)
    return {**run, "source": str(source), "events": events}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def complete(lineage_run, task_id: str, dag_id: str = "mlops_continuous_training") -> dict:
    (event,) = [e for e in lineage_run["events"][f"{dag_id}.{task_id}"] if e["eventType"] == "COMPLETE"]
    return event


def by_name(datasets: list[dict]) -> dict[str, dict]:
    return {dataset["name"]: dataset for dataset in datasets}


HOST = "file"  # local files: namespace "file", name the absolute path


def test_every_task_of_the_run_succeeds_and_reports_a_complete_event(lineage_run):
    assert set(lineage_run["states"].values()) == {"success"}, lineage_run["states"]
    for task_id in UP_TO_APPROVAL:
        assert complete(lineage_run, task_id)["job"]["namespace"] == "mlops-tests"
    assert complete(lineage_run, "deploy", "lineage_deploy")


def test_ingest_reports_the_source_file_and_the_snapshot_with_schema_and_row_counts(lineage_run):
    event = complete(lineage_run, "ingest")
    snapshot = lineage_run["snapshot"]

    (source,) = event["inputs"]
    assert (source["namespace"], source["name"]) == (HOST, lineage_run["source"])
    outputs = by_name(event["outputs"])
    assert set(outputs) == {
        snapshot,
        *(f"{snapshot}/{split}.parquet" for split in ("train", "valid", "holdout")),
    }
    assert {o["namespace"] for o in outputs.values()} == {HOST}
    whole = outputs[snapshot]
    assert sorted(field["name"] for field in whole["facets"]["schema"]["fields"]) == sorted(COLUMNS)
    assert {f["name"]: f["type"] for f in whole["facets"]["schema"]["fields"]}["label"] == "int64"
    assert whole["facets"]["version"]["datasetVersion"] == Path(snapshot).name
    assert whole["outputFacets"]["outputStatistics"]["rowCount"] == 400
    split_rows = [outputs[f"{snapshot}/{s}.parquet"]["outputFacets"]["outputStatistics"]["rowCount"]
                  for s in ("train", "valid", "holdout")]  # fmt: skip
    assert sum(split_rows) == 400
    assert split_rows[0] > split_rows[1] > 0


def test_validation_reports_each_expectation_as_a_passed_data_quality_assertion(lineage_run):
    (dataset,) = complete(lineage_run, "validate")["inputs"]
    assert (dataset["namespace"], dataset["name"]) == (HOST, lineage_run["snapshot"])
    assertions = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert len(assertions) >= len(COLUMNS)
    assert all(a["success"] for a in assertions), assertions
    label = {a["assertion"] for a in assertions if a.get("column") == "label"}
    assert "expect_column_values_to_be_in_set" in label
    assert "expect_column_values_to_not_be_null" in label
    assert dataset["inputFacets"]["dataQualityMetrics"]["rowCount"] == 400


def test_drift_reports_the_snapshot_it_checked(lineage_run):
    (dataset,) = complete(lineage_run, "drift")["inputs"]  # no champion yet: no reference
    assert (dataset["namespace"], dataset["name"]) == (HOST, lineage_run["snapshot"])


def test_training_reads_the_splits_and_outputs_the_model_that_registration_turns_into_a_version(
    lineage_run, mlflow_server
):
    snapshot = lineage_run["snapshot"]
    train = complete(lineage_run, "train")
    assert {(d["namespace"], d["name"]) for d in train["inputs"]} == {
        (HOST, f"{snapshot}/train.parquet"), (HOST, f"{snapshot}/valid.parquet")
    }  # fmt: skip
    (model,) = train["outputs"]
    assert model["namespace"] == mlflow_server.uri
    assert model["name"].startswith(("models/m-", "runs/"))

    register = complete(lineage_run, "register")
    (registered,) = register["inputs"]
    assert (registered["namespace"], registered["name"]) == (model["namespace"], model["name"])
    (version,) = register["outputs"]
    assert (version["namespace"], version["name"]) == (
        mlflow_server.uri, f"models/{MODEL}/{lineage_run['version']}"
    )  # fmt: skip


def test_evaluation_reads_the_holdout_and_the_candidate_with_the_gate_as_assertions(
    lineage_run, mlflow_server
):
    inputs = by_name(complete(lineage_run, "evaluate")["inputs"])
    candidate = inputs[f"models/{MODEL}/{lineage_run['version']}"]
    assert candidate["namespace"] == mlflow_server.uri
    (gate,) = candidate["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert gate["assertion"] == "gate accuracy_score"
    assert gate["success"] is True
    assert float(gate["actual"]) >= 0.7
    assert inputs[f"{lineage_run['snapshot']}/holdout.parquet"]["namespace"] == HOST


def test_deploy_reports_the_version_and_the_endpoint_serving_it(lineage_run, mlflow_server):
    deploy = complete(lineage_run, "deploy", "lineage_deploy")
    inputs = by_name(deploy["inputs"])
    version = f"models/{MODEL}/{lineage_run['version']}"
    assert inputs[version]["namespace"] == mlflow_server.uri
    (endpoint,) = deploy["outputs"]
    assert endpoint["namespace"].startswith("http://127.0.0.1:")
