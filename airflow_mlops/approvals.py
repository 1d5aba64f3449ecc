"""
``airflow-mlops approve|reject DAG RUN``: answer a pending model approval through Airflow's public REST API.

It logs in with ``POST /auth/token`` (or uses a token it is given), finds the run's pending
Human-in-the-loop request (``GET /api/v2/dags/{dag}/dagRuns/{run}/hitlDetails``) and answers it
(``PATCH .../taskInstances/{task}/{map_index}/hitlDetails``) as the logged-in user, with an optional comment.
The password and the token are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

APPROVE = "Approve"
REJECT = "Reject"
#: Environment variables read when the matching option is not given.
URL_ENV = "AIRFLOW__API__BASE_URL"
USER_ENV = "MLOPS_AIRFLOW_USER"
PASSWORD_ENV = "MLOPS_AIRFLOW_PASSWORD"  # noqa: S105 - the name of a variable, not a password
TOKEN_ENV = "MLOPS_AIRFLOW_TOKEN"  # noqa: S105 - the name of a variable, not a token
DEFAULT_URL = "http://localhost:8080"
PENDING_STATES = ("awaiting_input", "deferred")


class ApprovalCommandError(RuntimeError):
    """The approval could not be answered; the message says why and what to do."""


@dataclass
class PendingRequest:
    """A Human-in-the-loop request of a DAG run that nobody answered yet."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    subject: str
    options: list[str]

    def describe(self) -> str:
        return f"{self.dag_id} {self.run_id} (task {self.task_id}): {self.subject}"


