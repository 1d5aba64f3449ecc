"""The release trigger serializes exactly its arguments, so the triggerer rebuilds the same wait."""

from __future__ import annotations

from airflow_mlops.triggers.release import ReleaseFinishedTrigger


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
