"""
The endpoint proxy in front of a real ``mlflow models serve``: a keep-alive prediction through it costs about
what the model server takes (the ratio measured here, on this machine, against the direct call), and a model
server killed with ``kill -9`` shows in the proxy's status.

One model server for the module, in file order: the latency test first, then the kill.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time

import psutil
import pytest
import requests

from airflow_mlops.serving.capture import check_capture_settings
from airflow_mlops.serving.proxy import STATUS_PATH
from tests.support.proxy import save_sklearn_model, start_model_server, start_proxy, write_state

pytestmark = pytest.mark.integration

ROW = {f"f{i}": round(0.1 * i - 0.7, 2) for i in range(20)}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy-latency")
    server = start_model_server(save_sklearn_model(folder), folder / "server.log")
    write_state(folder / "off" / "state.json", server.port)
    write_state(
        folder / "on" / "state.json",
        server.port,
        capture=check_capture_settings({"uri": str(folder / "store"), "flush_seconds": 600}),
    )
    proxies = {
        "off": start_proxy(folder / "off" / "state.json"),
        "on": start_proxy(folder / "on" / "state.json"),
    }
    yield {"server": server, **proxies}
    for running in (*proxies.values(), server):
        running.stop()


def predict(conn: http.client.HTTPConnection, body: bytes) -> float:
    started = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    return time.perf_counter() - started


def test_a_keep_alive_prediction_through_the_proxy_takes_little_more_than_the_direct_call(served):
    ports = {
        "direct": served["server"].port,
        "proxy": served["off"].port,
        "proxy with capture": served["on"].port,
    }
    conns = {path: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for path, port in ports.items()}
    body = json.dumps({"dataframe_records": [ROW]}).encode()
    times: dict[str, list[float]] = {path: [] for path in ports}
    for index in range(60):  # interleaved, so a busy moment of the machine hits every path alike
        for path in conns:
            elapsed = predict(conns[path], body)
            if index >= 10:  # the first ones warm the connections and the model up
                times[path].append(elapsed)
    for conn in conns.values():
        conn.close()

    direct = statistics.median(times["direct"])
    for path in ("proxy", "proxy with capture"):
        through = statistics.median(times[path])
        # A proxy that holds small writes for the client's delayed ACK takes ~40 ms more than a 3 ms model.
        assert through <= 3 * direct + 0.002, (
            f"{path}: median {through * 1000:.2f} ms, direct {direct * 1000:.2f} ms"
        )


def test_a_model_server_killed_with_sigkill_shows_in_the_status(served):
    proxy = served["off"]
    assert requests.get(proxy.url + STATUS_PATH, timeout=10).status_code == 200
    listener = next(
        psutil.Process(c.pid)
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == served["server"].port and c.pid
    )

    listener.kill()
    listener.wait(timeout=30)
    status = requests.get(proxy.url + STATUS_PATH, timeout=10)
    prediction = requests.post(proxy.url + "/invocations", json={"dataframe_records": [ROW]}, timeout=10)

    assert status.status_code == 503
    assert status.json()["proxy"] == "backend_unavailable"
    assert status.json()["reason"] == "the model server of version 3 does not answer: connection refused"
    assert prediction.status_code == 502