class ApprovalClient:
    """
    Answers Human-in-the-loop approvals through Airflow's REST API.

    :param url: Base URL of the Airflow api-server, e.g. ``http://localhost:8080``.
    :param user: User to log in as (with *password*); ignored when *token* is given.
    :param password: That user's password.
    :param token: An API token (``POST /auth/token``'s ``access_token``), instead of user and password.
    :param timeout: Seconds to wait for each request.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not token and not (user and password):
            raise ValueError("Give a token, or a user and a password")
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the password or the token
        return f"ApprovalClient(url={self.url!r}, user={self.user!r})"

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as err:
            raise ApprovalCommandError(
                f"Cannot reach Airflow at {self.url} ({type(err).__name__}); is the api-server running? "
                f"Give its address with --url or {URL_ENV}."
            ) from None

    def token(self) -> str:
        if self._token is None:
            response = self._request(
                "POST", f"{self.url}/auth/token", json={"username": self.user, "password": self._password}
            )
            if response.status_code in (400, 401, 403):
                raise ApprovalCommandError(
                    f"Cannot log in to {self.url} as {self.user!r}: wrong user name or password "
                    f"(HTTP {response.status_code})."
                )
            if response.status_code >= 300:
                raise ApprovalCommandError(
                    f"Cannot log in to {self.url} as {self.user!r}: HTTP {response.status_code} "
                    f"{_detail(response)}"
                )
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        response = self._request(method, f"{self.url}/api/v2{path}", headers=headers, **kwargs)
        if response.status_code == 401:
            who = f"user {self.user!r}" if self.user else "the token"
            raise ApprovalCommandError(
                f"Airflow at {self.url} does not accept {who} (HTTP 401): log in again."
            )
        return response

    def _get(self, path: str, what: str, **params: Any) -> dict[str, Any]:
        response = self.api("GET", path, params=params)
        if response.status_code >= 300:
            raise ApprovalCommandError(f"Cannot read {what}: HTTP {response.status_code} {_detail(response)}")
        return response.json()

    def requests_of(self, dag_id: str = "~", run_id: str = "~", pending: bool | None = None) -> list[dict]:
        """The Human-in-the-loop requests of a run (``~``: of every DAG or run), pending ones only if asked."""
        params: dict[str, Any] = {"limit": 100}
        if pending is not None:
            params["response_received"] = str(not pending).lower()
        where = f"/dags/{quote(dag_id, safe='~')}/dagRuns/{quote(run_id, safe='~')}/hitlDetails"
        return list(self._get(where, "the Human-in-the-loop requests", **params)["hitl_details"])

    def pending(self, dag_id: str = "~", run_id: str = "~") -> list[PendingRequest]:
        """Requests nobody answered yet whose task still waits for the answer."""
        found = []
        for detail in self.requests_of(dag_id, run_id, pending=True):
            ti = detail.get("task_instance") or {}
            if ti.get("state") not in PENDING_STATES:
                continue
            found.append(
                PendingRequest(
                    dag_id=ti["dag_id"], run_id=ti["dag_run_id"], task_id=ti["task_id"],
                    map_index=int(ti.get("map_index", -1)), subject=detail.get("subject", ""),
                    options=list(detail.get("options") or []),
                )
            )  # fmt: skip
        return found

    def find(self, dag_id: str, run_id: str, task_id: str | None = None) -> PendingRequest:
        """The one pending approval of the run (of *task_id* if given); else a clear error."""
        run = self.api("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}")
        if run.status_code == 404:
            raise ApprovalCommandError(f"DAG {dag_id!r} has no run {run_id!r}.\n{self._pending_listing()}")
        if run.status_code >= 300:
            raise ApprovalCommandError(f"Cannot read run {run_id!r} of {dag_id!r}: HTTP {run.status_code}")
        candidates = [
            request
            for request in self.pending(dag_id, run_id)
            if APPROVE in request.options and REJECT in request.options
            and (task_id is None or request.task_id == task_id)
        ]  # fmt: skip
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            tasks = ", ".join(request.task_id for request in candidates)
            raise ApprovalCommandError(
                f"Run {run_id!r} of {dag_id!r} waits for several approvals (tasks {tasks}); name one with --task."
            )
        answered = [
            detail
            for detail in self.requests_of(dag_id, run_id, pending=False)
            if task_id is None or (detail.get("task_instance") or {}).get("task_id") == task_id
        ]
        if answered:
            detail = answered[-1]
            who = (detail.get("responded_by_user") or {}).get("name") or "nobody"
            chosen = ", ".join(detail.get("chosen_options") or []) or "nothing"
            raise ApprovalCommandError(
                f"The approval of {dag_id} {run_id} (task {detail['task_instance']['task_id']}) was already "
                f"answered: {chosen} by {who} at {detail.get('responded_at')}. An answer cannot be changed."
            )
        state = self._get(f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}", "the run")["state"]
        raise ApprovalCommandError(
            f"No pending approval for {dag_id} {run_id}"
            + (f" (task {task_id})" if task_id else "")
            + f"; the run is {state}.\n{self._pending_listing()}"
        )

    def _pending_listing(self) -> str:
        waiting = [request for request in self.pending() if APPROVE in request.options]
        if not waiting:
            return "Nothing is waiting for approval."
        return "Waiting for approval:\n" + "\n".join(f"  {request.describe()}" for request in waiting)

    def answer(self, request: PendingRequest, option: str, comment: str | None = None) -> dict[str, Any]:
        """Answer *request* with *option*; return the response Airflow recorded."""
        path = (
            f"/dags/{quote(request.dag_id)}/dagRuns/{quote(request.run_id)}/taskInstances/"
            f"{quote(request.task_id)}/{request.map_index}/hitlDetails"
        )
        body = {"chosen_options": [option], "params_input": {"comment": comment or ""}}
        response = self.api("PATCH", path, json=body)
        if response.status_code == 403:
            raise ApprovalCommandError(
                f"{self.user or 'This user'} may not answer {request.describe()}: {_detail(response)} "
                "Log in as one of the users the task names (--as USER)."
            )
        if response.status_code == 409:
            raise ApprovalCommandError(f"{request.describe()} was answered meanwhile: {_detail(response)}")
        if response.status_code >= 300:
            raise ApprovalCommandError(
                f"Cannot answer {request.describe()}: HTTP {response.status_code} {_detail(response)}"
            )
        return response.json()


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail if detail is not None else response.text[:300])


def main(argv: list[str] | None = None, option: str = APPROVE) -> int:
    """``airflow-mlops approve|reject DAG RUN``; return the exit status."""
    command = "approve" if option == APPROVE else "reject"
    parser = argparse.ArgumentParser(
        prog=f"airflow-mlops {command}",
        description=f"{command.capitalize()} a model version waiting for approval in a DAG run, through "
        "Airflow's REST API, as the user you log in as.",
    )
    parser.add_argument("dag_id", metavar="DAG", help="DAG id")
    parser.add_argument("run_id", metavar="RUN", help="DAG run id")
    parser.add_argument(
        "--as", "--user", dest="user", metavar="USER",
        help=f"log in as USER (default ${USER_ENV}); the answer is recorded as theirs",
    )  # fmt: skip
    parser.add_argument(
        "--password",
        help=f"USER's password (default ${PASSWORD_ENV}; asked for when neither is set and a terminal is)",
    )
    parser.add_argument("--token", help=f"an API token instead of user and password (default ${TOKEN_ENV})")
    parser.add_argument("--comment", default="", help="why; stored with the decision on the model version")
    parser.add_argument("--task", help="the approval task, when the run waits on several")
    parser.add_argument("--url", help=f"Airflow api-server (default ${URL_ENV}, else {DEFAULT_URL})")
    args = parser.parse_args(argv)

    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    user = args.user or os.environ.get(USER_ENV)
    token = None if args.user else (args.token or os.environ.get(TOKEN_ENV))
    password = args.password or os.environ.get(PASSWORD_ENV)
    if not token and user and not password and sys.stdin.isatty():
        password = getpass.getpass(f"Password of {user} at {url}: ")
    if not token and not (user and password):
        parser.error(f"log in with --as USER and a password (--password or ${PASSWORD_ENV}), or --token")
    client = ApprovalClient(url, user=user, password=password, token=token)
    try:
        request = client.find(args.dag_id, args.run_id, args.task)
        recorded = client.answer(request, option, args.comment)
    except ApprovalCommandError as err:
        print(f"airflow-mlops {command}: {err}", file=sys.stderr)
        return 1
    who = (recorded.get("responded_by") or {}).get("name") or user or "the token's user"
    done = "Approved" if option == APPROVE else "Rejected"
    print(f"{done} {request.describe()} as {who}" + (f": {args.comment}" if args.comment else ""))
    print(
        f"The task resumes with this answer: {client.url}/dags/{request.dag_id}/runs/{quote(request.run_id)}"
    )
    return 0


def reject(argv: list[str] | None = None) -> int:
    """``airflow-mlops reject DAG RUN``."""
    return main(argv, option=REJECT)


if __name__ == "__main__":
    raise SystemExit(main())
