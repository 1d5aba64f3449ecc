"""
The fault injector of the kill-point tests: SIGKILL a real Airflow task process at a named step boundary.

A **fault plan** (a JSON file whose path is in ``MLOPS_KILL_PLAN``) maps ``"<dag_id>/<run_id>"`` to
``{task_id: kill point}``. The kill-point DAGs (tests/kill/dags/) set :func:`arm` as every task's
``pre_execute`` hook, so it runs in the task process after the DAG file is parsed, before ``execute`` (and
before ``execute_complete`` after a deferral). When the plan names this task of this run and the task is in
its first try, :func:`arm` wraps the one Python function of :data:`KILL_POINTS` that marks the step; the
wrapper writes ``<plan dir>/fired/<dag_id>.<run_id>.<task_id>`` and sends SIGKILL to its own process right
before or right after the function (as the kill point says). The supervisor sees the process die, reports
the try failed, and the scheduler retries the task (``retries=1``): that is Airflow's own retry, running the
real operator again in a fresh process.

Only Python functions are wrapped (nothing of the project is replaced); nothing is wrapped in a process the
plan does not name, and nothing in a retry.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

PLAN_ENV = "MLOPS_KILL_PLAN"
#: Where a release step is recorded, in the release record of the serving package.
RELEASE_ADVANCE = "airflow_mlops.serving.record:ReleaseRecord.advance"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hook:
    """
    One function to wrap: ``"module:attr.path"``, kill ``before`` or ``after`` it, when *when* holds.

    :param where: The function, as ``"package.module:Class.method"`` or ``"package.module:function"``.
    :param moment: ``"before"`` (the call never happens) or ``"after"`` (it returned; its result is lost).
    :param when: Predicate on the call's ``(args, kwargs)``; None: every call.
    """

    where: str
    moment: str
    when: Callable[[tuple[Any, ...], Mapping[str, Any]], bool] | None = None

    def resolve(self) -> tuple[Any, str, Callable[..., Any]] | None:
        """The owner object, attribute name and current function; None if the module or name is missing."""
        module_name, _, path = self.where.partition(":")
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            return None
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
            if owner is None:
                return None
        function = getattr(owner, name, None)
        return (owner, name, function) if callable(function) else None


@dataclass(frozen=True)
class KillPoint:
    """
    A named step boundary: the hooks that mark it, the first one that resolves is used.

    The release steps are marked by ``ReleaseRecord.advance(step)`` returning; the other hooks of a release
    step are the same boundary in code without a release record.
    """

    name: str
    description: str
    hooks: tuple[Hook, ...]

    def hook(self) -> Hook:
        for hook in self.hooks:
            if hook.resolve() is not None:
                return hook
        raise LookupError(f"kill point {self.name}: none of {[h.where for h in self.hooks]} exists")


def _arg(index: int, key: str) -> Callable[[tuple[Any, ...], Mapping[str, Any]], Any]:
    def get(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        return kwargs[key] if key in kwargs else (args[index] if len(args) > index else None)

    return get


def _equals(index: int, key: str, value: str) -> Callable[[tuple[Any, ...], Mapping[str, Any]], bool]:
    get = _arg(index, key)
    return lambda args, kwargs: str(get(args, kwargs)) == value


_CLIENT = "mlflow.tracking.client:MlflowClient"
# MlflowClient methods: (self, name, alias, version) and (self, name, version, key, value).
_ALIAS = functools.partial(_equals, 2, "alias")
_VERSION_TAG = functools.partial(_equals, 3, "key")


def _release_step(step: str, *fallbacks: Hook) -> tuple[Hook, ...]:
    return (Hook(RELEASE_ADVANCE, "after", _equals(1, "step", step)), *fallbacks)


_RELEASE = "airflow_mlops.serving.release"
KILL_POINTS: dict[str, KillPoint] = {
    point.name: point
    for point in (
        KillPoint(
            "ingest.staged",
            "the snapshot's data files are written to the staging folder; no manifest, not renamed",
            (Hook("airflow_mlops.data.snapshots:write_parquet", "after"),),
        ),
        KillPoint(
            "ingest.published",
            "the snapshot (data and manifest) is in place; the task has not returned",
            (Hook("airflow_mlops.operators.ingest:publish_snapshot", "after"),),
        ),
        KillPoint(
            "train.running",
            "the trainer process (local runtime) runs; the task process dies under it",
            (Hook("airflow_mlops.training.local:_record_trainer", "after"),),
        ),
        KillPoint(
            "infra_validate.serving",
            "the infra-validation sandbox (local target) serves; no request sent yet",
            (Hook("airflow_mlops.serving.local:LocalServerTarget.start_sandbox", "after"),),
        ),
        KillPoint(
            "register.created",
            "the model version is created; no lineage tags, no challenger alias",
            # mlflow.register_model and MlflowClient.create_model_version both create through it.
            (Hook(f"{_CLIENT}._create_model_version", "after"),),
        ),
        KillPoint(
            "register.aliased",
            "tags and the challenger alias are set; the task has not returned",
            (Hook(f"{_CLIENT}.set_registered_model_alias", "after", _ALIAS("challenger")),),
        ),
        KillPoint(
            "evaluate.logged",
            "the evaluation run is logged and ended; the version's gate tags are not written",
            (Hook(f"{_CLIENT}.set_model_version_tag", "before", _VERSION_TAG("mlops.evaluation.summary")),),
        ),
        KillPoint(
            "evaluate.gated",
            "the version's gate tags are written; the task has not returned",
            (Hook(f"{_CLIENT}.set_model_version_tag", "after", _VERSION_TAG("mlops.gate.reason")),),
        ),
        KillPoint(
            "approve.recorded",
            "the reviewer answered and the decision is recorded on the version; the task has not returned",
            (Hook("airflow_mlops.operators.approval:ApproveModelOperator._record", "after"),),
        ),
        KillPoint(
            "promote.tagged",
            "the promotion tags are written; the champion alias is not moved",
            (Hook(f"{_CLIENT}.set_registered_model_alias", "before", _ALIAS("champion")),),
        ),
        KillPoint(
            "promote.moved",
            "the champion alias is moved; the task has not returned",
            (Hook(f"{_CLIENT}.set_registered_model_alias", "after", _ALIAS("champion")),),
        ),
        KillPoint(
            "release.planned",
            "target, version and previous deployment are chosen; nothing changed",
            _release_step("planned", Hook(f"{_RELEASE}:new_plan", "after")),
        ),
        KillPoint(
            "release.switch",
            "the target is about to switch (deploy, canary or rollback)",
            _release_step("switch", Hook(f"{_RELEASE}:Release.start", "before")),
        ),
        KillPoint(
            "release.verify",
            "switched and ready; health check and smoke test next",
            _release_step("verify", Hook(f"{_RELEASE}:smoke_test", "before")),
        ),
        KillPoint(
            "release.bake",
            "the canary is verified at N%; its bake next",
            _release_step("bake", Hook(f"{_RELEASE}:bake", "before")),
        ),
        KillPoint(
            "canary.measured",
            "the canary serves at N% and its bake waits for its verdict: one measurement of live traffic taken",
            (Hook("airflow_mlops.serving.canary:measure_live", "after"),),
        ),
        KillPoint(
            "release.promote_canary",
            "the canary passed its bake; moving it to 100% next",
            _release_step(
                "promote_canary", Hook("airflow_mlops.serving.kserve:KServeTarget.promote_canary", "before")
            ),
        ),
        KillPoint(
            "release.record",
            "verified; alias and deployment history next",
            _release_step("record", Hook(f"{_RELEASE}:Release._succeeded", "before")),
        ),
    )
}


# -- the plan ------------------------------------------------------------------------------------------------


def plan_path() -> Path | None:
    value = os.environ.get(PLAN_ENV)
    return Path(value) if value else None


def read_plan(path: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def add_to_plan(path: Path, dag_id: str, run_id: str, kills: Mapping[str, str]) -> None:
    """Add *kills* (``{task_id: kill point}``) for one DAG run to the plan file (written atomically)."""
    unknown = sorted(set(kills.values()) - set(KILL_POINTS))
    if unknown:
        raise ValueError(f"unknown kill points {unknown}; known: {sorted(KILL_POINTS)}")
    plan = read_plan(path)
    plan[f"{dag_id}/{run_id}"] = dict(kills)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(plan, indent=2, sort_keys=True))
    os.replace(staging, path)


def fired_marker(path: Path, dag_id: str, run_id: str, task_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{dag_id}.{run_id}.{task_id}")
    return path.parent / "fired" / safe


# -- in the task process ------------------------------------------------------------------------------------


def _kill(marker: Path, point: str, hook: Hook) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"kill_point": point, "hook": hook.where, "moment": hook.moment}))
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(point: str, hook: Hook, marker: Path) -> None:
    resolved = hook.resolve()
    if resolved is None:  # pragma: no cover - KillPoint.hook() resolved it
        return
    owner, name, original = resolved
    if getattr(original, "__kill_point__", None):
        return
    when = hook.when

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = when is None or when(args, kwargs)
        if hit and hook.moment == "before":
            _kill(marker, point, hook)
        result = original(*args, **kwargs)
        if hit and hook.moment == "after":
            _kill(marker, point, hook)
        return result

    wrapper.__kill_point__ = point  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)


def arm(context: Mapping[str, Any]) -> None:
    """
    ``pre_execute`` hook: wrap the kill point the plan names for this task instance, in its first try only.

    Does nothing without ``MLOPS_KILL_PLAN`` or when the plan names nothing for this task instance.
    """
    path = plan_path()
    if path is None:
        return
    ti = context["ti"]
    dag_id, run_id, task_id = ti.dag_id, ti.run_id, ti.task_id
    point = read_plan(path).get(f"{dag_id}/{run_id}", {}).get(task_id)
    if not point or int(ti.try_number) != 1:
        return
    kill_point = KILL_POINTS[point]
    hook = kill_point.hook()
    _wrap(point, hook, fired_marker(path, dag_id, run_id, task_id))
    log.warning("Kill point %s armed at %s (%s): %s", point, hook.where, hook.moment, kill_point.description)
