"""
``airflow-mlops approve|reject DAG RUN``: answer a pending model approval through Airflow's public REST API.

It logs in with ``POST /auth/token`` (or uses a token it is given), finds the run's pending
Human-in-the-loop request (``GET /api/v2/dags/{dag}/dagRuns/{run}/hitlDetails``) and answers it
(``PATCH .../taskInstances/{task}/{map_index}/hitlDetails``) as the logged-in user, with an optional comment.
Then it waits (``--wait-timeout``, ``--no-wait`` to skip) until the task has taken the answer, reading the task
instance and its ``return_value`` XCom, and says whether the task accepted it: a task may still refuse an
answer Airflow accepted (the user who triggered the run approving it). A retry that asks again (a new request
of the same task) is answered again with the same answer. The exit status says what happened (:data:`EXIT_STATUSES`).
The password and the token are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

if TYPE_CHECKING:
    from collections.abc import Callable

APPROVE = "Approve"
REJECT = "Reject"
#: Environment variables read when the matching option is not given.
URL_ENV = "AIRFLOW__API__BASE_URL"
USER_ENV = "MLOPS_AIRFLOW_USER"
PASSWORD_ENV = "MLOPS_AIRFLOW_PASSWORD"  # noqa: S105 - the name of a variable, not a password
TOKEN_ENV = "MLOPS_AIRFLOW_TOKEN"  # noqa: S105 - the name of a variable, not a token
DEFAULT_URL = "http://localhost:8080"
PENDING_STATES = ("awaiting_input", "deferred")
#: Task instance states after which the task will not take an answer any more.
ENDED_STATES = ("success", "failed", "skipped", "upstream_failed", "removed")
#: Seconds ``approve|reject`` waits for the task's outcome unless ``--wait-timeout`` says otherwise.
DEFAULT_WAIT_TIMEOUT = 120.0
#: Seconds between two looks at the task while waiting for its outcome.
POLL_INTERVAL = 2.0
#: How many times a request asked again by a retry of the task is answered again.
MAX_REPEATED_ANSWERS = 3
#: ``mlops.approval.decision`` of an approval the task refused (see ApproveModelOperator).
SELF_APPROVAL_REFUSED = "self_approval_refused"

EXIT_ACCEPTED = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ALREADY_ANSWERED = 4
EXIT_OTHER_OUTCOME = 5
EXIT_OUTCOME_UNKNOWN = 6
#: What each exit status of ``airflow-mlops approve|reject`` means (shown by ``--help``).
EXIT_STATUSES = {
    EXIT_ACCEPTED: "the task accepted the answer (with --no-wait: Airflow recorded it; the outcome was not checked)",
    EXIT_ERROR: "the answer could not be given (Airflow unreachable, wrong password, nothing waiting, ...)",
    EXIT_USAGE: "wrong usage",
    EXIT_REFUSED: "refused: USER may not answer this request, or the task refused the answer (self-approval)",
    EXIT_ALREADY_ANSWERED: "the request was already answered, or someone else answered it meanwhile",
    EXIT_OTHER_OUTCOME: "the task ended otherwise than the answer asks (it failed, or its request timed out)",
    EXIT_OUTCOME_UNKNOWN: "the answer was recorded, but the task had not taken it within --wait-timeout",
}


class ApprovalCommandError(RuntimeError):
    """The approval could not be answered; the message says why and what to do."""

    exit_code = EXIT_ERROR


class ApprovalRefusedError(ApprovalCommandError):
    """The user may not answer the request (not an assigned user), or the task refused the answer."""

    exit_code = EXIT_REFUSED


class AlreadyAnsweredError(ApprovalCommandError):
    """The request was answered before this answer, by this user or another."""

    exit_code = EXIT_ALREADY_ANSWERED


class OtherOutcomeError(ApprovalCommandError):
    """The task took the answer but ended otherwise than the answer asks."""

    exit_code = EXIT_OTHER_OUTCOME


class OutcomeUnknownError(ApprovalCommandError):
    """The answer was recorded, but the task had not taken it when the wait ended."""

    exit_code = EXIT_OUTCOME_UNKNOWN


@dataclass
class PendingRequest:
    """A Human-in-the-loop request of a DAG run that nobody answered yet."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    subject: str
    options: list[str]
    #: The try of the task instance that asked.
    try_number: int = 0

    def describe(self) -> str:
        return f"{self.dag_id} {self.run_id} (task {self.task_id}): {self.subject}"

    @property
    def task_path(self) -> str:
        """The task instance's path in the REST API."""
        return (
            f"/dags/{quote(self.dag_id)}/dagRuns/{quote(self.run_id)}/taskInstances/"
            f"{quote(self.task_id)}/{self.map_index}"
        )


