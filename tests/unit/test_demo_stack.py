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


class BusyOnCreate(BaseHTTPRequestHandler):
    """Reads and writes answer 200; creating a run answers 500 ("Database error") *failures* times first, and
    409 for a run id it already created."""

    failures = 2
    failures_create = False
    created: set[str]
    posted: list[dict]

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"dag_id": "d"})

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, {"is_paused": False})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posted.append(body)
        if len(self.posted) <= self.failures:
            if self.failures_create:  # the run was written, the answer lost
                self.created.add(body["dag_run_id"])
            self._send(500, {"detail": {"reason": "Database error"}})
        elif body["dag_run_id"] in self.created:
            self._send(409, {"detail": "already exists"})
        else:
            self.created.add(body["dag_run_id"])
            self._send(200, {"dag_run_id": body["dag_run_id"]})

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("created_anyway", [False, True])
def test_a_run_whose_creation_is_answered_500_is_triggered_once_with_one_run_id(tmp_path, created_anyway):
    BusyOnCreate.created, BusyOnCreate.posted, BusyOnCreate.failures_create = set(), [], created_anyway
    server = ThreadingHTTPServer(("127.0.0.1", 0), BusyOnCreate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        live = LocalStack(tmp_path, airflow_port=server.server_address[1])
        live._tokens["admin"] = "token"

        run_id = live.trigger("d", {"model_name": "m"})
    finally:
        server.shutdown()
        server.server_close()

    assert run_id.startswith("manual__")
    assert BusyOnCreate.created == {run_id}  # one run, whichever request created it
    assert {post["dag_run_id"] for post in BusyOnCreate.posted} == {run_id}
    assert len(BusyOnCreate.posted) == 3  # two answered 500, the third created it (or found it created: 409)
