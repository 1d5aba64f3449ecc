"""
Capture on KServe: the InferenceService's own logger is configured (checked against the CRD schema), and the
receiver, as a real process, lands the logged requests and answers in the local target's capture layout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID, VERSION, read_captures
from airflow_mlops.serving.capture_receiver import logger_key
from airflow_mlops.serving.kserve import KServeTarget
from tests.conftest import free_port
from tests.support.kubernetes import spec_validator


def test_the_logger_is_set_on_the_predictor_and_names_model_and_version():
    target = KServeTarget(capture_logger={"url": "http://mlops-capture.monitoring:8080", "mode": "all"})
    manifest = target.build_manifest("churn", "7", "s3://models/churn/7")

    logger = manifest["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    parts = urlsplit(logger["url"])
    assert (parts.netloc, parse_qs(parts.query)) == (
        "mlops-capture.monitoring:8080",
        {"model": ["churn"], "version": ["7"]},
    )
    assert [e.message for e in spec_validator().iter_errors(manifest["spec"])] == []
    assert "logger" not in KServeTarget().build_manifest("churn", "7", "s3://m")["spec"]["predictor"]


@pytest.mark.parametrize(
    "logger",
    [{"url": "ftp://x"}, {"url": "http://u:p@x"}, {"url": "http://x", "mode": "some"}, {"uri": "http://x"}],
)
def test_a_bad_logger_setting_is_refused(logger):
    with pytest.raises(ValueError, match="capture_logger"):
        KServeTarget(capture_logger=logger)


def test_the_receiver_lands_logged_pairs_in_the_capture_layout(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving.capture_receiver", "--port",
         str(port), "--root", str(tmp_path), "--flush-seconds", "600"],
        stderr=subprocess.PIPE, env={**os.environ, "MLOPS_CAPTURE_TOKEN": "t0ken"},
    )  # fmt: skip
    # The key the KServe target writes into the logger URL of version 7.
    url = f"http://127.0.0.1:{port}/?model=churn&version=7&key={logger_key('t0ken', 'churn', '7')}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)
        v2_request = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.5, 2.5]}]}
        v2_answer = {"outputs": [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 1]}]}
        events = [  # an answer may arrive before its request
            ("ev-2", "response", {"predictions": [1]}),
            ("ev-1", "request", {"dataframe_records": [{"x": 9.0}]}),
            ("ev-2", "request", {"dataframe_records": [{"x": 4.0}]}),
            ("ev-1", "response", {"predictions": [0]}),
            ("ev-3", "request", v2_request),
            ("ev-3", "response", v2_answer),
        ]
        for event_id, kind, body in events:
            response = requests.post(
                url, data=json.dumps(body), timeout=10,
                headers={"ce-id": event_id, "ce-type": f"org.kubeflow.serving.inference.{kind}",
                         "ce-specversion": "1.0", "ce-source": "http://localhost:9081/",
                         "Content-Type": "application/json"},
            )  # fmt: skip
            assert response.status_code == 202
        refused = requests.post(url, data="{}", timeout=10, headers={"ce-type": "x"})
        assert refused.status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

    now = datetime.now(UTC)
    captured = read_captures(str(tmp_path), "churn", now - timedelta(hours=1), now + timedelta(hours=1))
    captured = captured.sort_values([REQUEST_ID, "x"])
    assert captured[REQUEST_ID].tolist() == ["ev-1", "ev-2", "ev-3", "ev-3"]
    assert captured["x"].tolist() == [9.0, 4.0, 1.5, 2.5]
    assert captured[PREDICTION].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert set(captured[VERSION]) == {"7"}


def test_the_logger_url_carries_the_key_of_its_model_version_from_the_token_connection():
    from tests.conftest import set_connection

    set_connection("mlops_capture_test", conn_type="generic", password="shared-token")
    target = KServeTarget(
        capture_logger={"url": "http://mlops-capture.monitoring:8080", "token_conn_id": "mlops_capture_test",
                        "traffic_header": True},
    )  # fmt: skip

    logger = target.build_manifest("churn", "7", "s3://models/churn/7")["spec"]["predictor"]["logger"]

    query = parse_qs(urlsplit(logger["url"]).query)
    assert query["key"] == [logger_key("shared-token", "churn", "7")]
    assert "shared-token" not in logger["url"]
    assert logger["metadataHeaders"] == ["X-MLOps-Traffic"]  # smoke tests and probes stay apart


def test_a_token_connection_without_a_password_is_a_configuration_error():
    from airflow_mlops.exceptions import ConfigurationError
    from tests.conftest import set_connection

    set_connection("mlops_capture_empty", conn_type="generic")
    target = KServeTarget(capture_logger={"url": "http://r:8080", "token_conn_id": "mlops_capture_empty"})

    with pytest.raises(ConfigurationError, match="mlops_capture_empty"):
        target.build_manifest("churn", "7", "s3://models/churn/7")
