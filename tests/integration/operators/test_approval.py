"""
ApproveModelOperator: the decision a HITL response (or its timeout) leaves in the registry and in XCom.

The events are the payloads Airflow 3.3 resumes an ``awaiting_input`` task with (see
``HITLDetail.as_resume_event_payload``); the live HITL REST path is covered by the live Airflow test.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import mlflow
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.api.datamodels._generated import DagRun, DagRunState, DagRunType
from airflow.sdk.exceptions import DownstreamTasksSkipped
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ApprovalRejectedError, ModelVersionNotFoundError, RegistryError
from airflow_mlops.operators.approval import SELF_APPROVAL_REFUSED, ApproveModelOperator
from tests.support.context import RecordingTI

pytestmark = pytest.mark.integration

RESPONDED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
REVIEWER = {"id": "42", "name": "reviewer"}


@pytest.fixture(scope="module")
def model_uri(client) -> str:
    x, y = make_classification(n_samples=60, n_features=3, n_informative=2, n_redundant=0, random_state=0)
    with mlflow.start_run(experiment_id=client.create_experiment(f"approval-tests-{uuid.uuid4().hex[:8]}")):
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, y), name="model", pip_requirements=["scikit-learn"]
        )
    return info.model_uri


@pytest.fixture
def model(client, model_uri) -> dict:
    """A model with champion v1 and candidate v2."""
    name = f"churn-{uuid.uuid4().hex[:8]}"
    mlflow.register_model(model_uri, name)
    mlflow.register_model(model_uri, name)
    client.set_registered_model_alias(name, T.CHAMPION, "1")
    return {"name": name, "champion": 1, "candidate": 2}


def approval(model, **kwargs) -> ApproveModelOperator:
    with DAG(f"approve_{uuid.uuid4().hex[:6]}", schedule=None):
        op = ApproveModelOperator(
            task_id="approve", model_name=model["name"], candidate_version=str(model["candidate"]), **kwargs
        )
        op >> EmptyOperator(task_id="promote")
    return op


def event(option, user=REVIEWER, comment=None, timedout=False) -> dict:
    return {
        "chosen_options": [option],
        "params_input": {"comment": comment},
        "responded_at": RESPONDED_AT,
        "responded_by_user": user,
        "timedout": timedout,
    }


def version_tags(client, model) -> dict:
    return client.get_model_version(model["name"], str(model["candidate"])).tags


def test_approval_writes_the_decision_and_lets_promotion_run(client, model):
    client.set_registered_model_alias(model["name"], T.CHALLENGER, str(model["candidate"]))
    op = approval(model)
    ti = RecordingTI("approve")
    result = op.execute_complete({"ti": ti, "task": op}, event("Approve", comment="beats v1 on recall"))

    assert result == {
        "decision": "approved",
        "approver": "reviewer",
        "time": "2026-01-02T03:04:05+00:00",
        "comment": "beats v1 on recall",
        "model_name": model["name"],
        "version": 2,
        "option": "Approve",
    }
    tags = version_tags(client, model)
    assert tags[T.APPROVAL_DECISION] == "approved"
    assert tags[T.APPROVAL_APPROVER] == "reviewer"
    assert tags[T.APPROVAL_TIME] == "2026-01-02T03:04:05+00:00"
    assert tags[T.APPROVAL_COMMENT] == "beats v1 on recall"
    assert client.get_registered_model(model["name"]).aliases[T.CHALLENGER] == "2"  # promotion moves it


def test_rejection_skips_promotion_records_why_and_leaves_the_champion(client, model):
    client.set_registered_model_alias(model["name"], T.CHALLENGER, str(model["candidate"]))
    op = approval(model)
    ti = RecordingTI("approve")
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        op.execute_complete({"ti": ti, "task": op}, event("Reject", comment="too slow"))

    assert skipped.value.tasks == ["promote"]
    assert ti.xcoms["return_value"]["decision"] == "rejected"
    assert ti.xcoms["return_value"]["comment"] == "too slow"
    tags = version_tags(client, model)
    assert tags[T.APPROVAL_DECISION] == "rejected"
    assert tags[T.APPROVAL_APPROVER] == "reviewer"
    assert tags[T.APPROVAL_COMMENT] == "too slow"
    # The champion stays; the rejected version is no candidate any more.
    assert client.get_registered_model(model["name"]).aliases == {T.CHAMPION: "1"}


def test_a_timeout_takes_the_reject_default_and_is_recorded_as_timed_out(client, model):
    op = approval(model, response_timeout=timedelta(hours=4))
    ti = RecordingTI("approve")
    with pytest.raises(DownstreamTasksSkipped):
        op.execute_complete({"ti": ti, "task": op}, event("Reject", user=None, timedout=True))

    result = ti.xcoms["return_value"]
    assert result["decision"] == "timed_out"
    assert result["approver"] is None
    assert result["option"] == "Reject"
    tags = version_tags(client, model)
    assert tags[T.APPROVAL_DECISION] == "timed_out"
    assert tags[T.APPROVAL_APPROVER] == ""
    assert client.get_registered_model(model["name"]).aliases[T.CHAMPION] == "1"


def test_the_request_names_model_and_versions_and_shows_the_report(model):
    op = approval(model, report="{{ params.report }}", response_timeout=timedelta(hours=4))
    op.candidate_version = "{{ params.version }}"
    op.render_template_fields({"params": {"report": "| metric | champion | candidate |", "version": 2}})
    op.prepare_request()

    assert op.subject == f"{model['name']} v2: promote over v1?"
    assert op.body.startswith("| metric | champion | candidate |")
    assert "v1 stays champion" in op.body
    assert "No answer counts as Reject" in op.body


def test_the_request_shows_report_sections_one_after_another(model):
    replay = "## Replay of production traffic\n\n[captures](file:///srv/captures) disagreement 0.0%"
    op = approval(model, report=["{{ params.report }}", None, "{{ params.replay }}"])
    op.candidate_version = "2"
    op.render_template_fields({"params": {"report": "| metric | champion | candidate |", "replay": replay}})
    op.prepare_request()

    assert op.body.startswith("| metric | champion | candidate |\n\n## Replay of production traffic\n\n")
    assert "disagreement 0.0%" in op.body
    assert "file:///srv/captures" not in op.body  # a link a browser cannot open is shown as text


def test_the_request_is_not_made_for_a_missing_version(model):
    op = approval(model)
    op.candidate_version = "9"
    with pytest.raises(ModelVersionNotFoundError, match=f"Model '{model['name']}' has no version 9") as err:
        op.prepare_request()
    assert isinstance(err.value, RegistryError)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (model["name"], "9")


def test_fail_on_reject_fails_the_task_with_the_decision_recorded(client, model):
    op = approval(model, fail_on_reject=True)
    ti = RecordingTI("approve")
    with pytest.raises(ApprovalRejectedError, match="was rejected by reviewer: too slow") as err:
        op.execute_complete({"ti": ti, "task": op}, event("Reject", comment="too slow"))

    assert err.value.retryable is False
    assert (err.value.model, err.value.version, err.value.reason) == (model["name"], "2", "rejected")
    assert ti.xcoms["return_value"]["decision"] == "rejected"
    assert version_tags(client, model)[T.APPROVAL_DECISION] == "rejected"
    assert client.get_registered_model(model["name"]).aliases[T.CHAMPION] == "1"


def test_a_timeout_without_a_default_option_fails_the_task_as_timed_out(client, model):
    op = approval(model, defaults=None, response_timeout=timedelta(hours=4))
    ti = RecordingTI("approve")
    timeout_event = {"error": "The Human-in-the-loop response timeout has passed", "error_type": "timeout"}
    with pytest.raises(ApprovalRejectedError, match="timed out") as err:
        op.execute_complete({"ti": ti, "task": op}, timeout_event)

    assert err.value.retryable is False
    assert (err.value.model, err.value.version, err.value.reason) == (model["name"], "2", "timed_out")
    assert ti.xcoms["return_value"]["decision"] == "timed_out"
    assert version_tags(client, model)[T.APPROVAL_DECISION] == "timed_out"


def dag_run(triggered_by: str | None, run_type: DagRunType = DagRunType.MANUAL) -> DagRun:
    """The DAG run the task runner puts in a task's context (as the API server sends it)."""
    now = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
    return DagRun(
        dag_id="mlops_continuous_training", run_id=f"{run_type.value}__1", logical_date=None,
        data_interval_start=None, data_interval_end=None, run_after=now, start_date=now, end_date=None,
        run_type=run_type, state=DagRunState.RUNNING, triggering_user_name=triggered_by,
        consumed_asset_events=[], partition_key=None,
    )  # fmt: skip


