"""
Monitoring a served model against a real MLflow server, from captures in real Parquet files: drift found in
shifted traffic, a healthy verdict for traffic like the training data, not enough traffic, live accuracy from
labels joined on the request id, the deferred wait for traffic, and the retraining request with its cool-down.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from airflow_mlops.operators.monitoring import (
    LAST_RETRAINING_TAG,
    MONITORING_VERDICT_TAG,
    MonitorModelOperator,
    RequestRetrainingOperator,
    describe_trigger,
    retraining_asset,
)
from airflow_mlops.serving.capture import CaptureWriter
from airflow_mlops.triggers.monitoring import CaptureTrafficTrigger
from tests.support.context import context_for
from tests.support.monitoring import customers, make_champion

pytestmark = pytest.mark.integration


def capture(root, model_name: str, version: str, frame, prefix: str) -> None:
    """Captured traffic, as the serving side writes it, predicting with the label rule (a perfect model)."""
    writer = CaptureWriter(str(root))
    for index, row in enumerate(frame.to_dict("records")):
        label = row.pop("label", 0)
        body = json.dumps({"dataframe_records": [row]}).encode()
        writer.submit(
            model_name, version, f"{prefix}-{index}", 200, body, json.dumps({"predictions": [label]}).encode()
        )
    writer.close()


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    version = make_champion(mlflow_server.uri, root, "monitored_churn")
    return SimpleNamespace(root=root, model="monitored_churn", version=version, mlflow=mlflow_server)


def monitor(served, **kwargs):
    op = MonitorModelOperator(
        task_id=kwargs.pop("task_id", "monitor"), model_name=served.model, capture_uri=str(served.root),
        min_records=100, aws_conn_id=None, **kwargs,
    )  # fmt: skip
    context = context_for(op)
    return op, context, op.execute(context)


def test_shifted_traffic_is_degraded_by_feature_and_prediction_drift(served):
    capture(served.root, served.model, served.version, customers(400, seed=1, spend_shift=40.0), "shifted")

    op, _, result = monitor(served)

    assert result["verdict"] == "degraded"
    assert result["records"] == 400
    assert "monthly_spend" in result["feature_drift"]["drifted_features"]
    assert "tenure_months" not in result["feature_drift"]["drifted_features"]
    assert result["prediction_drift"]["drift"] is True
    assert result["data_quality"]["success"] is True
    assert any(r.startswith("feature drift: monthly_spend") for r in result["reasons"])
    from mlflow import MlflowClient

    client = MlflowClient(served.mlflow.uri)
    run = client.get_run(result["monitoring_run_id"])
    assert run.data.tags["mlops.monitoring.verdict"] == "degraded"
    assert run.data.metrics["drift.monthly_spend.psi"] > 0.2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "monitoring")}
    assert {
        "monitoring/report.json",
        "monitoring/feature_drift.png",
        "monitoring/predictions.png",
    } <= artifacts
    assert op.mlflow_run_url.endswith(f"/runs/{run.info.run_id}")
    tag = json.loads(client.get_registered_model(served.model).tags[MONITORING_VERDICT_TAG])
    assert tag["verdict"] == "degraded"


def test_traffic_like_the_training_data_is_healthy_and_labels_give_live_accuracy(served, tmp_path):
    import pandas as pd

    frame = customers(400, seed=2)
    started = datetime.now(UTC)
    capture(served.root, served.model, served.version, frame, "like")
    ended = datetime.now(UTC) + timedelta(seconds=1)
    window = {"window": ended - started, "window_end": ended.isoformat()}  # only this traffic
    labels = pd.DataFrame({"_request_id": [f"like-{i}" for i in range(400)], "label": frame["label"]})
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    labels.assign(label=1 - labels["label"]).to_parquet(tmp_path / "wrong.parquet", index=False)

    _, _, result = monitor(served, labels_uri=str(tmp_path / "labels.parquet"), **window)

    assert result["verdict"] == "healthy", result["reasons"]
    assert result["records"] == 400
    assert result["performance"]["labelled"] == 400
    assert result["performance"]["value"] == 1.0
    assert result["performance"]["degraded"] is False

    # The same traffic, with the ground truth saying every answer was wrong: live accuracy decayed.
    _, _, result = monitor(served, labels_uri=str(tmp_path / "wrong.parquet"), **window)

    assert result["verdict"] == "degraded"
    assert result["performance"]["value"] == 0.0
    assert [r for r in result["reasons"] if r.startswith("live accuracy_score 0 vs")]


def test_a_window_without_traffic_says_so(served):
    quiet = (datetime.now(UTC) - timedelta(days=3)).isoformat()

    _, _, result = monitor(served, window_end=quiet)

    assert result["verdict"] == "not_enough_traffic"
    assert result["records"] == 0
    assert result["feature_drift"] is None


def test_waiting_for_traffic_defers_until_the_rows_arrive(served):
    from airflow.exceptions import TaskDeferred

    op = MonitorModelOperator(
        task_id="monitor_wait", model_name="monitored_quiet", capture_uri=str(served.root), min_records=5,
        wait_for_traffic=timedelta(minutes=5), poll_interval=0.2, deferrable=True, aws_conn_id=None,
    )  # fmt: skip
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context_for(op))
    trigger = deferred.value.trigger
    assert isinstance(trigger, CaptureTrafficTrigger)
    path, kwargs = trigger.serialize()
    assert CaptureTrafficTrigger(**kwargs).serialize() == (path, kwargs)

    async def wait_then_capture():
        run = trigger.run()
        pending = asyncio.ensure_future(run.__anext__())
        await asyncio.sleep(0.5)
        assert not pending.done()  # nothing captured yet: still waiting
        await asyncio.to_thread(capture, served.root, "monitored_quiet", "1", customers(6, seed=3), "q")
        return await asyncio.wait_for(pending, 30)

    event = asyncio.run(wait_then_capture())
    assert event.payload["status"] == "success"
    assert event.payload["records"] == 6


def retrain(served, monitoring, run_id: str, cooldown=timedelta(hours=6), **kwargs):
    op = RequestRetrainingOperator(
        task_id="request_retraining",
        model_name=served.model,
        monitoring=monitoring,
        cooldown=cooldown,
        **kwargs,
    )
    events = defaultdict(lambda: SimpleNamespace(extra={}))
    context = {**context_for(op, run_id=run_id), "outlet_events": events}
    return op, events, op.execute(context)


def test_a_degraded_verdict_requests_retraining_once_per_cooldown(served):
    from airflow.sdk.exceptions import AirflowSkipException
    from mlflow import MlflowClient

    verdict = {"verdict": "degraded", "reasons": ["feature drift: monthly_spend"], "model_name": served.model,
               "version": served.version, "window": {"start": "a", "end": "b"}, "records": 400}  # fmt: skip
    op, events, result = retrain(served, verdict, run_id="scheduled__1")
    asset = retraining_asset(served.model)
    assert op.outlets == [asset]
    assert result["requested"] is True
    assert events[asset].extra["reasons"] == ["feature drift: monthly_spend"]
    recorded = json.loads(
        MlflowClient(served.mlflow.uri).get_registered_model(served.model).tags[LAST_RETRAINING_TAG]
    )
    assert recorded["airflow"]["run_id"] == "scheduled__1"

    # A retry of the same task emits its request again; another run within the cool-down does not.
    assert retrain(served, verdict, run_id="scheduled__1")[2]["requested"] is True
    with pytest.raises(AirflowSkipException, match="cool-down"):
        retrain(served, verdict, run_id="scheduled__2")
    # Without a cool-down it asks again; a healthy verdict never does.
    assert retrain(served, verdict, run_id="scheduled__3", cooldown=0)[2]["requested"] is True
    with pytest.raises(AirflowSkipException, match="healthy"):
        retrain(served, {**verdict, "verdict": "healthy"}, run_id="scheduled__4", cooldown=0)

    # A request planted in the registry (no signature of the package) holds nobody off: retraining is asked.
    client = MlflowClient(served.mlflow.uri)
    planted = {**recorded, "time": "2099-01-01T00:00:00+00:00", "airflow": {"run_id": "planted"}}
    planted.pop("signature", None)
    client.set_registered_model_tag(served.model, LAST_RETRAINING_TAG, json.dumps(planted))
    assert retrain(served, verdict, run_id="scheduled__5")[2]["requested"] is True
    recorded = json.loads(client.get_registered_model(served.model).tags[LAST_RETRAINING_TAG])
    assert (recorded["airflow"]["run_id"], recorded["signature"][:12]) == ("scheduled__5", "hmac-sha256:")


def test_the_trigger_is_described_in_the_run_it_starts():
    extra = {"verdict": "degraded", "reasons": ["feature drift: monthly_spend"], "model_name": "m",
             "version": "3", "window": {"start": "s", "end": "e"}, "records": 5}  # fmt: skip
    text = describe_trigger({retraining_asset("m"): [SimpleNamespace(extra=extra)]})
    assert "m v3 was **degraded**" in text
    assert "feature drift: monthly_spend" in text
    assert describe_trigger({}) == ""


def test_bad_arguments_are_refused_at_parse_time():
    with pytest.raises(ValueError, match="performance_metric"):
        MonitorModelOperator(task_id="m", model_name="x", performance_metric="auc")
    with pytest.raises(ValueError, match="needs a notifier"):
        RequestRetrainingOperator(task_id="r", model_name="x", monitoring={}, on_degraded="notify")
    with pytest.raises(ValueError, match="cooldown"):
        RequestRetrainingOperator(task_id="r", model_name="x", monitoring={}, cooldown=-5)
