"""
The local target's endpoint proxy, as a real process over real sockets: it forwards to the model server in the
state file, its status endpoint tells anyone who can reach the port the serving version and whether the model
server answers (nothing else), and it refuses bodies that would hurt it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest
import requests

from airflow_mlops.serving.proxy import STATUS_PATH, VERSION_HEADER, mirrored
from tests.support.proxy import start_proxy, start_stub_model_server, write_state

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
    running = start_proxy(state)
    yield {"url": running.url, "state": state, "pid": running.proc.pid, "port": running.port}
    running.stop()


@pytest.fixture
def stub(tmp_path):
    """A stand-in model server process and a proxy in front of it, refusing bodies over 1,024 bytes."""
    server = start_stub_model_server()
    try:
        state = tmp_path / "serving" / "churn" / "state.json"
        write_state(state, server.port)
        running = start_proxy(state, "--max-body-bytes", "1024", "--read-timeout", "1")
        yield {"server": server, "proxy": running, "state": state}
        running.stop()
    finally:
        server.stop()


def write_full_state(path, backend_port: int, version: str = "3") -> None:
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


def raw_request(
    port: int, data: bytes, timeout: float = 10.0
) -> tuple[http.client.HTTPResponse, bytes, float]:
    """Send *data* as it is on a new connection; the answer, its body and the seconds it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response, body, time.monotonic() - started