def test_the_user_who_triggered_the_run_cannot_approve_it(client, model):
    op = approval(model)
    ti = RecordingTI("approve")
    context = {"ti": ti, "task": op, "dag_run": dag_run(triggered_by="reviewer")}

    with pytest.raises(
        ApprovalRejectedError, match="by reviewer was refused: reviewer triggered this run"
    ) as err:
        op.execute_complete(context, event("Approve", comment="my own model is great"))

    assert "allow_self_approval=True" in str(err.value)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version, err.value.reason) == (
        model["name"],
        "2",
        SELF_APPROVAL_REFUSED,
    )
    assert ti.xcoms["return_value"]["decision"] == SELF_APPROVAL_REFUSED
    tags = version_tags(client, model)
    assert tags[T.APPROVAL_DECISION] == SELF_APPROVAL_REFUSED
    assert tags[T.APPROVAL_APPROVER] == "reviewer"
    assert client.get_registered_model(model["name"]).aliases[T.CHAMPION] == "1"


def test_self_approval_is_accepted_when_the_task_allows_it(client, model):
    op = approval(model, allow_self_approval=True)
    context = {"ti": RecordingTI("approve"), "task": op, "dag_run": dag_run(triggered_by="reviewer")}

    result = op.execute_complete(context, event("Approve"))

    assert result["decision"] == "approved"
    assert version_tags(client, model)[T.APPROVAL_DECISION] == "approved"


