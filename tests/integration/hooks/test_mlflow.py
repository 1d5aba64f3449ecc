"""MLflowHook against a real MLflow server and against tiny loopback servers that record what they receive."""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_mlops.exceptions import ConnectionSetupError, ServiceUnavailableError
from airflow_mlops.hooks.mlflow import MLflowHook
from tests.conftest import free_port, set_connection

pytestmark = pytest.mark.integration


class RecordingMLflow:
    """A loopback HTTP server answering the MLflow calls the hook makes, recording each Authorization header."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/health"):
                    status, body = 200, b"OK"
                elif "/api/2.0/mlflow/experiments/search" in self.path:
                    status, body = 200, json.dumps({"experiments": []}).encode()
                else:
                    status, body = 404, json.dumps({"error_code": "ENDPOINT_NOT_FOUND"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def api_auth_headers(self) -> set[str | None]:
        return {auth for path, auth in self.seen if path.startswith("/api/")}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording_servers():
    servers = [RecordingMLflow(), RecordingMLflow()]
    yield servers
    for server in servers:
        server.close()


def test_connection_test_succeeds_against_the_server(mlflow_server):
    ok, message = MLflowHook().test_connection()
    assert ok, message
    assert mlflow_server.uri in message


def test_an_unknown_connection_is_named():
    with pytest.raises(ConnectionSetupError, match="'no_such_mlflow' is not defined"):
        MLflowHook(mlflow_conn_id="no_such_mlflow").get_conn()


def test_an_unreachable_server_names_connection_and_uri():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    set_connection("mlflow_unreachable", conn_type="mlflow", host=uri)
    hook = MLflowHook(mlflow_conn_id="mlflow_unreachable")

    with pytest.raises(ServiceUnavailableError) as err:
        hook.get_conn()
    assert err.value.retryable  # a server that is down may be up on the next try
    assert uri in str(err.value)
    assert "'mlflow_unreachable'" in str(err.value)
    ok, message = MLflowHook(mlflow_conn_id="mlflow_unreachable").test_connection()
    assert not ok
    assert uri in message


def test_credentials_never_reach_os_environ(mlflow_server):
    set_connection(
        "mlflow_with_password",
        conn_type="mlflow",
        host=mlflow_server.uri,
        login="alice",
        password="pw-7f3a9c",
    )
    hook = MLflowHook(mlflow_conn_id="mlflow_with_password")
    before = dict(os.environ)

    hook.client.search_experiments(max_results=1)

    changed = {key: value for key, value in os.environ.items() if before.get(key) != value}
    assert not any("pw-7f3a9c" in value for value in changed.values())
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"} & set(
        changed
    )
    assert "pw-7f3a9c" not in hook.describe()
    # A child process (the local training runtime) gets them in its own environment only.
    assert hook.child_env()["MLFLOW_TRACKING_PASSWORD"] == "pw-7f3a9c"


def test_two_connections_send_only_their_own_credentials(recording_servers):
    basic_server, token_server = recording_servers
    set_connection("mlflow_basic", conn_type="mlflow", host=basic_server.uri, login="alice", password="pw-a")
    set_connection("mlflow_token", conn_type="mlflow", host=token_server.uri, extra={"token": "tok-b"})
    basic = MLflowHook(mlflow_conn_id="mlflow_basic").client
    token = MLflowHook(mlflow_conn_id="mlflow_token").client

    # Interleaved calls: each server must only ever see its own connection's credentials.
    basic.search_experiments()
    token.search_experiments()
    basic.search_experiments()

    expected_basic = "Basic " + base64.b64encode(b"alice:pw-a").decode()
    assert basic_server.api_auth_headers() == {expected_basic}
    assert token_server.api_auth_headers() == {"Bearer tok-b"}
    assert len([path for path, _ in basic_server.seen if path.startswith("/api/")]) == 2


def test_credentials_reach_mlflow_worker_threads(recording_servers):
    """MLflow moves artifacts in thread pools; requests made there still carry the connection's credentials."""
    from concurrent.futures import ThreadPoolExecutor

    server, _ = recording_servers
    set_connection("mlflow_threads", conn_type="mlflow", host=server.uri, extra={"token": "tok-threads"})
    client = MLflowHook(mlflow_conn_id="mlflow_threads").client

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: client.search_experiments(), range(2)))

    assert server.api_auth_headers() == {"Bearer tok-threads"}


def test_connection_test_of_an_unknown_connection_says_so():
    ok, message = MLflowHook(mlflow_conn_id="no_such_mlflow").test_connection()
    assert not ok
    assert "'no_such_mlflow' is not defined" in message
