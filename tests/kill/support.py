"""
What the kill-point tests share: the stack settings of the fault injector, running a DAG run with its kill
points through the REST API (answering approval requests as a reviewer would), and reading what a user sees
afterwards (task tries and logs, the MLflow registry, the endpoints).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from tests.kill.faults import PLAN_ENV, add_to_plan, fired_marker

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.demo.stack import LocalStack
    from tests.support.kubernetes import KubeApiStub

KILL_DAGS = Path(__file__).parent / "dags"
REPO = Path(__file__).resolve().parents[2]
KUBE_CONN_ID = "kubernetes_kill"
NAMESPACE = "models"
#: Seconds between an approval request appearing and the reviewer's answer.
APPROVAL_SETTLE = 15.0


def stack_settings(home: Path, kube: KubeApiStub, serving_port: int) -> dict[str, str]:
    """The settings the kill-point DAGs read: the fault plan, their serving port, the Kubernetes stand-in."""
    kubeconfig = kube.write_kubeconfig(home / "kubeconfig")
    return {
        PLAN_ENV: str(home / "kill" / "plan.json"),
        "MLOPS_KILL_SERVING_PORT": str(serving_port),
        f"AIRFLOW_CONN_{KUBE_CONN_ID.upper()}": json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
        ),
        "PYTHONPATH": str(REPO),
    }


@dataclass
class KilledRun:
    """One DAG run with its kill points, and what Airflow reports about it once it ended."""

    dag_id: str
    run_id: str
    kills: dict[str, str]
    state: str = ""
    tries: dict[str, int] = field(default_factory=dict)
    states: dict[str, str | None] = field(default_factory=dict)
    fired: dict[str, bool] = field(default_factory=dict)
    approvals: int = 0

    def describe(self) -> str:
        return f"{self.dag_id}/{self.run_id} ended {self.state}: states {self.states}, tries {self.tries}"


def run_with_kills(
    stack: LocalStack,
    dag_id: str,
    conf: dict[str, Any],
    kills: dict[str, str],
    approve_task: str | None = None,
    timeout: float = 900.0,
) -> KilledRun:
    """
    Trigger *dag_id* with *conf*, killing each task of *kills* at its kill point in its first try.

    With *approve_task*, every approval request of that task (one per try) is answered "Approve" by the
    reviewer through the HITL REST API, a few seconds after it appears (see ``wait_for_approval_request``).
    """
    plan = Path(stack.settings()[PLAN_ENV])
    plan.parent.mkdir(parents=True, exist_ok=True)
    run_id = f"kill-{uuid.uuid4().hex[:10]}"
    add_to_plan(plan, dag_id, run_id, kills)
    run = KilledRun(dag_id, run_id, dict(kills))
    stack.trigger(dag_id, conf, run_id=run_id)
    answered: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.state = stack.run_state(dag_id, run_id)
        if run.state in ("success", "failed"):
            break
        if approve_task:
            ti = stack.task_instances(dag_id, run_id).get(approve_task) or {}
            if ti.get("state") == "awaiting_input" and ti.get("try_number") not in answered:
                # The 3.3.2 race (LocalStack.wait_for_approval_request): an answer that lands before the
                # executor has reported the parked attempt's exit fails the try. 5 s is not enough on a
                # loaded machine.
                time.sleep(APPROVAL_SETTLE)
                response = stack.respond(dag_id, run_id, approve_task, "Approve", comment="kill-point test")
                assert response.status_code == 200, response.text
                answered.add(ti["try_number"])
                run.approvals += 1
        time.sleep(2)
    else:
        raise AssertionError(
            f"{dag_id}/{run_id} did not end within {timeout:.0f}s: {stack.task_states(dag_id, run_id)}"
        )
    instances = stack.task_instances(dag_id, run_id)
    run.states = {task_id: ti["state"] for task_id, ti in instances.items()}
    run.tries = {task_id: ti["try_number"] for task_id, ti in instances.items()}
    run.fired = {task_id: fired_marker(plan, dag_id, run_id, task_id).exists() for task_id in kills}
    return run


def task_log(stack: LocalStack, run: KilledRun, task_id: str, try_number: int) -> str:
    """The task's log of one try, as the UI shows it."""
    response = stack.api(
        "GET",
        f"/dags/{run.dag_id}/dagRuns/{quote(run.run_id)}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    response.raise_for_status()
    return json.dumps(response.json()["content"])


# -- the registry --------------------------------------------------------------------------------------------


def history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The model's deployment history (registered-model tag ``mlops.deployments``), oldest first."""
    return json.loads(client.get_registered_model(name).tags.get("mlops.deployments") or "[]")


def version_entries(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every deployment entry of every version (version tags ``mlops.deployments``, with Airflow ids)."""
    entries: list[dict[str, Any]] = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        entries.extend(json.loads((mv.tags or {}).get("mlops.deployments") or "[]"))
    return sorted(entries, key=lambda e: e.get("time") or "")


def entries_of(client: MlflowClient, name: str, run: KilledRun, task_id: str) -> list[dict[str, Any]]:
    """The deployment entries written by one task instance (any try)."""
    return [
        e
        for e in version_entries(client, name)
        if (e.get("airflow") or {}).get("run_id") == run.run_id
        and (e.get("airflow") or {}).get("task_id") == task_id
    ]


def champion(client: MlflowClient, name: str) -> str | None:
    aliases = client.get_registered_model(name).aliases or {}
    value = aliases.get("champion")
    return str(value) if value is not None else None


def last_succeeded(client: MlflowClient, name: str) -> dict[str, Any] | None:
    succeeded = [e for e in history(client, name) if e.get("outcome") == "succeeded"]
    return succeeded[-1] if succeeded else None


def approve_version(client, model_name: str, version, approver: str = "reviewer") -> None:
    """What the gate and a person's approval leave on a version: a passed gate and an approval, signed."""
    from tests.support.signing import approve_version as signed_approval

    signed_approval(client, model_name, version, approver)


# -- the endpoints -------------------------------------------------------------------------------------------


def local_served_version(port: int, records: list[dict[str, Any]]) -> str | None:
    """The version the local endpoint on *port* answers with (None if it does not answer)."""
    try:
        response = requests.post(
            f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": records}, timeout=60
        )
    except requests.RequestException:
        return None
    return response.headers.get("X-MLOps-Model-Version") if response.status_code == 200 else None


def kserve_traffic(kube: KubeApiStub, model_name: str) -> dict[str, int]:
    """Percent of the shared URL's traffic per version of the model's InferenceService (stand-in's routing)."""
    from airflow_mlops.serving.kserve import KServeTarget

    service = KServeTarget(namespace=NAMESPACE, kubernetes_conn_id=KUBE_CONN_ID).name_for(model_name)
    with kube.lock:
        obj = kube.objects.get((NAMESPACE, service))
        if obj is None:
            return {}
        if (NAMESPACE, service) not in kube.routes:
            return {}
        latest, previous, percent = kube.routes[(NAMESPACE, service)]
    if previous is None:
        return {latest: 100}
    return {latest: percent, previous: 100 - percent}


def kserve_requests(kube: KubeApiStub, model_name: str, since: int = 0) -> list[dict[str, Any]]:
    """Prediction requests the stand-in's predictor answered for the model (from index *since*)."""
    from airflow_mlops.serving.kserve import KServeTarget

    service = KServeTarget(namespace=NAMESPACE, kubernetes_conn_id=KUBE_CONN_ID).name_for(model_name)
    with kube.lock:
        return [p for p in kube.predictions[since:] if p["name"] == service]


# -- processes -----------------------------------------------------------------------------------------------


def logged_numbers(log: str, pattern: str) -> tuple[int, ...]:
    """The numbers *pattern*'s groups matched in a task log (AssertionError, quoting the log, if none)."""
    found = re.search(pattern, log)
    assert found, f"no {pattern!r} in the task log:\n{log[-3000:]}"
    return tuple(int(group) for group in found.groups())


def process_running(pid: int, marker: str) -> bool:
    """Whether *pid* runs and is still the process whose command line holds *marker* (not a reused pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and marker in " ".join(proc.cmdline())
    except psutil.Error:
        return False