def post_head(length: int | str, content_type: str | None = "application/json", **extra: str) -> bytes:
    lines = ["POST /invocations HTTP/1.1", "Host: endpoint", f"Content-Length: {length}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_the_status_answers_the_serving_version_and_nothing_else(proxy, backend):
    write_full_state(proxy["state"], backend)

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
    write_full_state(proxy["state"], backend, version="7")

    response = requests.get(proxy["url"] + "/ping", timeout=5)

    assert (response.status_code, response.text) == (200, "pong")
    assert response.headers[VERSION_HEADER] == "7"


def test_a_model_server_killed_with_sigkill_turns_the_status_to_503_with_the_reason_until_it_is_back(stub):
    server, proxy = stub["server"], stub["proxy"]
    client = requests.Session()  # one keep-alive connection, as real clients hold
    assert client.post(proxy.url + "/invocations", json={"x": 1}, timeout=5).status_code == 200
    assert client.get(proxy.url + STATUS_PATH, timeout=5).json() == {"proxy": "ok", "version": "3"}

    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    status = client.get(proxy.url + STATUS_PATH, timeout=10)
    prediction = client.post(proxy.url + "/invocations", json={"x": 1}, timeout=10)

    assert status.status_code == 503
    report = status.json()
    assert report["proxy"] == "backend_unavailable"
    assert report["version"] == "3"
    assert report["reason"] == "the model server of version 3 does not answer: connection refused"
    assert report["since"].endswith("Z")
    assert str(server.port) not in status.text
    assert str(server.proc.pid) not in status.text
    assert prediction.status_code == 502
    assert prediction.json()["error_code"] == "BACKEND_UNAVAILABLE"

    # Started again on the same port (as the local target's watchdog does): the same client is served again.
    revived = start_stub_model_server(server.port)
    try:
        assert client.get(proxy.url + STATUS_PATH, timeout=5).json() == {"proxy": "ok", "version": "3"}
        again = client.post(proxy.url + "/invocations", json={"x": 1}, timeout=10)
        assert again.status_code == 200
        again = client.post(proxy.url + "/invocations", json={"x": 1}, timeout=10)
        assert again.status_code == 200
    finally:
        revived.stop()


def test_a_kept_connection_the_model_server_closed_is_replaced_without_failing_the_request(stub):
    server, proxy = stub["server"], stub["proxy"]
    client = requests.Session()
    assert client.post(proxy.url + "/invocations", json={"x": 1}, timeout=5).status_code == 200

    server.stop()  # the proxy's idle connection to it is now closed by the other side
    revived = start_stub_model_server(server.port)
    try:
        answers = [client.post(proxy.url + "/invocations", json={"x": 1}, timeout=5) for _ in range(3)]
    finally:
        revived.stop()

    assert [a.status_code for a in answers] == [200, 200, 200]


def test_a_body_declared_over_the_limit_is_answered_413_before_it_is_sent(stub):
    response, body, took = raw_request(stub["proxy"].port, post_head(2 * 1024**3) + b'{"dataframe')

    assert response.status == 413
    assert json.loads(body)["error_code"] == "REQUEST_TOO_LARGE"
    assert "at most 1024 bytes" in json.loads(body)["message"]
    assert response.getheader("Connection") == "close"
    assert took < 1.0  # not after the read timeout: nothing of the body was waited for


def test_a_client_that_asks_before_sending_a_large_body_is_refused_without_a_100_continue(stub):
    response, body, _ = raw_request(stub["proxy"].port, post_head(5000, Expect="100-continue"))

    assert response.status == 413
    assert json.loads(body)["error_code"] == "REQUEST_TOO_LARGE"


def test_four_requests_declaring_4_gb_are_refused_and_the_proxy_stays_small(tmp_path):
    server = start_stub_model_server()
    state = tmp_path / "state.json"
    write_state(state, server.port)
    try:
        proxy = start_proxy(state)  # the default limit
    except BaseException:
        server.stop()
        raise
    try:
        process = psutil.Process(proxy.proc.pid)
        before = process.memory_info().rss
        answers: list[int] = []

        def send() -> None:
            response, _, _ = raw_request(proxy.port, post_head(4 * 1024**3) + b"\0" * (4 * 1024 * 1024))
            answers.append(response.status)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        after = process.memory_info()
        status = requests.get(proxy.url + STATUS_PATH, timeout=5)
    finally:
        proxy.stop()
        server.stop()

    assert answers == [413, 413, 413, 413]
    assert after.rss - before < 20 * 1024 * 1024
    assert after.vms < 2 * 1024**3
    assert status.status_code == 200  # and it still serves


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit(stub):
    port = stub["proxy"].port
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: endpoint\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    small = b"".join(b"64\r\n" + b"x" * 100 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    large = b"".join(b"258\r\n" + b"x" * 600 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"

    accepted, accepted_body, _ = raw_request(port, head + small)
    refused, refused_body, _ = raw_request(port, head + large)

    assert accepted.status == 200
    assert json.loads(accepted_body)["predictions"] == [300]
    assert refused.status == 413
    assert json.loads(refused_body)["error_code"] == "REQUEST_TOO_LARGE"


def test_a_body_that_stops_arriving_is_answered_408_after_the_read_timeout(stub):
    response, body, took = raw_request(stub["proxy"].port, post_head(1000) + b'{"datafram')

    assert response.status == 408
    assert json.loads(body)["error_code"] == "REQUEST_TIMEOUT"
    assert 0.9 < took < 5.0  # --read-timeout 1, not the model server's timeout


def test_a_prediction_without_content_type_is_answered_415_and_typed_ones_are_forwarded(stub):
    url = stub["proxy"].url + "/invocations"

    untyped = requests.post(url, data=b'{"dataframe_records": []}', timeout=5)
    typed = requests.post(url, data=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}, timeout=5)

    assert untyped.status_code == 415
    assert untyped.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "Content-Type" in untyped.json()["message"]
    assert typed.status_code == 200
    assert typed.json() == {"predictions": [8], "content_type": "text/csv"}


def test_header_names_are_read_in_any_case(stub):
    body = b"a,b\n1,2\n"
    head = (
        "POST /invocations HTTP/1.1\r\nhost: endpoint\r\ncontent-length: 8\r\ncontent-type: text/csv\r\n"
        "x-request-ID: client-7\r\n\r\n"
    )

    response, answer, _ = raw_request(stub["proxy"].port, head.encode() + body)

    assert response.status == 200
    assert json.loads(answer) == {"predictions": [8], "content_type": "text/csv"}
    assert response.getheader("X-Request-Id") == "client-7"


def test_requests_with_bare_line_feeds_and_pipelined_requests_are_each_answered(stub):
    # Lines ended by "\n" alone are taken, as http.server takes them; a body holding blank lines is still body.
    body = b"a,b\r\n\r\n1,2\n\n"
    bare = f"POST /invocations HTTP/1.1\nHost: endpoint\nContent-Length: {len(body)}\nContent-Type: text/csv\n\n"
    response, answer, _ = raw_request(stub["proxy"].port, bare.encode() + body)

    assert response.status == 200
    assert json.loads(answer) == {"predictions": [len(body)], "content_type": "text/csv"}

    # Two requests sent at once on one connection: two answers, in order.
    first, second = b"x\n1\n", b"x\n1\n2\n"
    with socket.create_connection(("127.0.0.1", stub["proxy"].port), timeout=10) as sock:
        sock.sendall(b"".join(
            f"POST /invocations HTTP/1.1\r\nHost: e\r\nContent-Length: {len(b)}\r\nContent-Type: text/csv\r\n\r\n".encode() + b
            for b in (first, second)
        ))  # fmt: skip
        answers = []
        with sock.makefile("rb") as stream:  # one reader for both answers
            for _ in range(2):
                status = stream.readline()
                fields = http.client.parse_headers(stream)
                answers.append((status.split()[1], json.loads(stream.read(int(fields["Content-Length"])))))
    assert answers == [(b"200", {"predictions": [len(first)], "content_type": "text/csv"}),
                       (b"200", {"predictions": [len(second)], "content_type": "text/csv"})]  # fmt: skip


def test_a_malformed_content_length_is_answered_400(stub):
    response, body, _ = raw_request(stub["proxy"].port, post_head("-5"))

    assert response.status == 400
    assert json.loads(body)["error_code"] == "BAD_REQUEST"


def test_the_share_of_requests_mirrored_to_a_shadow_is_chosen_by_request_id():
    ids = [f"req-{i}" for i in range(10_000)]

    tenth = {rid for rid in ids if mirrored(rid, 10)}

    assert 0.08 < len(tenth) / len(ids) < 0.12
    # A larger share keeps the requests mirrored before.
    assert tenth <= {rid for rid in ids if mirrored(rid, 50)}
    assert all(mirrored(rid, 100) for rid in ids)
