"""
The ``[mlops] serving_max_body_bytes`` and ``serving_read_timeout`` options reach the endpoint proxy the local
target starts: a larger body is answered 413, a body that stops arriving 408. A stand-in model server behind it.
"""

from __future__ import annotations

import socket

import pytest
import requests

from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.serving import local
from airflow_mlops.serving.local import LocalServerTarget
from tests.conftest import free_port
from tests.support.proxy import start_stub_model_server, write_state

pytestmark = pytest.mark.integration

MODEL = "proxy_limits"


@pytest.fixture
def stub():
    running = start_stub_model_server()
    yield running
    running.stop()


def test_configured_body_limit_and_read_timeout_reach_the_endpoint_proxy(tmp_path, monkeypatch, stub):
    monkeypatch.setenv("AIRFLOW__MLOPS__SERVING_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("AIRFLOW__MLOPS__SERVING_READ_TIMEOUT", "1.5")
    target = LocalServerTarget(state_dir=str(tmp_path), port=free_port())
    write_state(target.state_path(MODEL), stub.port)
    proxy = target._start_proxy(MODEL)
    try:
        small = requests.post(
            f"{target.endpoint}/invocations", data=b"x" * 900, headers={"Content-Type": "text/csv"}, timeout=10
        )
        large = requests.post(
            f"{target.endpoint}/invocations", data=b"x" * 1001, headers={"Content-Type": "text/csv"}, timeout=10
        )
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
            sock.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                b"Content-Length: 500\r\n\r\n0123456789"
            )  # 10 of the 500 bytes declared, then nothing
            slow = sock.recv(4096).decode()
    finally:
        local.terminate(proxy)

    assert small.status_code == 200
    assert large.status_code == 413
    assert "1000" in large.json()["message"]
    assert slow.startswith("HTTP/1.1 408")
    assert "1.5 s" in slow


@pytest.mark.parametrize(
    ("option", "value"), [("SERVING_MAX_BODY_BYTES", "0"), ("SERVING_READ_TIMEOUT", "-1")]
)
def test_a_limit_that_is_not_positive_fails_the_deploy_before_anything_starts(
    tmp_path, monkeypatch, option, value
):
    monkeypatch.setenv(f"AIRFLOW__MLOPS__{option}", value)
    target = LocalServerTarget(state_dir=str(tmp_path), port=free_port())
    children = dict(local._CHILDREN)

    with pytest.raises(ConfigurationError, match=f"{option.lower()} must be more than 0, got {value}"):
        target.deploy(MODEL, "1", "models:/proxy_limits/1")

    assert local._CHILDREN == children
    assert target.read_state(MODEL) is None
