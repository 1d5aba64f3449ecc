"""Helpers for the Kubernetes training runtime tests: a task context, and driving a deferred task."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

RUN_ID = "manual__2025-01-01T00:00:00+00:00"


class TaskStateStore:
    """What ``context["task_state_store"]`` offers (Airflow 3.3), kept in a dict: survives a 'worker restart'."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        self.data[key] = value


class TaskInstance(SimpleNamespace):
    """The part of a task instance the operators read; XCom pushes are recorded."""

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def k8s_context(
    dag_id: str,
    *,
    try_number: int = 1,
    run_id: str = RUN_ID,
    task_id: str = "train",
    state_store: TaskStateStore | None = None,
) -> dict[str, Any]:
    ti = TaskInstance(
        dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=try_number, map_index=-1,
        start_date=datetime.now(UTC), pushed={},
    )  # fmt: skip
    return {
        "ti": ti,
        "run_id": run_id,
        "dag_run": SimpleNamespace(run_id=run_id),
        "dag": SimpleNamespace(dag_id=dag_id),
        "task_state_store": state_store if state_store is not None else TaskStateStore(),
    }


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    return None


def cold_import_seconds(modules: str) -> float:
    """
    What a fresh task process pays to import *modules* (``"mlflow, airflow_mlops.x"``), airflow.sdk excluded.

    The median of three fresh interpreters: Airflow resumes a deferred task in a new process, which imports again.
    """
    import subprocess
    import sys
    from pathlib import Path

    code = f"import time; import airflow.sdk; t0 = time.perf_counter(); import {modules}; print(time.perf_counter() - t0)"
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[2],
            check=True,
        )
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return sorted(runs)[1]


def fire(trigger: Any) -> dict[str, Any]:
    """Run *trigger* as the triggerer would (from its serialized form) and return its event payload."""
    try:
        from airflow.sdk._shared.module_loading import import_string
    except ImportError:  # Airflow 3.1
        from airflow.utils.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return asyncio.run(_first_event(import_string(classpath)(**kwargs)))


class Timing:
    """Seconds spent in the worker (execute / execute_complete) and in the triggerer."""

    def __init__(self) -> None:
        self.worker = 0.0
        self.triggerer = 0.0
        self.deferrals = 0


def run_deferred(make_operator: Any, context: dict[str, Any], timing: Timing | None = None) -> Any:
    """
    Run a deferrable task to its end, as Airflow does: ``execute`` in a worker, the trigger in the triggerer,
    then the method the task named, on a fresh operator object (a new worker process), until it returns.
    """
    from airflow.sdk.exceptions import TaskDeferred

    timing = timing or Timing()
    started = time.perf_counter()
    try:
        return make_operator().execute(context)
    except TaskDeferred as deferred:
        pending = deferred
    finally:
        timing.worker += time.perf_counter() - started
    while True:
        timing.deferrals += 1
        started = time.perf_counter()
        event = fire(pending.trigger)
        timing.triggerer += time.perf_counter() - started
        started = time.perf_counter()
        try:
            operator = make_operator()
            return getattr(operator, pending.method_name)(context, event=event, **(pending.kwargs or {}))
        except TaskDeferred as deferred:
            pending = deferred
        finally:
            timing.worker += time.perf_counter() - started
