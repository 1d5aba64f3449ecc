"""
The local target's endpoint proxy, as a real process over real HTTP: it forwards to the model server in the
state file, and its status endpoint tells anyone who can reach the port the serving version and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from airflow_mlops.serving.proxy import STATUS_PATH, VERSION_HEADER
from tests.conftest import free_port

SERVER_PID = 424242


class _Backend(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"pong"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def backend():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(tmp_path):
    state = tmp_path / "serving" / "churn" / "state.json"
    state.parent.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving.proxy", "--port", str(port), "--state", str(state)],
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + STATUS_PATH, timeout=1)
            break
        except requests.ConnectionError:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)
    yield {"url": url, "state": state, "pid": proc.pid, "port": port}
    proc.terminate()
    proc.wait(timeout=10)


def write_state(path, backend_port: int, version: str = "3") -> None:
    path.write_text(
        json.dumps(
            {
                "endpoint": "http://127.0.0.1:5001",
                "proxy": {"pid": 1111, "port": 5001, "log": str(path.parent / "logs" / "proxy.log")},
                "server": {
                    "pid": SERVER_PID,
                    "host": "127.0.0.1",
                    "port": backend_port,
                    "version": version,
                    "model_uri": "models:/churn/3",
                    "log": str(path.parent / "logs" / "server-v3.log"),
                },
            }
        )
    )


def test_the_status_answers_the_serving_version_and_nothing_else(proxy, backend):
    write_state(proxy["state"], backend)

    response = requests.get(proxy["url"] + STATUS_PATH, timeout=5)

    assert response.status_code == 200
    assert response.json() == {"proxy": "ok", "version": "3"}
    assert response.headers[VERSION_HEADER] == "3"
    seen = response.text + json.dumps(dict(response.headers))
    for private in (str(proxy["pid"]), str(SERVER_PID), str(backend), str(proxy["state"]), "models:/", "log"):
        assert private not in seen


def test_the_status_says_no_version_while_nothing_is_served(proxy):
    response = requests.get(proxy["url"] + STATUS_PATH, timeout=5)

    assert response.json() == {"proxy": "ok", "version": None}
    assert VERSION_HEADER not in response.headers


def test_requests_are_forwarded_to_the_model_server_in_the_state_file(proxy, backend):
    write_state(proxy["state"], backend, version="7")

    response = requests.get(proxy["url"] + "/ping", timeout=5)

    assert (response.status_code, response.text) == (200, "pong")
    assert response.headers[VERSION_HEADER] == "7"
