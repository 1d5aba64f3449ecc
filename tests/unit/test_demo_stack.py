"""
LocalStack's REST client against a real HTTP server on loopback that answers like a busy Airflow 3.3.2: a read
answered 500 (a run created but not started yet) is asked again until the real answer comes; a write is sent
once, whatever the answer.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_mlops.demo.stack import LocalStack


class FlakyAirflow(BaseHTTPRequestHandler):
    """Answers the first *failures* requests of each path with HTTP 500, then 200; counts every request."""

    failures = 2
    seen: dict[tuple[str, str], int]

    def _answer(self) -> None:
        key = (self.command, self.path)
        self.seen[key] = self.seen.get(key, 0) + 1
        status = 500 if self.seen[key] <= self.failures else 200
        body = json.dumps({"detail": "created_dagruns.0.start_date"} if status == 500 else {"ok": True})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stack(tmp_path):
    FlakyAirflow.seen = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    live = LocalStack(tmp_path, airflow_port=server.server_address[1])
    live._tokens["admin"] = "token"  # no login endpoint on this server
    yield live
    server.shutdown()
    server.server_close()


def test_a_read_answered_500_is_asked_again_until_it_succeeds(stack):
    response = stack.api("GET", "/dags/d/dagRuns/r/upstreamAssetEvents")

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert FlakyAirflow.seen[("GET", "/api/v2/dags/d/dagRuns/r/upstreamAssetEvents")] == 3


def test_a_read_that_keeps_failing_returns_the_error_after_the_bound(stack):
    FlakyAirflow.failures = 10**6
    try:
        response = stack.api("GET", "/dags/d", retry_for=0.0)
    finally:
        FlakyAirflow.failures = 2

    assert response.status_code == 500
    assert "start_date" in response.text
    assert FlakyAirflow.seen[("GET", "/api/v2/dags/d")] == 1


def test_a_write_is_sent_once(stack):
    response = stack.api("PATCH", "/dags/d", json={"is_paused": False})

    assert response.status_code == 500
    assert FlakyAirflow.seen[("PATCH", "/api/v2/dags/d")] == 1
