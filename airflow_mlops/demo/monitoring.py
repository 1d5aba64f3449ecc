"""
The monitoring part of the demo (``airflow-mlops demo --monitoring``).

Serve the champion with capture on, send traffic whose distribution has shifted, let ``mlops_monitoring`` flag
it, and watch the Asset event start a retraining run of ``mlops_continuous_training`` on its own.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from airflow_mlops.demo.stack import DAG_ID

if TYPE_CHECKING:
    from airflow_mlops.demo.stack import LocalStack
    from airflow_mlops.serving.local import LocalServerTarget

MONITORING_DAG_ID = "mlops_monitoring"


def _print(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def serve_with_capture(stack: LocalStack, model_name: str, version: str) -> LocalServerTarget:
    """Serve *version* on a spare port with capture on, captures under the stack's data root."""
    import os

    from airflow_mlops.demo.stack import free_port
    from airflow_mlops.serving.local import LocalServerTarget

    os.environ["MLFLOW_TRACKING_URI"] = stack.mlflow_url
    target = LocalServerTarget(
        port=free_port(), state_dir=str(stack.home / "monitored-serving"), mlflow_conn_id=None,
        capture={"uri": str(stack.data_root), "flush_seconds": 0.5},
    )  # fmt: skip
    target.deploy(model_name, version, f"models:/{model_name}/{version}")
    return target


def shifted_records(snapshot: str, rows: int = 300, label: str = "label") -> list[dict[str, Any]]:
    """Rows like the training snapshot's, with its first numeric feature moved far off its range."""
    import pandas as pd

    from airflow_mlops.data.snapshots import read_snapshot

    frame = (
        read_snapshot(snapshot)
        .drop(columns=[label], errors="ignore")
        .sample(rows, replace=True, random_state=0)
    )
    numeric = next(c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]))
    frame[numeric] = frame[numeric] + 10 * float(frame[numeric].std() or 1.0) + 100
    return json.loads(frame.to_json(orient="records"))


def send(
    target: LocalServerTarget, model_name: str, records: list[dict[str, Any]], timeout: float = 60.0
) -> int:
    """Send *records* to the endpoint, 30 a request; return once all of them are captured (their count)."""
    from airflow_mlops.serving.capture import read_captures

    sent = datetime.now(UTC)
    for start in range(0, len(records), 30):
        response = requests.post(
            f"{target.endpoint}/invocations",
            json={"dataframe_records": records[start : start + 30]},
            timeout=60,
        )
        response.raise_for_status()
    root = str(target.capture_settings()["uri"])  # type: ignore[index]
    deadline = time.monotonic() + timeout
    while True:
        captured = len(read_captures(root, model_name, sent - timedelta(minutes=1), datetime.now(UTC)))
        if captured >= len(records) or time.monotonic() > deadline:
            return captured
        time.sleep(0.5)


def asset_runs(stack: LocalStack) -> list[dict[str, Any]]:
    """The runs of the continuous-training DAG its Asset started."""
    body = stack._ok(
        stack.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "asset_triggered", "limit": 100})
    )
    return list(body["dag_runs"])


def wait_for_asset_run(stack: LocalStack, known: set[str], timeout: float = 180.0) -> dict[str, Any] | None:
    """The first asset-triggered run of the continuous-training DAG not in *known* (None within *timeout*)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = [r for r in asset_runs(stack) if r["dag_run_id"] not in known]
        if started:
            return started[0]
        time.sleep(3)
    return None


def trigger_events(stack: LocalStack, run_id: str) -> list[dict[str, Any]]:
    """The Asset events that started a run of the continuous-training DAG."""
    path = f"/dags/{DAG_ID}/dagRuns/{quote(run_id)}/upstreamAssetEvents"
    return list(stack._ok(stack.api("GET", path))["asset_events"])


def run_monitoring(stack: LocalStack, model_name: str, timeout: float = 900.0) -> bool:
    """Serve the champion with capture, shift its traffic, and show monitoring start a retraining run."""
    from mlflow import MlflowClient

    version = stack.alias_version(model_name)
    if version is None:
        _print(f"{model_name} has no champion to monitor")
        return False
    snapshot = MlflowClient(stack.mlflow_url).get_model_version(model_name, version).tags["mlops.data.uri"]
    target = serve_with_capture(stack, model_name, str(version))
    try:
        _print(f"serving {model_name} v{version} with capture on at {target.endpoint}")
        captured = send(target, model_name, shifted_records(snapshot))
        _print(
            f"sent 300 rows whose distribution shifted; {captured} captured under {stack.data_root}/captures"
        )
        stack._ok(stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}))
        known = {r["dag_run_id"] for r in asset_runs(stack)}
        run_id = stack.trigger(MONITORING_DAG_ID)
        state = stack.wait_for_run(MONITORING_DAG_ID, run_id, timeout=timeout)
        verdict = stack.xcom(MONITORING_DAG_ID, run_id, "monitor") if state == "success" else {}
        _print(f"{MONITORING_DAG_ID} run {run_id}: {state}, verdict {verdict.get('verdict')}")
        for reason in verdict.get("reasons") or []:
            _print(f"  - {reason}")
        if verdict.get("monitoring_run_url"):
            _print(f"monitoring run in MLflow: {verdict['monitoring_run_url']}")
        if verdict.get("verdict") != "degraded":
            return False
        started = wait_for_asset_run(stack, known)
        if started is None:
            _print(f"no run of {DAG_ID} started from the retraining Asset")
            return False
        _print(f"{DAG_ID} run {started['dag_run_id']} started on its own, from the monitoring verdict")
        return True
    finally:
        target.stop(model_name)
