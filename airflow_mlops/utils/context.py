"""The running task's Airflow ids, read from its context, and the ``mlops.airflow.*`` tags made of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops import tags as T

if TYPE_CHECKING:
    from collections.abc import Mapping


def airflow_ids(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """dag_id, run_id, task_id, map_index and try_number of the running task (what is known)."""
    if not context:
        return {}
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    ids = {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None) or context.get("run_id"),
        "task_id": getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
    }
    return {key: value for key, value in ids.items() if value is not None}


def instance_key(ids: Mapping[str, Any]) -> str:
    """
    ``dag_id/run_id/task_id/map_index`` of a task instance (from :func:`airflow_ids`): the same for all its tries.

    :raises ValueError: if the dag, run or task id is unknown.
    """
    parts = [ids.get(key) for key in ("dag_id", "run_id", "task_id")]
    if not all(parts):
        raise ValueError(f"A task instance needs a dag_id, run_id and task_id, got {dict(ids)}")
    map_index = ids.get("map_index")
    return "/".join(str(p) for p in parts) + f"/{-1 if map_index is None else map_index}"


_LINEAGE_TAGS = {
    "dag_id": T.AIRFLOW_DAG_ID,
    "run_id": T.AIRFLOW_RUN_ID,
    "task_id": T.AIRFLOW_TASK_ID,
    "try_number": T.AIRFLOW_TRY_NUMBER,
}


def airflow_lineage_tags(context: Mapping[str, Any] | None) -> dict[str, str]:
    """``mlops.airflow.*`` tags for the task running now; keys whose value is unknown are left out."""
    ids = airflow_ids(context)
    return {tag: str(ids[key]) for key, tag in _LINEAGE_TAGS.items() if ids.get(key) not in (None, "")}
