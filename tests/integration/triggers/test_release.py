"""
The release trigger, run against a real MLflow server: one event when the release it waits for ends, is
replaced, or its lease passes; ``timeout`` while it is live at the deadline; a pointer the package did not sign
holds nobody up; an unreachable server ends the wait with ``error``.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_mlops import tags as T
from airflow_mlops.serving.record import VERIFY, ReleaseRecord
from airflow_mlops.triggers.release import ReleaseFinishedTrigger
from tests.conftest import free_port, set_connection
from tests.support.signing import test_keys as signing_keys

pytestmark = pytest.mark.integration

RID = "mlops_continuous_training/scheduled__w49/deploy/-1"


@pytest.fixture
def model(mlflow_server, request):
    """A model with a version whose deploy (another task instance's) is at step ``verify``."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    name = f"trigger_{request.node.name[5:40]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"s3://models/{name}/1").version
    plan = {"model_name": name, "version": version, "reason": "weekly retrain"}
    record = ReleaseRecord.begin(client, name, RID, "deploy", plan, 1800.0, 1, signing_keys())
    record.advance(VERIFY, plan, 1)
    return client, name, record


def events(trigger: ReleaseFinishedTrigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def trigger_for(name: str, deadline: float, **kwargs) -> ReleaseFinishedTrigger:
    return ReleaseFinishedTrigger(
        model_name=name, release_id=RID, deadline=deadline, poll_interval=0.2, **kwargs
    )


def test_one_event_when_the_release_ends_while_it_waits(model):
    client, name, record = model
    deadline = time.time() + 600
    trigger = trigger_for(name, deadline)

    async def wait_while_it_finishes():
        waiting = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.to_thread(record.finish, "succeeded", result={"version": "1"}, try_number=1)
        return await waiting

    event = asyncio.run(wait_while_it_finishes()).payload

    assert event == {
        "status": "success", "message": f"The release {RID} of model {name!r} ended (succeeded)",
        "model_name": name, "release_id": RID, "step": "done", "deadline": deadline,
    }  # fmt: skip


def test_a_live_release_at_the_deadline_ends_the_wait_with_timeout(model):
    _, name, record = model

    (event,) = events(trigger_for(name, time.time() - 1))

    assert event["status"] == "timeout"
    assert event["step"] == VERIFY
    assert f"is at step verify (lease until {record.data['expires']})" in event["message"]


def test_a_release_whose_lease_passed_ends_the_wait_with_expired(model):
    _, name, record = model
    record.lease = 0.0  # its task wrote once more and died: the lease passes unrenewed
    record.advance(VERIFY, record.plan, 1)

    (event,) = events(trigger_for(name, time.time() + 600))

    assert event["status"] == "expired"
    assert f"stopped at step verify: its lease passed at {record.data['expires']}" in event["message"]


def test_another_release_replacing_it_ends_the_wait(model):
    client, name, record = model
    ReleaseRecord.begin(client, name, "mlops_rollback/manual__1/rollback/-1", "rollback", record.plan, 1800.0,
                        1, signing_keys())  # fmt: skip

    (event,) = events(trigger_for(name, time.time() + 600))

    assert event["status"] == "success"
    assert "was replaced: rollback of version 1 by mlops_rollback/manual__1/rollback/-1" in event["message"]


def test_a_pointer_the_package_did_not_sign_holds_nobody_up(model):
    client, name, _ = model
    forged = {"id": RID, "version": "1", "kind": "deploy", "step": VERIFY, "updated": "2026-12-05T10:00:00+00:00",
              "expires": "2099-01-01T00:00:00+00:00"}  # fmt: skip
    client.set_registered_model_tag(name, T.RELEASE, json.dumps(forged))

    (event,) = events(trigger_for(name, time.time() + 600))

    assert event["status"] == "success"
    assert event["message"] == f"Model {name!r} records no release any more"


def test_an_unreachable_mlflow_server_ends_the_wait_with_error(model):
    _, name, _ = model
    set_connection("mlflow_gone", conn_type="mlflow", host=f"http://127.0.0.1:{free_port()}")

    (event,) = events(trigger_for(name, time.time() + 600, mlflow_conn_id="mlflow_gone"))

    assert event["status"] == "error"
    assert "5 reads failed in a row" in event["message"]
    assert "is unreachable" in event["message"]
