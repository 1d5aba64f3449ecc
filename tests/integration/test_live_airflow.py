"""
The main flow against live Airflow services (api-server, scheduler, dag-processor, triggerer) and a live
MLflow server, only through their public HTTP APIs: trigger, wait for the approval request, answer it through
the HITL REST API, and read the outcome from the MLflow registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from airflow_mlops.demo.run import MODEL_NAME, WORSE_PARAMS
from airflow_mlops.demo.stack import DAG_ID, LocalStack
from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.integration, pytest.mark.live]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("live-stack")
    live = LocalStack(home)
    live.start()
    try:
        yield live
    finally:
        live.stop()
        # Keep the service logs as test artifacts.
        if (home / "logs").exists():
            shutil.copytree(home / "logs", ARTIFACTS / "live-stack-logs", dirs_exist_ok=True)
        task_logs = live.airflow_home / "logs"
        if task_logs.exists():
            shutil.copytree(task_logs, ARTIFACTS / "live-stack-task-logs", dirs_exist_ok=True)


def _wait_for_approval(stack: LocalStack, run_id: str) -> None:
    state = stack.wait_for_approval_request(DAG_ID, run_id, "approve")
    assert state == "awaiting_input", stack.task_states(DAG_ID, run_id)


def test_approved_candidate_becomes_champion_and_a_worse_one_stops_at_the_gate(stack):
    assert stack.alias_version(MODEL_NAME) is None

    run_id = stack.trigger(DAG_ID, {"model_name": MODEL_NAME})
    _wait_for_approval(stack, run_id)
    candidate = stack.xcom(DAG_ID, run_id, "register")["version"]
    detail = stack.hitl_detail(DAG_ID, run_id, "approve")
    assert MODEL_NAME in detail["subject"] and str(candidate) in detail["subject"]
    assert "accuracy" in detail["body"]

    # A user who is not among the approvers is refused, and the request keeps waiting.
    refused = stack.respond(DAG_ID, run_id, "approve", "Approve", user="intruder")
    assert refused.status_code == 403, refused.text
    assert stack.task_states(DAG_ID, run_id)["approve"] == "awaiting_input"

    accepted = stack.respond(DAG_ID, run_id, "approve", "Approve", user="reviewer", comment="looks good")
    assert accepted.status_code == 200, accepted.text
    assert stack.wait_for_run(DAG_ID, run_id) == "success", stack.task_states(DAG_ID, run_id)
    assert stack.alias_version(MODEL_NAME) == str(candidate)
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert decision["decision"] == "approved" and decision["approver"] == "reviewer"

    # Who approved which version, based on what, trained on which data: from the registry alone.
    lineage = subprocess.run(
        [sys.executable, "-m", "airflow_mlops.cli", "lineage", MODEL_NAME, "champion",
         "--tracking-uri", stack.mlflow_url, "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    chain = json.loads(lineage)
    assert chain["version"] == str(candidate) and "champion" in chain["aliases"]
    assert chain["data"]["uri"] == stack.xcom(DAG_ID, run_id, "ingest")["uri"]
    assert chain["approval"]["decision"] == "approved" and chain["approval"]["approver"] == "reviewer"
    assert chain["approval"]["comment"] == "looks good"
    assert chain["evaluation"]["decision"] == "passed"
    assert chain["training_run"]["status"] == "FINISHED"

    # A candidate that sees a single feature is worse than the champion: the gate stops it.
    worse_run = stack.trigger(DAG_ID, {"model_name": MODEL_NAME, "model_params": WORSE_PARAMS})
    stack.wait_for_run(DAG_ID, worse_run)
    states = stack.task_states(DAG_ID, worse_run)
    assert states["evaluate"] == "success", states
    assert states["approve"] == "skipped" and states["promote"] == "skipped", states
    assert stack.xcom(DAG_ID, worse_run, "evaluate")["passed"] is False
    assert stack.alias_version(MODEL_NAME) == str(candidate)


def test_rejected_candidate_is_not_promoted(stack):
    model = f"{MODEL_NAME}_rejected"
    run_id = stack.trigger(DAG_ID, {"model_name": model})
    _wait_for_approval(stack, run_id)
    rejected = stack.respond(DAG_ID, run_id, "approve", "Reject", user="reviewer", comment="not now")
    assert rejected.status_code == 200, rejected.text
    stack.wait_for_run(DAG_ID, run_id)
    assert stack.task_states(DAG_ID, run_id)["promote"] == "skipped"
    assert stack.alias_version(model) is None
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert decision["decision"] == "rejected" and decision["comment"] == "not now"