@pytest.mark.parametrize(
    ("triggered_by", "run_type"),
    [("admin", DagRunType.MANUAL), (None, DagRunType.SCHEDULED), (None, DagRunType.ASSET_TRIGGERED)],
    ids=["another-user", "scheduled", "asset-triggered"],
)
def test_an_approval_by_someone_who_did_not_trigger_the_run_counts(client, model, triggered_by, run_type):
    op = approval(model)
    context = {"ti": RecordingTI("approve"), "task": op, "dag_run": dag_run(triggered_by, run_type)}

    result = op.execute_complete(context, event("Approve"))

    assert (result["decision"], result["approver"]) == ("approved", "reviewer")
    assert version_tags(client, model)[T.APPROVAL_DECISION] == "approved"


def test_the_user_who_triggered_the_run_may_reject_it(client, model):
    op = approval(model)
    ti = RecordingTI("approve")
    context = {"ti": ti, "task": op, "dag_run": dag_run(triggered_by="reviewer")}

    with pytest.raises(DownstreamTasksSkipped):
        op.execute_complete(context, event("Reject", comment="not ready"))

    assert version_tags(client, model)[T.APPROVAL_DECISION] == "rejected"
    assert ti.xcoms["return_value"]["approver"] == "reviewer"


def test_a_retry_after_the_decision_was_recorded_does_not_ask_again(client, model):
    """Killed after recording the answer and before returning: the retry returns the answer it recorded."""
    op = approval(model)
    first = op.execute_complete({"ti": RecordingTI("approve"), "task": op}, event("Approve", comment="ok"))
    assert version_tags(client, model)[T.APPROVAL_TASK] == "mlops_tests/manual__1/approve/-1"

    def asked() -> None:
        raise RuntimeError("the approvers were asked")

    retry = approval(model)
    retry.prepare_request = asked  # the first step of asking
    assert retry.execute({"ti": RecordingTI("approve", try_number=2), "task": retry}) == first

    # Another run's approval task is not answered by this decision: it asks.
    other = approval(model)
    other.prepare_request = asked
    with pytest.raises(RuntimeError, match="approvers were asked"):
        other.execute({"ti": RecordingTI("approve", run_id="manual__2"), "task": other})


