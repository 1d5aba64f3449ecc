"""
The release trigger serializes exactly its arguments, so the triggerer rebuilds the same wait, and polls an
unreachable MLflow server again rather than sleeping through the outage in one read.
"""

from __future__ import annotations

import asyncio
import json
import time

from airflow_mlops.triggers.release import ReleaseFinishedTrigger
from tests.conftest import free_port


def test_trigger_serializes_exactly_its_arguments():
    trigger = ReleaseFinishedTrigger(
        model_name="churn", release_id="ct/scheduled__w49/deploy/-1", deadline=1e9, mlflow_conn_id="mlflow_prod",
        poll_interval=2,
    )  # fmt: skip

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_mlops.triggers.release.ReleaseFinishedTrigger"
    assert kwargs == {
        "model_name": "churn", "release_id": "ct/scheduled__w49/deploy/-1", "deadline": 1e9,
        "mlflow_conn_id": "mlflow_prod", "poll_interval": 2.0,
    }  # fmt: skip
    assert ReleaseFinishedTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_a_trigger_without_a_connection_uses_the_default_one():
    trigger = ReleaseFinishedTrigger(model_name="churn", release_id="d/r/t/-1", deadline=1e9)

    assert trigger.serialize()[1]["mlflow_conn_id"] == "mlflow_default"
    assert trigger.serialize()[1]["poll_interval"] == 5.0


def fire(trigger: ReleaseFinishedTrigger) -> dict:
    """The trigger's one event, run as the triggerer would, from its serialized arguments."""

    async def first_event() -> dict:
        async for event in ReleaseFinishedTrigger(**trigger.serialize()[1]).run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


def down_mlflow(monkeypatch, outage_timeout: float) -> str:
    """An MLflow connection to a port nobody listens on, and ``[mlops] service_outage_timeout``."""
    monkeypatch.setenv("AIRFLOW__MLOPS__SERVICE_OUTAGE_TIMEOUT", str(outage_timeout))
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DOWN", json.dumps({"conn_type": "mlflow", "host": url}))
    return "mlflow_down"


def test_an_unreachable_mlflow_server_is_polled_again_so_the_deadline_still_holds(monkeypatch):
    conn_id = down_mlflow(monkeypatch, outage_timeout=120)
    trigger = ReleaseFinishedTrigger(
        model_name="churn", release_id="d/r/t/-1", deadline=time.time() + 2, mlflow_conn_id=conn_id,
        poll_interval=0.5,
    )  # fmt: skip

    started = time.monotonic()
    event = fire(trigger)

    assert event["status"] == "timeout"
    assert "unreachable" in event["message"]
    assert time.monotonic() - started < 20  # not one read sleeping through the 120 s outage window


def test_an_mlflow_outage_longer_than_the_outage_window_ends_the_wait_saying_for_how_long(monkeypatch):
    conn_id = down_mlflow(monkeypatch, outage_timeout=2)
    trigger = ReleaseFinishedTrigger(
        model_name="churn", release_id="d/r/t/-1", deadline=time.time() + 120, mlflow_conn_id=conn_id,
        poll_interval=0.5,
    )  # fmt: skip

    event = fire(trigger)

    assert event["status"] == "error"
    assert "the server unreachable for 2 s" in event["message"]
