"""
ApproveModelOperator under the real scheduler: a request nobody answers times out and counts as Reject, the
operator's notifiers run when the request is made, and the user who triggered a run cannot approve it
(``airflow-mlops approve`` says the task refused the answer).

One LocalStack (Airflow services + MLflow on loopback) for the module, with a DAG folder holding one small DAG.
Rejection by a person and a refused non-approver are covered by test_live_airflow.py.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from urllib.parse import quote

import pytest
from mlflow import MlflowClient

from airflow_mlops import tags as T
from airflow_mlops.approvals import EXIT_REFUSED
from airflow_mlops.demo.stack import LocalStack
from tests.support.cli import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.live]

DAG_ID = "mlops_approval_timeout"
MODEL = "approval_timeout_model"
SELF_DAG_ID = "mlops_approval_self"

SELF_DAG_FILE = f"""
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_mlops.operators.approval import ApproveModelOperator

with DAG({SELF_DAG_ID!r}, schedule=None, catchup=False):
    ApproveModelOperator(
        task_id="approve", model_name={MODEL!r}, candidate_version=1, report="nothing to see"
    ) >> EmptyOperator(task_id="promote")
"""

RACE_DAG_ID = "mlops_approval_race"
#: An approval with retries, as the example DAGs have. A run whose conf names a ``gate`` file holds the approval's
#: first try before it asks, until that file exists: the test pauses the scheduler first. With ``lose_resume``,
#: try 1 fails as it resumes with the answer, as when Airflow lets the retry run instead. Two retries: when the
#: scheduler has already counted the answered try as up for retry, that injected failure takes a try of its own.
RACE_DAG_FILE = f"""
import time
from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_mlops.operators.approval import ApproveModelOperator


def hold_at_the_gate(context):
    conf = context["dag_run"].conf or {{}}
    gate = conf.get("gate")
    deadline = time.monotonic() + 600
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if gate and conf.get("lose_resume") and context["ti"].try_number == 1:
        asked = Path(gate + ".asked")
        if asked.exists():
            raise RuntimeError("try 1 lost as it resumed with the answer")
        asked.touch()


with DAG(
    {RACE_DAG_ID!r}, schedule=None, catchup=False,
    default_args={{"retries": 2, "retry_delay": timedelta(0)}},
):
    ApproveModelOperator(
        task_id="approve", model_name={MODEL!r}, candidate_version=1, report="nothing to see",
        pre_execute=hold_at_the_gate,
    ) >> EmptyOperator(task_id="promote")