def test_a_retry_after_a_recorded_rejection_skips_without_asking(client, model):
    from airflow.sdk.exceptions import AirflowSkipException

    op = approval(model)
    with pytest.raises(DownstreamTasksSkipped):
        op.execute_complete({"ti": RecordingTI("approve"), "task": op}, event("Reject", comment="too slow"))

    retry = approval(model)
    with pytest.raises(AirflowSkipException, match="was rejected by reviewer: too slow"):
        retry.execute({"ti": RecordingTI("approve", try_number=2), "task": retry})
    assert version_tags(client, model)[T.APPROVAL_DECISION] == "rejected"


def test_a_first_try_that_already_asked_looks_for_the_answer_before_asking_again(client, model, monkeypatch):
    """
    Airflow can run a try's resumption over again from ``execute`` with the same try number, after the answer
    came (Airflow 3.3.2, an answer within seconds): ``mlops.approval.asked`` makes that try look first.
    """
    import json

    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_mlops.triggers.approval import HITLAnswerTrigger

    class Asked(Exception):
        """The request was about to be written."""

    def ask(self, context):
        raise Asked

    def asked() -> None:
        raise Asked

    def first_try(run_id: str = "manual__1") -> RecordingTI:
        ti = RecordingTI("approve", run_id=run_id)
        ti.id = uuid.uuid4()
        return ti

    monkeypatch.setattr(HITLOperator, "execute", ask)  # writing the request needs a task runner

    # No hint: the first try asks, and records that this task instance asked before it writes the request.
    op = approval(model)
    with pytest.raises(Asked):
        op.execute({"ti": first_try(), "task": op})
    assert json.loads(version_tags(client, model)[T.APPROVAL_ASKED]) == {
        "task": "mlops_tests/manual__1/approve/-1",
        "try": 1,
    }

    # The same try started over: it looks for the answer Airflow holds (in the triggerer) before asking.
    again = approval(model)
    again.prepare_request = asked
    ti = first_try()
    with pytest.raises(TaskDeferred) as deferred:
        again.execute({"ti": ti, "task": again})
    assert deferred.value.method_name == "execute_adopted"
    assert isinstance(deferred.value.trigger, HITLAnswerTrigger)
    assert deferred.value.trigger.ti_id == str(ti.id)
    # Nothing to adopt: then it asks.
    with pytest.raises(Asked):
        again.execute_adopted({"ti": ti, "task": again}, {"status": "unanswered", "message": "none"})

    # The hint names another task instance, does not parse, or adoption is off: the first try asks at once.
    other = approval(model)
    other.prepare_request = asked
    with pytest.raises(Asked):
        other.execute({"ti": first_try(run_id="manual__2"), "task": other})
    client.set_model_version_tag(model["name"], str(model["candidate"]), T.APPROVAL_ASKED, "{not json")
    garbled = approval(model)
    garbled.prepare_request = asked
    with pytest.raises(Asked):
        garbled.execute({"ti": first_try(), "task": garbled})
    hint = json.dumps({"task": "mlops_tests/manual__1/approve/-1", "try": 1})
    client.set_model_version_tag(model["name"], str(model["candidate"]), T.APPROVAL_ASKED, hint)
    off = approval(model, adopt_earlier_answer=False)
    off.prepare_request = asked
    with pytest.raises(Asked):
        off.execute({"ti": first_try(), "task": off})
