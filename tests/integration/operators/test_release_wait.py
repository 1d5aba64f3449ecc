"""
A rollback started while another task instance releases the same model waits for it, deferred, and then rolls
back what serves by then; a rollback whose wait runs out while that release is live fails and changes nothing;
one whose wait outlasts a dead release's lease takes that release over. Driven as Airflow drives a deferral:
``execute`` defers, the trigger runs against the MLflow server until its one event, the task resumes.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ReleaseInProgressError
from airflow_mlops.lineage.deployments import read_history
from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator
from airflow_mlops.serving import register_target_kind
from airflow_mlops.serving.record import VERIFY, ReleaseRecord, release_id
from airflow_mlops.serving.release import new_plan
from airflow_mlops.serving.verification import SmokeTest
from airflow_mlops.triggers.release import ReleaseFinishedTrigger
from tests.support.context import context_for
from tests.support.deploy import EchoTarget, approve_version, write_holdout_snapshot
from tests.support.signing import test_keys as signing_keys

pytestmark = pytest.mark.integration


class HeldEchoTarget(EchoTarget):
    """The in-memory user target, whose smoke test of version ``held`` waits until the test lets it go on."""

    kind = "echo_held"
    held: str | None = None
    verifying = threading.Event()
    go_on = threading.Event()

    def predict(self, deployment, records, timeout: float = 30.0):
        if deployment.version == self.held and not self.go_on.is_set():
            self.verifying.set()
            assert self.go_on.wait(120), "the test never let the deploy go on"
        return super().predict(deployment, records, timeout)


register_target_kind("echo_held", HeldEchoTarget)
TARGET = {"kind": "echo_held", "region": "eu-north-1"}
OTHER_DEPLOY = {"dag_id": "mlops_continuous_training", "run_id": "scheduled__w49", "task_id": "deploy"}


@pytest.fixture
def model(mlflow_server, request, tmp_path):
    """v1 then v2 deployed and verified (v2 serves, champion), v3 approved and not deployed yet."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    name = f"wait_{request.node.name[5:40]}"
    client.create_registered_model(name)
    versions = [
        client.create_model_version(name, source=f"s3://models/{name}/{i}").version for i in (1, 2, 3)
    ]
    for version in versions:
        approve_version(client, name, version)
    holdout = write_holdout_snapshot(tmp_path)
    for version in versions[:2]:
        run(DeployModelOperator, f"deploy_{version}", model_name=name, version=version, target=TARGET,
            sample_data=holdout, drop_columns=["label"])  # fmt: skip
    yield client, name, versions, holdout
    HeldEchoTarget.served.pop(name, None)
    HeldEchoTarget.held = None
    HeldEchoTarget.verifying.clear()
    HeldEchoTarget.go_on.clear()


def run(op_class, task_id, **kwargs):
    op = op_class(task_id=task_id, **kwargs)
    return op.execute(context_for(op, user="oncall", run_id=f"manual__{task_id}"))


def start_rollback(name, **kwargs) -> tuple[RollbackModelOperator, TaskDeferred]:
    """Start the rollback task; it must defer."""
    op = RollbackModelOperator(task_id="rollback", model_name=name, target=TARGET, reason="v3 misbehaves",
                               **kwargs)  # fmt: skip
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context_for(op, user="oncall", run_id="manual__rollback"))
    return op, deferred.value


def resume(op: RollbackModelOperator, deferred: TaskDeferred):
    """What the triggerer and the worker do next: run the trigger to its one event, resume the task with it."""

    async def events():
        return [event async for event in deferred.trigger.run()]

    (event,) = asyncio.run(events())
    fresh = RollbackModelOperator(
        task_id=op.task_id,
        model_name=op.model_name,
        version=op.version,
        target=TARGET,
        reason=op.reason,
        wait_for_release=op.wait_for_release,
    )  # the task as the worker builds it again from the DAG
    resumed = getattr(fresh, deferred.method_name)
    return event.payload, lambda: resumed(
        context_for(fresh, user="oncall", run_id="manual__rollback"), event=event.payload, **deferred.kwargs
    )


def plant_release(client, name, version, *, previous_version, lease=1800.0) -> ReleaseRecord:
    """Another task instance's deploy of *version*, switched and at step ``verify`` (its record, signed)."""
    target = HeldEchoTarget(region="eu-north-1")
    previous = target.deploy(name, previous_version, f"models:/{name}/{previous_version}")
    target.deploy(name, version, f"models:/{name}/{version}")  # the switch it made
    plan = new_plan(
        model_name=name, version=version, model_uri=f"models:/{name}/{version}", target=target,
        previous=previous, verify=SmokeTest(), reason="weekly retrain", actor="airflow:mlops_continuous_training",
        airflow={**OTHER_DEPLOY, "map_index": -1, "try_number": 1},
    )  # fmt: skip
    record = ReleaseRecord.begin(
        client, name, release_id(OTHER_DEPLOY), "deploy", plan, lease, 1, signing_keys()
    )
    record.advance(VERIFY, plan, 1)
    return record


