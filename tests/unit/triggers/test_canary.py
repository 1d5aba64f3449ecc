"""The canary bake trigger: real captures (the capture writer's Parquet files) of canary and baseline, judged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd

from airflow_mlops.serving.canary import CanaryPolicy
from airflow_mlops.serving.capture import CaptureWriter
from airflow_mlops.triggers.canary import CanaryBakeTrigger
from tests.support.deferred import fire

START = datetime.now(UTC) - timedelta(minutes=5)


def capture(root, requests: list[tuple[str, int]]) -> None:
    """Capture *requests* ``(version, status)`` of one row each, answered 0 in about 5 ms."""
    writer = CaptureWriter(str(root), flush_seconds=60)
    for index, (version, status) in enumerate(requests):
        row = json.dumps({"dataframe_records": [{"tenure_months": index % 100}]}).encode()
        body = b'{"predictions": [0]}' if status == 200 else b'{"error_code": "BAD_REQUEST"}'
        writer.submit("churn", version, f"r{index}", status, row, body, latency_ms=5.0 + index % 3)
    assert writer.flush()
    writer.close()


def trigger(root, deadline: datetime, final: datetime | None = None, **policy) -> CanaryBakeTrigger:
    return CanaryBakeTrigger(
        model_name="churn", canary_version="2", baseline_version="1", capture_uri=str(root),
        start=START.isoformat(), deadline=deadline.isoformat(), final_deadline=(final or deadline).isoformat(),
        policy=CanaryPolicy(percent=10, interval=0.05, min_requests=30, **policy).to_dict(), aws_conn_id=None,
    )  # fmt: skip


def test_serialize_returns_exactly_the_constructor_arguments(tmp_path):
    made = trigger(tmp_path, START + timedelta(minutes=10))

    classpath, kwargs = made.serialize()

    assert classpath == "airflow_mlops.triggers.canary.CanaryBakeTrigger"
    assert CanaryBakeTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_a_canary_failing_live_requests_fails_at_the_first_measurement(tmp_path):
    capture(tmp_path, [("1", 200)] * 300 + [("2", 500 if i % 20 == 19 else 200) for i in range(100)])

    event = fire(trigger(tmp_path, datetime.now(UTC) + timedelta(hours=1)))

    assert (event["status"], event["verdict"]) == ("success", "fail")
    assert "the canary failed 5 of 100 live requests (5.0%), the baseline 0 of 300" in event["message"]
    assert len(event["measurements"]) == 1
    assert event["last"]["canary"]["errors"] == 5


def test_a_good_canary_passes_at_its_deadline(tmp_path):
    capture(tmp_path, [("1", 200)] * 300 + [("2", 200)] * 100)

    event = fire(trigger(tmp_path, datetime.now(UTC) + timedelta(seconds=0.3)))

    assert event["verdict"] == "pass"
    assert len(event["measurements"]) >= 2  # measured every interval until the deadline
    assert event["message"].startswith("the canary passed its bake: canary 100 live requests (0 failed)")


def test_too_few_requests_extend_the_bake_then_end_inconclusive(tmp_path):
    capture(tmp_path, [("1", 200)] * 300 + [("2", 200)] * 5)
    now = datetime.now(UTC)

    event = fire(trigger(tmp_path, now + timedelta(seconds=0.2), now + timedelta(seconds=0.6)))

    assert event["verdict"] == "inconclusive"
    assert event["measurements"][-1]["time"] >= (now + timedelta(seconds=0.6)).isoformat(timespec="seconds")
    assert "too few live requests to judge: canary 5, baseline 300" in event["message"]


def test_labels_that_arrive_during_the_bake_fail_a_canary_that_answers_worse(tmp_path):
    captures, labels = tmp_path / "captures", tmp_path / "labels.parquet"
    capture(captures, [("1", 200)] * 300 + [("2", 200)] * 100)  # both sides answer 0, without errors
    # The truth: the baseline's requests were 0 (it was right), the canary's 1 (it was wrong), 80 of them labelled.
    rows = [(f"r{i}", 0) for i in range(0, 300, 3)] + [(f"r{i}", 1) for i in range(300, 380)]
    pd.DataFrame(rows, columns=["_request_id", "label"]).to_parquet(labels)

    event = fire(trigger(captures, datetime.now(UTC) + timedelta(hours=1), labels_uri=str(labels)))

    assert event["verdict"] == "fail"
    assert "the canary's accuracy_score on 80 labelled live requests is 0.0, the baseline's 1.0 on 100" in (
        event["message"]
    )
    performance = event["last"]["performance"]
    assert (performance["canary"], performance["baseline"], performance["drop"]) == (0.0, 1.0, 1.0)


def test_labels_for_too_few_requests_leave_the_verdict_to_the_other_measures(tmp_path):
    captures, labels = tmp_path / "captures", tmp_path / "labels.csv"
    capture(captures, [("1", 200)] * 300 + [("2", 200)] * 100)
    pd.DataFrame([("r300", 1), ("r1", 0)], columns=["_request_id", "label"]).to_csv(labels, index=False)

    event = fire(trigger(captures, datetime.now(UTC) + timedelta(seconds=0.2), labels_uri=str(labels)))

    assert event["verdict"] == "pass"
    performance = event["last"]["performance"]
    assert (performance["canary_labelled"], performance["baseline_labelled"]) == (1, 1)
    assert performance["drop"] is None  # 30 labels needed on each side