@dataclass
class Outcome:
    """How the approval task ended after it was answered."""

    #: The task instance's state (``success``, ``failed``, ...).
    state: str
    try_number: int
    #: The task's ``return_value`` XCom (ApproveModelOperator: ``decision``, ``approver``, ...), or None.
    result: dict[str, Any] | None

    @property
    def decision(self) -> str | None:
        return (self.result or {}).get("decision")


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
                    options=list(detail.get("options") or []), try_number=int(ti.get("try_number") or 0),
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
            raise AlreadyAnsweredError(
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
        body = {"chosen_options": [option], "params_input": {"comment": comment or ""}}
        response = self.api("PATCH", f"{request.task_path}/hitlDetails", json=body)
        if response.status_code == 403:
            raise ApprovalRefusedError(
                f"{self.user or 'This user'} may not answer {request.describe()}: {_detail(response)} "
                "Log in as one of the users the task names (--as USER)."
            )
        if response.status_code == 409:
            raise AlreadyAnsweredError(f"{request.describe()} was answered meanwhile: {_detail(response)}")
        if response.status_code >= 300:
            raise ApprovalCommandError(
                f"Cannot answer {request.describe()}: HTTP {response.status_code} {_detail(response)}"
            )
        return response.json()

    def task_instance(self, request: PendingRequest) -> dict[str, Any]:
        """The task instance that asked *request* as it is now (``state``, ``try_number``, ...)."""
        return self._get(request.task_path, f"task {request.task_id} of {request.dag_id} {request.run_id}")

    def request_of(self, request: PendingRequest) -> dict[str, Any] | None:
        """The task instance's current Human-in-the-loop request, or None while it has none."""
        response = self.api("GET", f"{request.task_path}/hitlDetails")
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise ApprovalCommandError(
                f"Cannot read the request of {request.describe()}: HTTP {response.status_code} "
                f"{_detail(response)}"
            )
        return response.json()

    def result_of(self, request: PendingRequest) -> dict[str, Any] | None:
        """The task's ``return_value`` XCom as a mapping, or None when it has none."""
        path = (
            f"/dags/{quote(request.dag_id)}/dagRuns/{quote(request.run_id)}/taskInstances/"
            f"{quote(request.task_id)}/xcomEntries/return_value"
        )
        response = self.api("GET", path, params={"map_index": request.map_index})
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise ApprovalCommandError(
                f"Cannot read what task {request.task_id} returned: HTTP {response.status_code} "
                f"{_detail(response)}"
            )
        value = response.json().get("value")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        return value if isinstance(value, dict) else None

    def wait_for_outcome(
        self,
        request: PendingRequest,
        option: str,
        comment: str | None,
        answered_by: str,
        timeout: float,
        *,
        poll_interval: float | None = None,
        say: Callable[[str], None] = print,
    ) -> Outcome:
        """
        Wait until the task that asked *request* (answered *option* by *answered_by*) has ended; return how.

        A retry of the task that asks again (a later try whose request nobody answered) is answered again with
        *option* and *comment*, at most :data:`MAX_REPEATED_ANSWERS` times; each time *say* tells the user.
        A retry whose request still holds this answer is left to take it.

        :raises AlreadyAnsweredError: someone else answered the request a retry asked again.
        :raises OtherOutcomeError: the task kept asking again.
        :raises OutcomeUnknownError: the task had not ended within *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        answered_try = request.try_number
        repeated = 0
        while True:
            ti = self.task_instance(request)
            state, try_number = ti.get("state"), int(ti.get("try_number") or 0)
            if state in ENDED_STATES:
                return Outcome(state=str(state), try_number=try_number, result=self.result_of(request))
            if state in PENDING_STATES and try_number > answered_try:
                asked = self.request_of(request)
                asked_try = int(((asked or {}).get("task_instance") or {}).get("try_number") or 0)
                if asked is not None and asked_try == try_number:
                    if asked.get("response_received"):
                        if _responder(asked) != answered_by:
                            raise AlreadyAnsweredError(_answered_by_other(request, try_number, asked))
                    elif repeated >= MAX_REPEATED_ANSWERS:
                        raise OtherOutcomeError(
                            f"Task {request.task_id} asked again after {repeated + 1} answers (try "
                            f"{try_number}); it keeps losing the answer. Look at its log: "
                            f"{self.task_url(request)}"
                        )
                    else:
                        repeated += 1
                        say(
                            f"The task asked again (try {try_number}): Airflow did not keep the answer to try "
                            f"{answered_try}. Answering {option} again."
                        )
                        self.answer(request, option, comment)
                        answered_try = try_number
            if time.monotonic() >= deadline:
                raise OutcomeUnknownError(
                    f"The answer was recorded, but task {request.task_id} had not taken it within "
                    f"{timeout:g}s (it is {state or 'not scheduled'}, try {try_number}). Follow it at "
                    f"{self.task_url(request)}"
                )
            time.sleep(POLL_INTERVAL if poll_interval is None else poll_interval)

    def run_url(self, request: PendingRequest) -> str:
        return f"{self.url}/dags/{request.dag_id}/runs/{quote(request.run_id)}"

    def task_url(self, request: PendingRequest) -> str:
        mapped = f"/mapped/{request.map_index}" if request.map_index >= 0 else ""
        return f"{self.run_url(request)}/tasks/{request.task_id}{mapped}"


def _responder(detail: dict[str, Any]) -> str | None:
    """The name of the user who answered a Human-in-the-loop request (REST API form), or None."""
    return (detail.get("responded_by_user") or {}).get("name")


def _answered_by_other(request: PendingRequest, try_number: int, detail: dict[str, Any]) -> str:
    who = _responder(detail) or "somebody"
    chosen = ", ".join(detail.get("chosen_options") or []) or "nothing"
    return (
        f"The task asked again (try {try_number}) and {who} answered meanwhile: {chosen}. "
        f"{request.describe()} goes on with that answer."
    )


def verdict(outcome: Outcome, option: str, answered_by: str, request: PendingRequest, task_url: str) -> str:
    """
    What the task did with the answer *option* given by *answered_by*, for the user; an error if not accepted.

    :raises ApprovalRefusedError: the task refused the answer (self-approval).
    :raises AlreadyAnsweredError: the task took someone else's answer.
    :raises OtherOutcomeError: the task ended otherwise than *option* asks.
    """
    result = outcome.result or {}
    decision, approver = outcome.decision, result.get("approver")
    version = (
        f"{result['model_name']} v{result['version']}" if "model_name" in result else "the model version"
    )
    ended = f"task {request.task_id} {outcome.state}, try {outcome.try_number}"
    if decision == SELF_APPROVAL_REFUSED:
        raise ApprovalRefusedError(
            f"Refused: the task refused the approval of {version} by {approver or answered_by}, who triggered "
            f"this run; nobody approves their own run ({ended}, decision {decision}). The version stays "
            "unapproved: trigger a new run and let another user approve it."
        )
    if approver and approver != answered_by and decision in ("approved", "rejected"):
        raise AlreadyAnsweredError(
            f"{approver} answered meanwhile: the task took their answer ({decision} {version}; {ended})."
        )
    if option == APPROVE and outcome.state == "success" and decision in (None, "approved"):
        return f"Approved: the task accepted the answer ({version} approved by {approver or answered_by}; {ended})."
    rejected = decision == "rejected" or (decision is None and outcome.state in ("success", "skipped"))
    if option == REJECT and rejected:
        return (
            f"Rejected: the task took the answer ({version} rejected by {approver or answered_by}; {ended})."
        )
    if decision == "timed_out":
        happened = "the request timed out before the answer took effect"
    else:
        happened = f"decision {decision}" if decision else "it returned no decision"
    raise OtherOutcomeError(
        f"The task did not take the answer {option}: {happened} ({ended}). Look at its log: {task_url}"
    )


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail if detail is not None else response.text[:300])


def main(argv: list[str] | None = None, option: str = APPROVE) -> int:
    """``airflow-mlops approve|reject DAG RUN``; return the exit status (:data:`EXIT_STATUSES`)."""
    command = "approve" if option == APPROVE else "reject"
    parser = argparse.ArgumentParser(
        prog=f"airflow-mlops {command}",
        description=f"{command.capitalize()} a model version waiting for approval in a DAG run, through "
        "Airflow's REST API, as the user you log in as; then wait until the task has taken the answer and "
        "say whether it accepted it.",
        epilog="exit status:\n"
        + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_STATUSES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT, metavar="SECONDS",
        help=f"how long to wait for the task to take the answer (default {DEFAULT_WAIT_TIMEOUT:g})",
    )  # fmt: skip
    parser.add_argument(
        "--no-wait", action="store_true",
        help="return once Airflow recorded the answer, without checking whether the task accepts it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.wait_timeout <= 0:
        parser.error("--wait-timeout must be more than 0 seconds")

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
        who = (recorded.get("responded_by") or {}).get("name") or user or "the token's user"
        print(
            f"Answered {option} to {request.describe()} as {who}"
            + (f": {args.comment}" if args.comment else ""),
            flush=True,
        )
        if args.no_wait:
            print(
                "The outcome was not checked (--no-wait): the task may still refuse the answer. Follow it at "
                f"{client.task_url(request)}"
            )
            return EXIT_ACCEPTED
        print(
            f"Waiting up to {args.wait_timeout:g}s for task {request.task_id} to take the answer...",
            flush=True,
        )
        outcome = client.wait_for_outcome(
            request, option, args.comment, who, args.wait_timeout, say=lambda line: print(line, flush=True)
        )
        print(verdict(outcome, option, who, request, client.task_url(request)))
    except ApprovalCommandError as err:
        print(f"airflow-mlops {command}: {err}", file=sys.stderr)
        return err.exit_code
    print(f"See the run: {client.run_url(request)}")
    return EXIT_ACCEPTED


def reject(argv: list[str] | None = None) -> int:
    """``airflow-mlops reject DAG RUN``."""
    return main(argv, option=REJECT)


if __name__ == "__main__":
    raise SystemExit(main())