def test_a_rollback_waits_for_a_deploy_at_verify_and_then_rolls_back_what_it_deployed(model):
    client, name, (v1, v2, v3), holdout = model
    HeldEchoTarget.held = v3
    deployed: dict = {}

    def deploy_v3():
        try:
            deployed["result"] = run(DeployModelOperator, "deploy_3", model_name=name, version=v3, target=TARGET,
                                     sample_data=holdout, drop_columns=["label"])  # fmt: skip
        except Exception as err:
            deployed["error"] = err

    deploy = threading.Thread(target=deploy_v3)
    deploy.start()
    try:
        assert HeldEchoTarget.verifying.wait(120), "the deploy of v3 never reached its smoke test"
        assert ReleaseRecord.load(client, name, 0.0, signing_keys()).step == VERIFY

        op, deferred = start_rollback(name)

        assert isinstance(deferred.trigger, ReleaseFinishedTrigger)
        assert deferred.method_name == "execute_after_release"
        assert HeldEchoTarget.served[name].version == v3  # nothing changed: the deploy carries on
        assert client.get_registered_model(name).aliases[T.CHAMPION] == v2
    finally:
        HeldEchoTarget.go_on.set()
        deploy.join(120)
    assert deployed.get("result", deployed)["outcome"] == "succeeded"  # the deploy finished, unhindered
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v3

    event, resumed = resume(op, deferred)
    result = resumed()

    assert event["status"] == "success"
    assert "ended (succeeded)" in event["message"]
    # Planned again against what serves now: v3 is rolled away from, to the champion before it.
    assert (result["version"], result["previous_version"], result["outcome"]) == (v2, v3, "succeeded")
    assert HeldEchoTarget.served[name].version == v2
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v2
    entry = read_history(client, name, signing_keys())[-1]
    assert (entry["action"], entry["version"], entry["previous_version"]) == ("rollback", v2, v3)
    assert client.get_model_version(name, v3).tags[T.ROLLBACK_REASON] == (
        f"rolled back to version {v2} by oncall: v3 misbehaves"
    )


def test_a_rollback_whose_wait_runs_out_while_the_release_is_live_fails_and_changes_nothing(model):
    client, name, (v1, v2, v3), _ = model
    other = plant_release(client, name, v3, previous_version=v2)
    history = read_history(client, name, signing_keys())

    op, deferred = start_rollback(name, wait_for_release=timedelta(seconds=1))
    event, resumed = resume(op, deferred)
    with pytest.raises(ReleaseInProgressError) as err:
        resumed()

    assert event["status"] == "timeout"
    message = str(err.value)
    assert f"This rollback of model {name!r} waited 1 s (wait_for_release)" in message
    assert f"deploy of version {v3} by {other.id}, at step verify" in message
    assert "still in progress" in message
    assert f"its lease passes without a write (at {other.data['expires']})" in message
    assert "nothing was changed" in message
    assert err.value.retryable is True
    assert (err.value.model, err.value.version) == (name, v3)
    # Nothing changed: the other release still holds the model, at its step; what serves, champion, history.
    last = ReleaseRecord.load(client, name, 0.0, signing_keys())
    assert (last.id, last.step) == (other.id, VERIFY)
    assert HeldEchoTarget.served[name].version == v3
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v2
    assert read_history(client, name, signing_keys()) == history


def test_a_rollback_takes_over_a_release_whose_lease_passed_while_it_waited(model):
    client, name, (v1, v2, v3), _ = model
    other = plant_release(client, name, v3, previous_version=v2)

    op, deferred = start_rollback(name, version=v1, wait_for_release=timedelta(minutes=10))
    # The other release's task writes its step once more, then dies: its lease (0 s here) passes unrenewed.
    other.lease = 0.0
    other.advance(VERIFY, other.plan, 1)
    event, resumed = resume(op, deferred)
    result = resumed()

    assert event["status"] == "expired"
    assert (result["version"], result["outcome"]) == (v1, "succeeded")
    # Taken over from the dead release's previous verified deployment (v2), not from the unverified v3.
    assert result["previous_version"] == v2
    assert HeldEchoTarget.served[name].version == v1
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1
    last = ReleaseRecord.load(client, name, 0.0, signing_keys())
    assert last.id != other.id
    assert (last.step, last.data["outcome"]) == ("done", "succeeded")


def test_a_deploy_does_not_wait_unless_asked(model):
    client, name, (v1, v2, v3), _ = model
    plant_release(client, name, v3, previous_version=v2)

    with pytest.raises(ReleaseInProgressError, match="being released by another task") as err:
        run(DeployModelOperator, "deploy_again", model_name=name, version=v1, target=TARGET)

    assert err.value.retryable is True
    assert HeldEchoTarget.served[name].version == v3
