"""
The monitoring loop in live Airflow: the champion serves on the real local target with capture on, shifted
traffic is captured, ``mlops_monitoring`` flags it, and its Asset event schedules ``mlops_continuous_training``
on its own (the scheduler, not a trigger); a second degraded verdict within the cool-down asks for nothing.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests

from airflow_mlops.demo.stack import DAG_ID
from airflow_mlops.operators.monitoring import LAST_RETRAINING_TAG
from tests.conftest import free_port
from tests.support.deploy import stop_local_processes

pytestmark = [pytest.mark.integration, pytest.mark.live]

MODEL = "demo_churn_classifier"  # the model the example DAGs monitor and retrain
MONITORING = "mlops_monitoring"


def asset_runs(stack) -> list[dict]:
    response = stack.api(
        "GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "asset_triggered", "limit": 50}
    )
    response.raise_for_status()
    return response.json()["dag_runs"]


def champion_snapshot(stack) -> tuple[str, str]:
    """The champion's version and training snapshot; a champion made here when no earlier test left one."""
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow_url)
    version = stack.alias_version(MODEL)
    if version is None:
        from tests.support.monitoring import make_champion

        version = make_champion(stack.mlflow_url, stack.data_root, MODEL)
    return str(version), client.get_model_version(MODEL, str(version)).tags["mlops.data.uri"]


@pytest.fixture(scope="module")
def served(live_stack, tmp_path_factory):
    import mlflow

    from airflow_mlops.serving.local import LocalServerTarget

    os.environ["MLFLOW_TRACKING_URI"] = live_stack.mlflow_url
    # Not the servers an earlier test of this process pointed mlflow at (set_* outrank the environment).
    mlflow.set_tracking_uri(live_stack.mlflow_url)
    mlflow.set_registry_uri(live_stack.mlflow_url)
    version, snapshot = champion_snapshot(live_stack)
    target = LocalServerTarget(
        port=free_port(), state_dir=str(tmp_path_factory.mktemp("monitored-serving")), mlflow_conn_id=None,
        capture={"uri": str(live_stack.data_root), "flush_seconds": 0.5},
    )  # fmt: skip
    target.deploy(MODEL, version, f"models:/{MODEL}/{version}")
    yield target, version, snapshot
    target.stop(MODEL)
    stop_local_processes()
    for dag_id in (MONITORING, DAG_ID):
        live_stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})


def shifted_traffic(snapshot: str, rows: int = 300) -> list[dict]:
    """Rows like the training data, with its first numeric feature moved far off its range (in its own type)."""
    import pandas as pd

    from airflow_mlops.data.snapshots import read_snapshot

    frame = read_snapshot(snapshot).drop(columns=["label"]).sample(rows, replace=True, random_state=0)
    numeric = next(c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]))
    shift = 10 * float(frame[numeric].std() or 1.0) + 100
    if pd.api.types.is_integer_dtype(frame[numeric]):  # in the signature's type, or monitoring leaves the rows out
        shift = round(shift)
    frame[numeric] = frame[numeric] + shift
    return json.loads(frame.to_json(orient="records"))


def wait_for_monitoring_run(stack, run_id: str) -> dict:
    state = stack.wait_for_run(MONITORING, run_id, timeout=600)
    assert state == "success", stack.task_states(MONITORING, run_id)
    return stack.xcom(MONITORING, run_id, "monitor")


def test_shifted_traffic_schedules_one_retraining_per_cooldown(live_stack, served):
    from mlflow import MlflowClient

    from airflow_mlops.serving.capture import read_captures

    stack = live_stack
    target, version, snapshot = served
    sent = datetime.now(UTC)
    records = shifted_traffic(snapshot)
    for start in range(0, len(records), 30):
        response = requests.post(
            f"{target.endpoint}/invocations",
            json={"dataframe_records": records[start : start + 30]},
            timeout=60,
        )
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while (
        len(read_captures(str(stack.data_root), MODEL, sent - timedelta(minutes=1), datetime.now(UTC))) < 300
    ):
        assert time.monotonic() < deadline, target.capture_stats(MODEL)
        time.sleep(0.5)

    stack._ok(
        stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    )  # so that its Asset schedules it
    before = {run["dag_run_id"] for run in asset_runs(stack)}
    first = stack.trigger(MONITORING)
    verdict = wait_for_monitoring_run(stack, first)
    assert verdict["verdict"] == "degraded", verdict
    assert verdict["version"] == version
    assert verdict["records"] >= 300
    assert any(reason.startswith("feature drift") for reason in verdict["reasons"])
    assert stack.task_states(MONITORING, first)["request_retraining"] == "success"

    # The scheduler starts the continuous-training DAG from the Asset event; nobody triggers it.
    deadline = time.monotonic() + 180
    while not (started := [r for r in asset_runs(stack) if r["dag_run_id"] not in before]):
        assert time.monotonic() < deadline, "no asset-triggered run of the continuous-training DAG"
        time.sleep(3)
    (retraining,) = started
    # Airflow 3.3.2 answers 500 until the scheduler has started the run; the read is asked again until then.
    events = stack._ok(
        stack.api(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{quote(retraining['dag_run_id'])}/upstreamAssetEvents",
            retry_for=180,
        )
    )["asset_events"]
    assert [e["extra"]["verdict"] for e in events] == ["degraded"]
    assert events[0]["extra"]["reasons"] == verdict["reasons"]
    recorded = json.loads(
        MlflowClient(stack.mlflow_url).get_registered_model(MODEL).tags[LAST_RETRAINING_TAG]
    )
    assert recorded["airflow"]["run_id"] == first

    # The retraining run is not the subject here: end it, so that it holds no executor slot and later tests
    # find the DAG free.
    ended = stack.api(
        "PATCH", f"/dags/{DAG_ID}/dagRuns/{quote(retraining['dag_run_id'])}", json={"state": "failed"}
    )
    assert ended.status_code == 200, ended.text

    # Within the cool-down a second degraded verdict asks for nothing.
    second = stack.trigger(MONITORING)
    assert wait_for_monitoring_run(stack, second)["verdict"] == "degraded"
    assert stack.task_states(MONITORING, second)["request_retraining"] == "skipped"
    # It emitted no Asset event, so the scheduler has nothing to start another run from.
    emitted = stack._ok(
        stack.api("GET", "/assets/events", params={"source_dag_id": MONITORING, "source_run_id": second})
    )
    assert emitted["asset_events"] == []
    assert [r["dag_run_id"] for r in asset_runs(stack) if r["dag_run_id"] not in before] == [
        retraining["dag_run_id"]
    ]
