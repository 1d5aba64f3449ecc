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

from airflow_mlops.approvals import EXIT_ALREADY_ANSWERED, EXIT_REFUSED
from airflow_mlops.demo.run import MODEL_NAME, WORSE_PARAMS, sample_records
from airflow_mlops.demo.stack import DAG_ID, ROLLBACK_DAG_ID, LocalStack
from tests.support.cli import run_cli as _cli

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
    assert f"From a shell: `airflow-mlops approve {DAG_ID} '{run_id}' --as USER" in detail["body"]

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
    assert {states[t] for t in ("infra_validate", "replay", "approve", "promote", "deploy")} == {"skipped"}, states
    assert stack.xcom(DAG_ID, run_id, "evaluate")["passed"] is False
    assert stack.alias_version(MODEL_NAME) == champion
    assert stack.predict(sample_records(stack))[0] == champion

    # The run never asked for an approval: the command says so, and what does wait (nothing, here).
    answered = _cli(stack, "approve", DAG_ID, run_id, "--as", "reviewer")
    assert answered.returncode == 1
    assert f"No pending approval for {DAG_ID} {run_id}; the run is success." in answered.stderr
    assert "Nothing is waiting for approval." in answered.stderr


def test_rollback_dag_serves_the_previous_champion_again(stack, versions):
    # A second approved version (same data and settings: it ties the champion, which the gate allows).
    run_id = _approve_next_run(stack, {"model_name": MODEL_NAME})
    second = str(stack.xcom(DAG_ID, run_id, "register")["version"])

    # Approved from a shell with the command, after the wrong password, a user who may not approve and a
    # run that does not exist were each refused with a message saying so.
    wrong = _cli(stack, "approve", DAG_ID, run_id, "--as", "reviewer", password="not-the-password")
    assert wrong.returncode == 1
    assert f"Cannot log in to {stack.airflow_url} as 'reviewer': wrong user name or password" in wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout
    intruder = _cli(
        stack, "approve", DAG_ID, run_id, "--as", "intruder", password=stack.passwords["intruder"]
    )
    assert intruder.returncode == EXIT_REFUSED
    assert "intruder may not answer" in intruder.stderr
    assert "is not a respondent" in intruder.stderr
    missing = _cli(stack, "approve", DAG_ID, "no_such_run", "--as", "reviewer")
    assert missing.returncode == 1
    assert f"DAG '{DAG_ID}' has no run 'no_such_run'." in missing.stderr
    subject = f"{MODEL_NAME} v{second}: promote over v"
    assert f"Waiting for approval:\n  {DAG_ID} {run_id} (task approve): {subject}" in missing.stderr
    assert stack.task_states(DAG_ID, run_id)["approve"] == "awaiting_input"

    # The command returns once the task took the answer, and says that it accepted it.
    approved = _cli(stack, "approve", DAG_ID, run_id, "--as", "reviewer", "--comment", "ties the champion")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"Answered Approve to {DAG_ID} {run_id} (task approve): {subject}" in approved.stdout
    assert (
        f"Approved: the task accepted the answer ({MODEL_NAME} v{second} approved by reviewer; task approve "
        "success, try "
    ) in approved.stdout
    assert stack.task_states(DAG_ID, run_id)["approve"] == "success"
    assert stack.wait_for_run(DAG_ID, run_id) == "success", stack.task_states(DAG_ID, run_id)
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert (decision["decision"], decision["approver"], decision["comment"]) == (
        "approved", "reviewer", "ties the champion",
    )  # fmt: skip
    assert stack.predict(sample_records(stack))[0] == second
    again = _cli(stack, "reject", DAG_ID, run_id, "--as", "reviewer")
    assert again.returncode == EXIT_ALREADY_ANSWERED
    assert "was already answered: Approve by reviewer" in again.stderr

    rollback = stack.trigger(ROLLBACK_DAG_ID, {"model_name": MODEL_NAME, "reason": "latency regression"})
    assert stack.wait_for_run(ROLLBACK_DAG_ID, rollback) == "success", stack.task_states(
        ROLLBACK_DAG_ID, rollback
    )
    assert stack.alias_version(MODEL_NAME) == versions["first"]
    assert stack.predict(sample_records(stack))[0] == versions["first"]


def test_rejected_candidate_is_not_promoted(stack):
    model = f"{MODEL_NAME}_rejected"
    run_id = _approve_next_run(stack, {"model_name": model})
    # Rejected with the command; the Airflow URL and the user come from the environment.
    rejected = _cli(
        stack, "reject", DAG_ID, run_id, "--comment", "not now", url=False,
        AIRFLOW__API__BASE_URL=stack.airflow_url, MLOPS_AIRFLOW_USER="reviewer",
    )  # fmt: skip
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert f"Answered Reject to {DAG_ID} {run_id} (task approve)" in rejected.stdout
    version = stack.xcom(DAG_ID, run_id, "register")["version"]
    assert (
        f"Rejected: the task took the answer ({model} v{version} rejected by reviewer; task approve success"
    ) in rejected.stdout
    stack.wait_for_run(DAG_ID, run_id)
    states = stack.task_states(DAG_ID, run_id)
    assert (states["promote"], states["deploy"]) == ("skipped", "skipped"), states
    assert stack.alias_version(model) is None
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert decision["decision"] == "rejected"
    assert decision["approver"] == "reviewer"
    assert decision["comment"] == "not now"
