"""A stand-in for the running task instance, for calling an operator's ``execute`` directly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class RecordingTI:
    """What the operators use of a running task instance: its identity, and ``xcom_push`` (recorded)."""

    map_index = -1

    def __init__(
        self, task_id: str, dag_id: str = "mlops_tests", run_id: str = "manual__1", try_number: int = 1
    ):
        self.task_id, self.dag_id, self.run_id, self.try_number = task_id, dag_id, run_id, try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def context_for(op, user: str | None = "alice", **ti_fields: Any) -> dict[str, Any]:
    """A minimal task context for *op*, run by *user*."""
    ti = RecordingTI(task_id=op.task_id, **ti_fields)
    dag_run = SimpleNamespace(dag_id=ti.dag_id, run_id=ti.run_id, triggering_user_name=user)
    return {"ti": ti, "task_instance": ti, "task": op, "run_id": ti.run_id, "dag_run": dag_run}
