"""
Keeping the shared live stack as each test found it: what it runs (active DAG runs), what waits for a person
(approval requests) and which DAGs are paused. Read and changed through the Airflow REST API only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from airflow_mlops.demo.stack import LocalStack

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class StackState:
    """What a test must leave as it found it."""

    active: frozenset[tuple[str, str]]
    approvals: frozenset[tuple[str, str, str]]
    paused: dict[str, bool]


def active_runs(stack: LocalStack) -> frozenset[tuple[str, str]]:
    """``(dag_id, run_id)`` of every queued or running DAG run."""
    body = stack._ok(stack.api("GET", "/dags/~/dagRuns", params={"state": list(ACTIVE), "limit": 100}))
    return frozenset((run["dag_id"], run["dag_run_id"]) for run in body["dag_runs"])


def pending_approvals(stack: LocalStack) -> frozenset[tuple[str, str, str]]:
    """``(dag_id, run_id, task_id)`` of every Human-in-the-loop request that waits for an answer."""
    body = stack._ok(
        stack.api(
            "GET",
            "/dags/~/dagRuns/~/hitlDetails",
            params={"response_received": "false", "state": "awaiting_input", "limit": 100},
        )
    )
    tis = [item["task_instance"] for item in body["hitl_details"]]
    return frozenset((ti["dag_id"], ti["dag_run_id"], ti["task_id"]) for ti in tis)


def paused_dags(stack: LocalStack) -> dict[str, bool]:
    """``is_paused`` of every DAG the stack has parsed."""
    body = stack._ok(stack.api("GET", "/dags", params={"limit": 100}))
    return {dag["dag_id"]: dag["is_paused"] for dag in body["dags"]}


def snapshot(stack: LocalStack) -> StackState:
    return StackState(active_runs(stack), pending_approvals(stack), paused_dags(stack))


def restore(stack: LocalStack, before: StackState) -> list[str]:
    """
    End (mark failed) every DAG run that became active since *before*, pause again every DAG paused then (and
    every DAG parsed since, as new DAGs start paused), and return what is still not as *before* had it.
    """
    for dag_id, run_id in sorted(active_runs(stack) - before.active):
        stack._ok(stack.api("PATCH", f"/dags/{dag_id}/dagRuns/{quote(run_id)}", json={"state": "failed"}))
    for dag_id, is_paused in paused_dags(stack).items():
        wanted = before.paused.get(dag_id, True)
        if is_paused != wanted:
            stack._ok(stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": wanted}))
    after = snapshot(stack)
    left = [f"active run {dag_id}/{run_id}" for dag_id, run_id in sorted(after.active - before.active)]
    left += [f"pending approval {'/'.join(key)}" for key in sorted(after.approvals - before.approvals)]
    left += [
        f"DAG {dag_id} is_paused={is_paused}"
        for dag_id, is_paused in after.paused.items()
        if is_paused != before.paused.get(dag_id, True)
    ]
    return left