"""

DAG_FILE = '''
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.bases.notifier import BaseNotifier

from airflow_mlops.operators.approval import ApproveModelOperator


class RecordingNotifier(BaseNotifier):
    """Writes what it was told to a file: proof it ran, and with which request."""

    template_fields = ("message",)

    def __init__(self, path: str, message: str):
        super().__init__()
        self.path = path
        self.message = message

    def notify(self, context):
        Path(self.path).write_text(json.dumps({{"message": self.message, "task_id": context["ti"].task_id}}))


with DAG({dag_id!r}, schedule=None, catchup=False, params={{"model_name": {model!r}, "version": 1}}):
    approve = ApproveModelOperator(
        task_id="approve",
        model_name="{{{{ params.model_name }}}}",
        candidate_version="{{{{ params.version }}}}",
        report="nothing to see",
        response_timeout=timedelta(seconds=5),
        notifiers=[RecordingNotifier({marker!r}, "asked: {{{{ task.subject }}}}")],
    )
    approve >> EmptyOperator(task_id="promote")
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("approval-stack")
    dags = home / "dags"
    dags.mkdir()
    marker = home / "notified.json"
    (dags / "approval_timeout.py").write_text(
        textwrap.dedent(DAG_FILE).format(dag_id=DAG_ID, model=MODEL, marker=str(marker))
    )
    (dags / "approval_self.py").write_text(SELF_DAG_FILE)
    (dags / "approval_race.py").write_text(RACE_DAG_FILE)
    live = LocalStack(home, dags_folder=dags)
    live.marker = marker
    try:
        live.start()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def candidate(stack) -> MlflowClient:
    """Version 1 of the model, registered before the DAG runs; no champion."""
    client = MlflowClient(stack.mlflow_url, registry_uri=stack.mlflow_url)
    client.create_registered_model(MODEL)
    run = client.create_run(client.create_experiment("approval-timeout"))
    client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return client


def test_an_unanswered_request_times_out_as_reject_after_notifying(stack, candidate):
    run_id = stack.trigger(DAG_ID)
    state = stack.wait_for_run(DAG_ID, run_id, timeout=300)

    states = stack.task_states(DAG_ID, run_id)
    assert state == "success", states
    assert states == {"approve": "success", "promote": "skipped"}
    decision = stack.xcom(DAG_ID, run_id, "approve")
    assert decision["decision"] == "timed_out"
    assert decision["option"] == "Reject"
    assert decision["approver"] is None
    tags = candidate.get_model_version(MODEL, "1").tags
    assert tags[T.APPROVAL_DECISION] == "timed_out"
    assert tags[T.APPROVAL_APPROVER] == ""
    assert T.CHAMPION not in candidate.get_registered_model(MODEL).aliases
    # The notifier ran when the request was made, with the request the operator built.
    notified = json.loads(stack.marker.read_text())
    assert notified == {"message": f"asked: {MODEL} v1: promote to champion?", "task_id": "approve"}


def test_the_user_who_triggered_a_run_cannot_approve_it(stack, candidate):
    stack.wait_for_dag(SELF_DAG_ID)
    stack.api("PATCH", f"/dags/{SELF_DAG_ID}", json={"is_paused": False}).raise_for_status()
    triggered = stack.api(
        "POST", f"/dags/{SELF_DAG_ID}/dagRuns", user="reviewer", json={"logical_date": None, "conf": {}}
    )
    assert triggered.status_code == 200, triggered.text
    run_id = triggered.json()["dag_run_id"]
    assert stack.wait_for_approval_request(SELF_DAG_ID, run_id) == "awaiting_input"

    # Airflow takes the answer; the task refuses it, and the command says so with a non-zero exit.
    answered = run_cli(stack, "approve", SELF_DAG_ID, run_id, "--as", "reviewer", "--comment", "mine")

    assert answered.returncode == EXIT_REFUSED, answered.stdout + answered.stderr
    assert f"Answered Approve to {SELF_DAG_ID} {run_id} (task approve)" in answered.stdout
    assert (
        f"airflow-mlops approve: Refused: the task refused the approval of {MODEL} v1 by reviewer, who "
        "triggered this run; nobody approves their own run (task approve failed, try "
    ) in answered.stderr
    assert "decision self_approval_refused). The version stays unapproved" in answered.stderr
    assert "Approved:" not in answered.stdout
    assert stack.wait_for_run(SELF_DAG_ID, run_id, timeout=300) == "failed"
    states = stack.task_states(SELF_DAG_ID, run_id)
    assert states == {"approve": "failed", "promote": "upstream_failed"}
    assert stack.task_instances(SELF_DAG_ID, run_id)["approve"]["try_number"] == 1
    decision = stack.xcom(SELF_DAG_ID, run_id, "approve")
    assert (decision["decision"], decision["approver"]) == ("self_approval_refused", "reviewer")
    assert candidate.get_model_version(MODEL, "1").tags[T.APPROVAL_DECISION] == "self_approval_refused"
    assert T.CHAMPION not in candidate.get_registered_model(MODEL).aliases


def test_approve_without_waiting_says_the_outcome_was_not_checked(stack, candidate):
    run_id = stack.trigger(SELF_DAG_ID)  # triggered by admin: reviewer's approval is accepted
    assert stack.wait_for_approval_request(SELF_DAG_ID, run_id) == "awaiting_input"

    answered = run_cli(stack, "approve", SELF_DAG_ID, run_id, "--as", "reviewer", "--no-wait")

    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert f"Answered Approve to {SELF_DAG_ID} {run_id} (task approve)" in answered.stdout
    assert "The outcome was not checked (--no-wait): the task may still refuse the answer." in answered.stdout
    assert "Waiting" not in answered.stdout
    assert "Approved:" not in answered.stdout
    # The answer stands: the run goes on as approved by reviewer.
    assert stack.wait_for_run(SELF_DAG_ID, run_id, timeout=300) == "success"
    assert stack.xcom(SELF_DAG_ID, run_id, "approve")["approver"] == "reviewer"


def test_the_demo_runs_a_dag_of_the_users_folder_and_says_how_to_approve(stack, candidate, capsys):
    """What ``airflow-mlops demo --dags FOLDER [--dag ID]`` does once its stack is up, on this one."""
    from airflow_mlops.demo.run import choose_dag, see_run_through
    from airflow_mlops.demo.stack import StackError

    # Several DAGs in the folder: the demo asks which one.
    with pytest.raises(
        StackError,
        match=f"holds several DAGs \\({RACE_DAG_ID}, {SELF_DAG_ID}, {DAG_ID}\\): pick one with --dag",
    ):
        choose_dag(stack, None)
    assert choose_dag(stack, SELF_DAG_ID) == SELF_DAG_ID

    # Without --auto-approve it prints the command that answers; this request goes unanswered and times out.
    waited = see_run_through(stack, DAG_ID, {}, auto_approve=False, timeout=300)
    printed = capsys.readouterr().out
    assert waited["tasks"] == {"approve": "success", "promote": "skipped"}
    command = (
        f"MLOPS_AIRFLOW_PASSWORD=reviewer-pw airflow-mlops approve {DAG_ID} '{waited['run_id']}' --as reviewer "
        f"--url {stack.airflow_url}"
    )
    assert f"[demo] approval requested by task approve: {MODEL} v1: promote to champion?" in printed
    assert f"[demo] approve it from another shell: {command}" in printed

    # With --auto-approve the run goes on as approved by 'reviewer' (the demo triggers as 'admin'). It answers
    # at once: the approval's retry keeps an answer that came too fast for Airflow 3.3.2.
    approved = see_run_through(stack, RACE_DAG_ID, {}, auto_approve=True, timeout=300)
    assert (approved["state"], approved["tasks"]) == ("success", {"approve": "success", "promote": "success"})
    decision = stack.xcom(RACE_DAG_ID, approved["run_id"], "approve")
    assert (decision["decision"], decision["approver"]) == ("approved", "reviewer")
    assert "[demo] approved as 'reviewer' through the HITL REST API" in capsys.readouterr().out


def test_an_answer_given_while_airflow_retries_the_try_is_adopted_and_nobody_is_asked_again(
    stack, candidate, tmp_path
):
    """
    The reviewer answers while the scheduler has not yet handled the exit of the try that asked.

    On Airflow 3.3.2 that happens when someone answers within seconds of the request; pausing the scheduler
    (SIGSTOP) from before the task asks until after the answer makes the order certain: the scheduler then
    marks the try the answer resumed up_for_retry. Whether Airflow still runs that try's resumption or starts
    the retry depends on timing; the DAG makes the resumption fail, so the retry runs and must adopt the answer.
    """
    gate = tmp_path / "gate"
    run_id = stack.trigger(RACE_DAG_ID, {"gate": str(gate), "lose_resume": True})
    assert stack.wait_for_task_state(RACE_DAG_ID, run_id, "approve", {"running"}, timeout=300) == "running"
    scheduler = stack.pid("scheduler")
    os.kill(scheduler, signal.SIGSTOP)
    try:
        gate.touch()  # the task asks now; its exit waits for the scheduler
        asked = stack.wait_for_task_state(RACE_DAG_ID, run_id, "approve", {"awaiting_input"}, timeout=300)
        assert asked == "awaiting_input"
        answered = stack.respond(
            RACE_DAG_ID, run_id, "approve", "Approve", user="reviewer", comment="at once"
        )
        assert answered.status_code == 200, answered.text
    finally:
        os.kill(scheduler, signal.SIGCONT)

    deadline = time.monotonic() + 300
    while (state := stack.run_state(RACE_DAG_ID, run_id)) not in ("success", "failed"):
        approve = stack.task_instances(RACE_DAG_ID, run_id)["approve"]
        assert approve["state"] != "awaiting_input", (
            f"the reviewer was asked again (try {approve['try_number']})"
        )
        assert time.monotonic() < deadline, (
            f"the run did not finish: {stack.task_states(RACE_DAG_ID, run_id)}"
        )
        time.sleep(2)

    assert state == "success", stack.task_states(RACE_DAG_ID, run_id)
    assert stack.task_states(RACE_DAG_ID, run_id) == {"approve": "success", "promote": "success"}
    decision = stack.xcom(RACE_DAG_ID, run_id, "approve")
    assert (decision["decision"], decision["approver"], decision["comment"]) == (
        "approved",
        "reviewer",
        "at once",
    )
    tags = candidate.get_model_version(MODEL, "1").tags
    assert (tags[T.APPROVAL_DECISION], tags[T.APPROVAL_APPROVER]) == ("approved", "reviewer")
    # One answer, the reviewer's, and no request left waiting for another.
    detail = stack.hitl_detail(RACE_DAG_ID, run_id, "approve")
    assert (detail["response_received"], detail["chosen_options"]) == (True, ["Approve"])
    assert detail["responded_by_user"]["name"] == "reviewer"
    waiting = stack.api(
        "GET",
        f"/dags/{RACE_DAG_ID}/dagRuns/{quote(run_id)}/hitlDetails",
        params={"response_received": "false"},
    ).json()
    assert waiting["total_entries"] == 0, waiting
    # The retry took the answer instead of asking (try 2, or 3 where the lost resumption took a try of its own).
    approve = stack.task_instances(RACE_DAG_ID, run_id)["approve"]
    assert approve["try_number"] in (2, 3)
    log = stack.api(
        "GET",
        f"/dags/{RACE_DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/approve/logs/{approve['try_number']}",
        params={"full_content": "true"},
    ).json()
    assert "Adopting the answer ['Approve'] by reviewer" in json.dumps(log["content"])
