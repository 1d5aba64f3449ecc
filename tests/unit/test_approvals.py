"""
``airflow-mlops approve`` when a retry of the task asks again: driven against a small stand-in of Airflow's REST
API on loopback, since a lost answer cannot be brought about on demand on a live stack.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from airflow_mlops import approvals
from airflow_mlops.approvals import EXIT_ALREADY_ANSWERED, EXIT_OTHER_OUTCOME, MAX_REPEATED_ANSWERS

RUN = "/api/v2/dags/training/dagRuns/manual_1"
TASK = f"{RUN}/taskInstances/approve/-1"


class AirflowStandIn:
    """
    One approval task instance as the REST API shows it. Each answer is taken by the next entry of *after*:
    ``"retry"`` (a new try asks again, unanswered), ``("retry", user)`` (a new try asks again and *user*
    answers it first) or ``"approved"`` (the task succeeds with that decision).
    """

    def __init__(self, after: list) -> None:
        self.after = list(after)
        self.answers: list[dict] = []
        self.try_number = 1
        self.state = "awaiting_input"
        self.responder: str | None = None
        self.result: dict | None = None

    def detail(self) -> dict:
        ti = {"dag_id": "training", "dag_run_id": "manual_1", "task_id": "approve", "map_index": -1,
              "state": self.state, "try_number": self.try_number}  # fmt: skip
        return {
            "task_instance": ti, "subject": "Promote churn v3 to champion?", "options": ["Approve", "Reject"],
            "response_received": self.responder is not None, "chosen_options": ["Approve"] if self.responder else [],
            "responded_by_user": {"id": self.responder, "name": self.responder} if self.responder else None,
        }  # fmt: skip

    def answer(self, body: dict) -> dict:
        self.answers.append(body)
        step = self.after.pop(0)
        if step == "approved":
            self.state, self.responder = "success", "reviewer"
            self.result = {
                "decision": "approved",
                "approver": "reviewer",
                "model_name": "churn",
                "version": 3,
            }
        else:
            self.try_number += 1
            self.responder = step[1] if isinstance(step, tuple) else None
        return {
            "responded_by": {"id": "reviewer", "name": "reviewer"},
            "chosen_options": body["chosen_options"],
        }

    def handle(self, method: str, path: str, body: dict) -> tuple[int, dict]:
        pending = self.state == "awaiting_input" and self.responder is None
        routes = {
            ("POST", "/auth/token"): lambda: {"access_token": "token"},
            ("GET", RUN): lambda: {"state": "running"},
            ("GET", f"{RUN}/hitlDetails"): lambda: {"hitl_details": [self.detail()] if pending else []},
            ("PATCH", f"{TASK}/hitlDetails"): lambda: self.answer(body),
            ("GET", TASK): lambda: {"state": self.state, "try_number": self.try_number},
            ("GET", f"{TASK}/hitlDetails"): self.detail,
        }
        if (method, path) == ("GET", f"{RUN}/taskInstances/approve/xcomEntries/return_value"):
            return (200, {"value": json.dumps(self.result)}) if self.result else (404, {"detail": "none"})
        return 200, routes[(method, path)]()


@pytest.fixture
def airflow(request, monkeypatch):
    monkeypatch.setattr(approvals, "POLL_INTERVAL", 0.01)
    stand_in = AirflowStandIn(request.param)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            status, payload = stand_in.handle(self.command, urlparse(self.path).path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stand_in.url = f"http://127.0.0.1:{server.server_port}"
    yield stand_in
    server.shutdown()
    server.server_close()


def _approve(airflow) -> int:
    return approvals.main(
        [
            "training",
            "manual_1",
            "--as",
            "reviewer",
            "--password",
            "pw",
            "--comment",
            "ok",
            "--url",
            airflow.url,
        ]
    )


@pytest.mark.parametrize("airflow", [["retry", "approved"]], indirect=True)
def test_a_request_asked_again_is_answered_again_once(airflow, capsys):
    assert _approve(airflow) == 0
    out = capsys.readouterr().out
    assert [answer["chosen_options"] for answer in airflow.answers] == [["Approve"], ["Approve"]]
    assert airflow.answers[1]["params_input"] == {"comment": "ok"}
    assert out.count("The task asked again") == 1
    assert (
        "The task asked again (try 2): Airflow did not keep the answer to try 1. Answering Approve again."
        in out
    )
    assert (
        "Approved: the task accepted the answer (churn v3 approved by reviewer; task approve success, try 2)"
        in out
    )


@pytest.mark.parametrize("airflow", [[("retry", "alice")]], indirect=True)
def test_a_request_asked_again_and_answered_by_someone_else_is_not_answered(airflow, capsys):
    assert _approve(airflow) == EXIT_ALREADY_ANSWERED
    err = capsys.readouterr().err
    assert len(airflow.answers) == 1
    assert "The task asked again (try 2) and alice answered meanwhile: Approve." in err


@pytest.mark.parametrize("airflow", [["retry"] * (MAX_REPEATED_ANSWERS + 1)], indirect=True)
def test_a_task_that_keeps_asking_is_answered_a_bounded_number_of_times(airflow, capsys):
    assert _approve(airflow) == EXIT_OTHER_OUTCOME
    assert len(airflow.answers) == MAX_REPEATED_ANSWERS + 1
    assert f"asked again after {MAX_REPEATED_ANSWERS + 1} answers (try {MAX_REPEATED_ANSWERS + 2})" in (
        capsys.readouterr().err
    )
