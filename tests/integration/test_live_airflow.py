"""
The main flow against live Airflow services (api-server, scheduler, dag-processor, triggerer) and a live
MLflow server, only through public HTTP APIs: trigger, wait for the approval request, answer it through the
HITL REST API, read the outcome from the MLflow registry and ask the model endpoint which version serves.

The tests of this module share one stack and run in order: each builds on the registry state the last left.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_mlops.demo.run import MODEL_NAME, WORSE_PARAMS, sample_records
from airflow_mlops.demo.stack import DAG_ID, ROLLBACK_DAG_ID, LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.live]


@pytest.fixture(scope="module")
def stack(live_stack):
    return live_stack


@pytest.fixture(scope="module")
def versions():
    """Versions the tests of this module created, by role."""
    return {}


def _approve_next_run(stack: LocalStack, conf: dict, user: str = "reviewer", option: str = "Approve") -> str:
    run_id = stack.trigger(DAG_ID, conf)
    state = stack.wait_for_approval_request(DAG_ID, run_id, "approve")
    assert state == "awaiting_input", stack.task_states(DAG_ID, run_id)
    return run_id


def test_approved_candidate_becomes_champion_and_serves(stack, versions):
    assert stack.alias_version(MODEL_NAME) is None

    run_id = _approve_next_run(stack, {"model_name": MODEL_NAME})
    candidate = str(stack.xcom(DAG_ID, run_id, "register")["version"])
    detail = stack.hitl_detail(DAG_ID, run_id, "approve")
    assert MODEL_NAME in detail["subject"]
    assert f"v{candidate}" in detail["subject"]
    assert "accuracy" in detail["body"]

    # A user who is not among the approvers is refused, and the request keeps waiting.
    refused = stack.respond(DAG_ID, run_id, "approve", "Approve", user="intruder")
    assert refused.status_code == 403, refused.text
    assert stack.task_states(DAG_ID, run_id)["approve"] == "awaiting_input"

    accepted = stack.respond(DAG_ID, run_id, "approve", "Approve", user="reviewer", comment="looks good")
    assert accepted.status_code == 200, accepted.text
    assert stack.wait_for_run(DAG_ID, run_id) == "success", stack.task_states(DAG_ID, run_id)
    assert stack.alias_version(MODEL_NAME) == candidate
    served_by, predictions = stack.predict(sample_records(stack))
    assert served_by == candidate
    assert len(predictions["predictions"]) == 3
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert decision["decision"] == "approved"
    assert decision["approver"] == "reviewer"
    versions["first"] = candidate

    # Who approved which version, based on what, trained on which data: from the registry alone.
    lineage = subprocess.run(
        [sys.executable, "-m", "airflow_mlops.cli", "lineage", MODEL_NAME, "champion",
         "--tracking-uri", stack.mlflow_url, "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    chain = json.loads(lineage)
    assert chain["version"] == candidate
    assert "champion" in chain["aliases"]
    assert chain["data"]["uri"] == stack.xcom(DAG_ID, run_id, "ingest")["uri"]
    assert chain["approval"]["decision"] == "approved"
    assert chain["approval"]["approver"] == "reviewer"
    assert chain["approval"]["comment"] == "looks good"
    assert chain["evaluation"]["decision"] == "passed"
    assert chain["training_run"]["status"] == "FINISHED"


def test_worse_candidate_stops_at_the_gate(stack, versions):
    champion = versions["first"]
    run_id = stack.trigger(DAG_ID, {"model_name": MODEL_NAME, "model_params": WORSE_PARAMS})
    stack.wait_for_run(DAG_ID, run_id)
    states = stack.task_states(DAG_ID, run_id)
    assert states["evaluate"] == "success", states
    assert {states[t] for t in ("infra_validate", "approve", "promote", "deploy")} == {"skipped"}, states
    assert stack.xcom(DAG_ID, run_id, "evaluate")["passed"] is False
    assert stack.alias_version(MODEL_NAME) == champion
    assert stack.predict(sample_records(stack))[0] == champion


def test_rollback_dag_serves_the_previous_champion_again(stack, versions):
    # A second approved version (same data and settings: it ties the champion, which the gate allows).
    run_id = _approve_next_run(stack, {"model_name": MODEL_NAME})
    second = str(stack.xcom(DAG_ID, run_id, "register")["version"])
    assert stack.respond(DAG_ID, run_id, "approve", "Approve").status_code == 200
    assert stack.wait_for_run(DAG_ID, run_id) == "success", stack.task_states(DAG_ID, run_id)
    assert stack.predict(sample_records(stack))[0] == second

    rollback = stack.trigger(ROLLBACK_DAG_ID, {"model_name": MODEL_NAME, "reason": "latency regression"})
    assert stack.wait_for_run(ROLLBACK_DAG_ID, rollback) == "success", stack.task_states(ROLLBACK_DAG_ID, rollback)
    assert stack.alias_version(MODEL_NAME) == versions["first"]
    assert stack.predict(sample_records(stack))[0] == versions["first"]


def test_rejected_candidate_is_not_promoted(stack):
    model = f"{MODEL_NAME}_rejected"
    run_id = _approve_next_run(stack, {"model_name": model})
    rejected = stack.respond(DAG_ID, run_id, "approve", "Reject", user="reviewer", comment="not now")
    assert rejected.status_code == 200, rejected.text
    stack.wait_for_run(DAG_ID, run_id)
    states = stack.task_states(DAG_ID, run_id)
    assert (states["promote"], states["deploy"]) == ("skipped", "skipped"), states
    assert stack.alias_version(model) is None
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert decision["decision"] == "rejected"
    assert decision["comment"] == "not now"
