"""
The release of a model version on a serving target: switch, await readiness, verify, bake, roll back, record.

A release is driven by a **plan**: one JSON-serialisable dict (it travels through a deferral to the
triggerer and back) made by :func:`new_plan`. Its ``phase`` says where the release is:

- ``deploy``: the target is switched to the new version (at the canary percent when the plan has one), and
  once ready the version is verified (health check and smoke test) and, for a canary, baked and promoted
  to 100% (then verified again). Where the target captures its traffic, the bake waits in the triggerer
  (:class:`~airflow_mlops.triggers.canary.CanaryBakeTrigger`) and is judged on the live requests of the
  canary and the baseline; its window (start and absolute deadlines) is in the plan's ``bake_window``,
  written to the record at step ``bake`` before the wait, so a retry bakes the same window again without
  switching anything. Elsewhere the probe bake (:func:`~airflow_mlops.serving.canary.bake`) is the fallback. Passing moves the alias and records ``succeeded``; failing records
  ``failed``, tags the version with ``mlops.rollback.reason`` and enters the rollback phase (or, with
  nothing served before, stops serving the model and raises).
- ``rollback``: the target goes back to the previous deployment, which is verified again; the alias is
  moved back and an ``auto_rollback`` entry recorded. This phase always ends in an exception saying what
  serves now.

Keys of a plan: ``model_name``, ``version``, ``model_uri``, ``target`` (the target's config), ``previous``
(the verified deployment serving before, or None), ``verify`` (the
:class:`~airflow_mlops.serving.verification.SmokeTest` settings), ``reason``, ``actor``, ``airflow`` (task
ids), ``phase``, ``canary`` (the percent, or None); added on the way: ``unchanged`` (the version already
served: verified without a switch), ``deployment`` (once switched), ``bake_window`` (a live bake's window),
``bake`` (the bake result), ``failure``
and ``failed_version`` (in the rollback phase).

Every release keeps a durable record (:mod:`airflow_mlops.serving.record`), written before each step: a
retry of the same task instance finishes the release the record describes, with the version, previous
deployment and reason chosen by the first try, and with the full verification; it never accepts what
serves on a health check alone. A release that fails for good ends with ``champion`` on what serves
(:meth:`Release.abandon`).

:class:`Release` runs a plan. It gets the target, the MLflow client, its :class:`ReleaseSettings` and two
callbacks (a logger and "defer with this trigger"), never the operator, and returns the task's result. The
choice of what a manual rollback restores is here too (:func:`rollback_history`, :func:`rollback_version`,
:func:`check_served_before`, :func:`ensure_rollback_changes`, :func:`rollback_smoke_test`). No Airflow
context is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    DeploymentError,
    DeploymentRejectedError,
    DeploymentVerificationError,
    RecordSignatureError,
    ReleaseInProgressError,
    ServiceUnavailableError,
)
from airflow_mlops.lineage.deployments import (
    append_entry,
    last_served_version,
    last_verify_settings,
    previous_serving_version,
    read_history,
    served_before,
)
from airflow_mlops.registry import get_alias_version, get_model_version
from airflow_mlops.serving.canary import INCONCLUSIVE, LIVE, PASS, PROBES, CanaryPolicy, bake
from airflow_mlops.serving.record import (
    BAKE,
    PROMOTE_CANARY,
    RECORD,
    SWITCH,
    VERIFY,
    ReleaseRecord,
    release_id,
)
from airflow_mlops.serving.record import ROLLBACK as ROLLBACK_STEP
from airflow_mlops.serving.status import Deployment
from airflow_mlops.serving.verification import SmokeTest, smoke_test
from airflow_mlops.utils.clock import utc_now, utc_now_iso

if TYPE_CHECKING:
    import logging

    from mlflow import MlflowClient

    from airflow_mlops.serving.base import DeployTarget
    from airflow_mlops.signing import SigningKeys

#: The phases of a release plan (its ``phase``).
DEPLOY = "deploy"
ROLLBACK = "rollback"
PHASES = (DEPLOY, ROLLBACK)

#: "Defer with this trigger; resume with this plan" (raises in an operator, so it does not return there).
DeferCallback = Callable[[Any, dict[str, Any]], None]


def new_plan(
    *,
    model_name: str,
    version: str,
    model_uri: str,
    target: DeployTarget,
    previous: Deployment | None,
    verify: SmokeTest,
    reason: str,
    actor: str,
    airflow: Mapping[str, Any],
    canary: int | None = None,
) -> dict[str, Any]:
    """
    The plan of a release in its ``deploy`` phase: everything the later steps need, JSON-serialisable.

    :param canary: The canary percent (None: straight to 100%, as a rollback does).
    """
    return {
        "model_name": model_name,
        "version": version,
        "model_uri": model_uri,
        "target": target.to_config(),
        "previous": previous.to_dict() if previous else None,
        "verify": verify.to_dict(),
        "reason": reason,
        "actor": actor,
        "airflow": dict(airflow),
        "phase": DEPLOY,
        "canary": canary,  # the percent; a rollback goes straight to 100%
    }


@dataclass(frozen=True)
class ReleaseSettings:
    """
    How a release runs: what it records, which alias follows it, how long it waits.

    :param action: The history ``action`` of the release's own entries (``deploy`` or ``rollback``).
    :param alias: Registry alias that follows what serves; None leaves aliases alone.
    :param ready_timeout: Seconds a deployment may take to become ready.
    :param request_timeout: Seconds one smoke-test or bake request may take.
    :param deferrable: Wait for readiness in the triggerer when the target offers a trigger.
    :param canary: The canary policy of the bake; None: the defaults.
    :param aws_conn_id: ``aws`` connection for an ``s3://`` sample snapshot (and ``s3://`` captures).
    :param capture_uri: Data root of the target's captured traffic, for a canary judged on live requests;
        None: the target's own capture setting, if any.
    """

    action: str = DEPLOY
    alias: str | None = T.CHAMPION
    ready_timeout: float = 900.0
    request_timeout: float = 30.0
    deferrable: bool = False
    canary: CanaryPolicy | None = None
    aws_conn_id: str | None = None
    capture_uri: str | None = None


class Release:
    """
    Run a release plan on a target, keeping its durable record (:mod:`airflow_mlops.serving.record`).

    :meth:`start` a new release, :meth:`resume_record` one a killed try left unfinished, :meth:`repeat` one
    that ended, :meth:`resume` after a deferral and :meth:`abandon` one that fails for good. Each returns
    the task's result (``{"model_name", "version", "previous_version", "target", "endpoint", "action",
    "outcome", "changed"}``, plus ``"bake"`` after a canary) or raises what went wrong.

    :param target: Where the model serves.
    :param client: The MLflow client (aliases, tags, deployment history, the release record).
    :param settings: How the release runs.
    :param log: Where progress is logged (the task's logger).
    :param defer: Called with a trigger and the plan to resume with, to wait in the triggerer; it raises
        (the task defers) or returns (the release then waits here).
    :param try_number: The task's try, written with each step of the record.
    :param keys: The signing keys (:mod:`airflow_mlops.signing`): the release record and the deployment history
        are signed with them, and only what they verify is read. None: unsigned and unchecked.
    :param allowed: Called with the model name and version before a resumed release switches anything: it
        re-checks that the version may serve (gate and approval), as for a new release.
    """

    def __init__(
        self,
        target: DeployTarget,
        client: MlflowClient,
        settings: ReleaseSettings,
        *,
        log: logging.Logger | Any,
        defer: DeferCallback,
        try_number: Any = None,
        keys: SigningKeys | None = None,
        allowed: Callable[[str, str], Any] | None = None,
    ) -> None:
        self.target = target
        self.client = client
        self.settings = settings
        self.log = log
        self.defer = defer
        self.try_number = try_number
        self.keys = keys
        self.allowed = allowed
        self.record: ReleaseRecord | None = None

    @property
    def lease(self) -> float:
        """Seconds a release may go without writing its record: its longest wait plus a margin."""
        bake = (self.settings.canary or CanaryPolicy()).longest_bake
        return self.settings.ready_timeout + float(bake) + 600.0

    # -- which release -----------------------------------------------------------------------------------

    def last(self, name: str, rid: str | None = None) -> ReleaseRecord | None:
        """
        The record of the model's last release, or None; only a record the package signed counts.

        :param rid: The release id of the task asking: an unsigned record naming it fails the task
            (:class:`~airflow_mlops.exceptions.RecordSignatureError`) instead of counting as absent.
        """
        return ReleaseRecord.load(self.client, name, self.lease, self.keys, rid)

    def check_free(self, last: ReleaseRecord | None, rid: str) -> ReleaseRecord | None:
        """
        Refuse to start while another task instance's release of the model is in progress.

        :return: The record of an unfinished release whose lease expired (its task died for good), which the
            new release takes over, or None.
        :raises ReleaseInProgressError: if another release is in progress (retryable).
        """
        if last is None or last.done or last.id == rid:
            return None
        if not last.expired():
            raise ReleaseInProgressError(
                f"Model {last.model_name!r} is being released by another task: {last.describe()}. This task is "
                "retried; it starts once that release ends (or its lease expires).",
                model=last.model_name,
                version=str(last.data.get("version")),
            )
        self.log.warning("Taking over the model's abandoned release (%s)", last.describe())
        return last

    def start(self, plan: dict[str, Any], rid: str) -> dict[str, Any]:
        """Record the plan (step ``planned``, before anything changes), then switch the target."""
        name, version = plan["model_name"], plan["version"]
        previous = Deployment.from_dict(plan["previous"]) if plan["previous"] else None
        if previous is not None and previous.version == version and previous.model_uri == plan["model_uri"]:
            if previous.ready and self.target.health(previous).ok:
                self.log.info(
                    "Version %s of model %s already serves at %s: verifying it without a switch",
                    version, name, previous.endpoint,
                )  # fmt: skip
                plan = {**plan, "previous": None, "unchanged": True, "canary": None}
        self.record = ReleaseRecord.begin(
            self.client, name, rid, self.settings.action, plan, self.lease, self.try_number, self.keys
        )
        return self._switch(plan)

    def resume_record(self, record: ReleaseRecord) -> dict[str, Any]:
        """
        Finish the unfinished release a killed try left: the same version, previous deployment and reason.

        Before ``record`` the target is switched again (a no-op when the switch was done) and verified in
        full (smoke test, canary bake); at ``record`` the alias and history are written (writes a retry
        repeats without duplicates); at ``rollback`` the rollback to the recorded previous deployment runs.
        The version is checked again as for a new release (gate, approval), and what is served is
        ``models:/<name>/<version>`` as the registry resolves it now, never a URI kept in the record.
        """
        self.record = record
        plan = self._trusted_plan(record.plan)
        self.log.warning(
            "Resuming the release of version %s of model %s left at step %r by an earlier try (%s)",
            plan.get("version"), plan.get("model_name"), record.step, record.describe(),
        )  # fmt: skip
        if record.step == RECORD and plan.get("deployment"):
            return self._succeeded(Deployment.from_dict(plan["deployment"]), plan, changed=True)
        if record.step == ROLLBACK_STEP and plan.get("phase") == ROLLBACK:
            return self._roll_back(plan)
        if record.step == BAKE and plan.get("bake_window") and plan.get("deployment"):
            # The canary serves since before the bake began: bake the same window again, switch nothing.
            return self._live_bake(Deployment.from_dict(plan["deployment"]), plan)
        if (
            record.step == PROMOTE_CANARY
            and (plan.get("bake") or {}).get("verdict") == PASS
            and plan.get("deployment")
        ):
            return self._baked(Deployment.from_dict(plan["deployment"]), plan, plan["bake"])
        for key in ("deployment", "bake", "bake_window", "failure", "failed_version"):
            plan.pop(key, None)
        plan["phase"] = DEPLOY
        return self._switch(plan)

    def _trusted_plan(self, plan: dict[str, Any]) -> dict[str, Any]:
        """A recorded plan with its version checked again and its model URIs resolved through the registry."""
        name, version = str(plan["model_name"]), str(plan["version"])
        if self.allowed is not None:
            self.allowed(name, version)
        plan = {**plan, "model_uri": self.target.resolve_model_uri(self.client, name, version)}
        for key in ("previous", "deployment"):
            if plan.get(key):
                kept = dict(plan[key])
                kept["model_uri"] = self.target.resolve_model_uri(self.client, name, str(kept["version"]))
                plan[key] = kept
        return plan

    def repeat(self, record: ReleaseRecord) -> dict[str, Any]:
        """A release this task instance already finished: its result again, or its failure again."""
        self.record = record
        outcome = record.data.get("outcome")
        if outcome == "succeeded" and record.data.get("result"):
            self.log.info("This task already released: %s", record.describe())
            return dict(record.data["result"])
        plan = record.plan
        raise DeploymentVerificationError(
            f"This task's release of version {record.data.get('version')} of model {record.model_name!r} "
            f"already ended ({outcome}): {record.data.get('error') or 'see the deployment history'}. Trigger a "
            "new DAG run to release again.",
            model=record.model_name,
            version=str(record.data.get("version")),
            reason=str(plan.get("failure") or outcome),
        )

    def resume(self, plan: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
        """After the target's trigger fired: verify (deploy phase) or finish the rollback (rollback phase)."""
        rid = release_id(plan["airflow"])
        last = self.last(plan["model_name"], rid)
        self.record = last if last is not None and last.id == rid else None
        deployment = Deployment.from_dict(plan["deployment"])
        if plan.get("bake_window") and "bake" not in plan and plan["phase"] == DEPLOY:
            return self._bake_judged(deployment, plan, event)
        if event.get("status") != "success":
            return self._not_ready(deployment, plan, f"{event.get('status')}: {event.get('message')}")
        fresh = self.target.current(plan["model_name"]) or deployment
        return self._ready(fresh, plan)

    def abandon(self, name: str, error: BaseException) -> None:
        """
        After a failure no retry will repair: end the record as ``failed`` and point the alias at what serves.

        What serves is the version of the last successful entry of the deployment history (none: the alias
        is removed), so ``champion``, the endpoint and the history agree when the task ends.
        """
        record = self.record  # only this task's own release: never another task's
        if record is not None and not record.done:
            record.finish("failed", error=str(error), try_number=self.try_number)
        alias = self.settings.alias
        if not alias:
            return
        serving = last_served_version(read_history(self.client, name, self.keys))
        aliased = get_alias_version(self.client, name, alias)
        if serving is None and aliased is not None:
            self.client.delete_registered_model_alias(name, alias)
            self.log.warning("Removed alias %s of model %s: no version serves it", alias, name)
        elif serving is not None and aliased != int(serving):
            self._move_alias(name, serving)

    def _advance(self, step: str, plan: Mapping[str, Any]) -> None:
        if self.record is not None:
            self.record.advance(step, plan, self.try_number)

    def _finish(self, outcome: str, **values: Any) -> None:
        if self.record is not None:
            self.record.finish(outcome, try_number=self.try_number, **values)

    # -- the steps -----------------------------------------------------------------------------------------

    def _switch(self, plan: dict[str, Any]) -> dict[str, Any]:
        target = self.target
        name, version = plan["model_name"], plan["version"]
        if plan.get("unchanged"):
            current = target.current(name)
            if current is not None and current.version == version:
                return self._await_ready(current, plan)
            plan = {**plan, "unchanged": False}  # it stopped serving meanwhile: switch after all
        previous = plan["previous"]
        self._advance(SWITCH, plan)
        self.log.info(
            "Deploying version %s of model %s (%s) on %s; serving before: %s",
            version, name, plan["model_uri"], target.describe(), previous["version"] if previous else "nothing",
        )  # fmt: skip
        try:
            if plan.get("canary"):
                self.log.info("Canary rollout: version %s gets %s%% of the traffic", version, plan["canary"])
                deployment = target.deploy_canary(name, version, plan["model_uri"], plan["canary"])
            else:
                deployment = target.deploy(name, version, plan["model_uri"])
        except DeploymentError as err:
            # The target changed nothing: what served before still serves.
            self._record(plan, version, "failed", f"deploy refused: {err}", deployment=None)
            self._restore_alias(plan)
            if err.model is None:
                err.model, err.version = name, version
            if not err.retryable:
                self._finish("failed", error=str(err))
            raise
        return self._await_ready(deployment, plan)

    def _await_ready(self, deployment: Deployment, plan: dict[str, Any]) -> dict[str, Any]:
        target = self.target
        if not deployment.ready:
            trigger = (
                target.ready_trigger(deployment, self.settings.ready_timeout)
                if self.settings.deferrable
                else None
            )
            if trigger is not None:
                self.log.info(
                    "Waiting in the triggerer for %s to be ready", deployment.endpoint or deployment.details
                )
                self.defer(trigger, {**plan, "deployment": deployment.to_dict()})
            try:
                deployment = target.wait_ready(deployment, self.settings.ready_timeout)
            except DeploymentError as err:
                return self._not_ready(deployment, plan, str(err))
        return self._ready(deployment, plan)

    def _ready(self, deployment: Deployment, plan: dict[str, Any]) -> dict[str, Any]:
        target, settings = self.target, self.settings
        plan = {**plan, "deployment": deployment.to_dict()}
        rollback_phase = plan["phase"] == ROLLBACK
        canary = not rollback_phase and bool(plan.get("canary")) and "bake" not in plan
        if not rollback_phase:
            self._advance(VERIFY, plan)
        records = SmokeTest.from_dict(plan["verify"]).records(settings.aws_conn_id)
        failure, health = smoke_test(
            target, deployment, records, timeout=settings.request_timeout, canary=canary
        )
        if not failure:
            self.log.info("Verified %s: %s; smoke test: %s rows", deployment.endpoint, health, len(records))
        if rollback_phase:
            return self._rolled_back(deployment, plan, failure)
        if not failure and canary:
            if self._capture_uri() and plan.get("previous"):
                return self._live_bake(deployment, plan)
            self.log.warning(
                "No captured live traffic to judge the canary on (the target captures nothing, or nothing "
                "served before): baking it on probe requests"
            )
            self._advance(BAKE, plan)
            result = bake(
                target, deployment, records, settings.canary or CanaryPolicy(),
                request_timeout=settings.request_timeout, log=self.log,
            )  # fmt: skip
            result = {"judged": PROBES, "verdict": "fail" if result.get("failure") else PASS, **result}
            return self._baked(deployment, plan, result)
        if failure:
            return self._failed(deployment, plan, failure)
        self._advance(RECORD, plan)
        return self._succeeded(deployment, plan, changed=not plan.get("unchanged"))

    def _capture_uri(self) -> str | None:
        """Where the target's captured live traffic is (None: it captures nothing)."""
        if self.settings.capture_uri:
            return self.settings.capture_uri
        settings = getattr(self.target, "capture_settings", None)
        found = settings() if callable(settings) else None
        return str(found["uri"]) if found and found.get("uri") else None

    def _live_bake(self, deployment: Deployment, plan: dict[str, Any]) -> dict[str, Any]:
        """
        Bake the canary on live requests, in the triggerer; the window is recorded before the wait.

        A plan that has a ``bake_window`` (a retry) bakes that same window: same start, same deadlines.
        """
        from airflow_mlops.triggers.canary import CanaryBakeTrigger

        policy = self.settings.canary or CanaryPolicy()
        window = plan.get("bake_window")
        if not window:
            now = utc_now()
            window = {
                "start": now.isoformat(timespec="seconds"),
                "deadline": datetime.fromtimestamp(now.timestamp() + policy.bake_seconds, UTC).isoformat(
                    timespec="seconds"
                ),
                "final_deadline": datetime.fromtimestamp(
                    now.timestamp() + policy.longest_bake, UTC
                ).isoformat(timespec="seconds"),
                "capture_uri": self._capture_uri(),
                "baseline_version": str(plan["previous"]["version"]),
            }
            plan = {**plan, "bake_window": window}
            self.log.info(
                "Baking the canary %s of model %s on live requests next to version %s until %s (at most %s): %s",
                plan["version"], plan["model_name"], window["baseline_version"], window["deadline"],
                window["final_deadline"], policy,
            )  # fmt: skip
        else:
            self.log.info(
                "Resuming the canary's bake begun at %s (deadline %s)", window["start"], window["deadline"]
            )
        self._advance(BAKE, plan)
        trigger = CanaryBakeTrigger(
            model_name=plan["model_name"],
            canary_version=str(plan["version"]),
            baseline_version=window["baseline_version"],
            capture_uri=window["capture_uri"],
            start=window["start"],
            deadline=window["deadline"],
            final_deadline=window["final_deadline"],
            policy=policy.to_dict(),
            aws_conn_id=self.settings.aws_conn_id,
        )
        self.defer(trigger, plan)
        # The deferral returned: bake here, with the trigger's own loop.
        return self._bake_judged(deployment, plan, _last_event(trigger))

    def _bake_judged(
        self, deployment: Deployment, plan: dict[str, Any], event: Mapping[str, Any]
    ) -> dict[str, Any]:
        """After the bake's trigger: promote on ``pass``; roll back on ``fail`` and on ``inconclusive``."""
        verdict = str(event.get("verdict"))
        if event.get("status") != "success":
            # The record stays at step "bake": the retry bakes the same window again.
            raise ServiceUnavailableError(
                f"The canary bake of version {plan['version']} of model {plan['model_name']!r} could not measure "
                f"its traffic: {event.get('message')}",
                model=plan["model_name"],
                version=str(plan["version"]),
            )
        window = plan["bake_window"]
        measurements = list(event.get("measurements") or [])
        last = dict(event.get("last") or {})
        result: dict[str, Any] = {
            "judged": LIVE,
            "verdict": verdict,
            "canary_percent": deployment.details.get("canary_traffic_percent") or plan.get("canary"),
            "baseline_version": window["baseline_version"],
            "start": window["start"],
            "deadline": window["deadline"],
            "measured": len(measurements),
            "failed_measurements": sum(1 for m in measurements if m.get("verdict") == "fail"),
            "canary": last.get("canary"),
            "baseline": last.get("baseline"),
            "latency": last.get("latency"),
            "predictions": last.get("predictions"),
            "measurements": measurements,
        }
        if verdict != PASS:
            result["failure"] = f"canary bake {verdict}: {event.get('message')}" + (
                ". An inconclusive canary is never promoted: rolled back" if verdict == INCONCLUSIVE else ""
            )
        return self._baked(deployment, plan, result)

    def _baked(self, deployment: Deployment, plan: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """A bake's *result*: promote the canary to 100% when it passed, else fail (and roll back)."""
        plan = {**plan, "bake": result}
        failure = result.get("failure")
        if not failure:
            shown = {k: v for k, v in result.items() if k != "measurements"}
            self.log.info("Canary passed its bake: %s; promoting it to 100%%", shown)
            self._advance(PROMOTE_CANARY, plan)
            try:
                promoted = self.target.promote_canary(plan["model_name"], deployment)
            except DeploymentError as err:
                failure = f"promoting the canary to 100% failed: {err}"
            else:
                return self._await_ready(promoted, plan)
        return self._failed(deployment, plan, failure)

    def _not_ready(self, deployment: Deployment, plan: dict[str, Any], message: str) -> dict[str, Any]:
        if plan["phase"] == ROLLBACK:
            return self._rolled_back(deployment, plan, f"not ready: {message}")
        return self._failed(deployment, plan, f"not ready: {message}")

    def _succeeded(self, deployment: Deployment, plan: dict[str, Any], changed: bool) -> dict[str, Any]:
        name, version = plan["model_name"], plan["version"]
        self._move_alias(name, version)
        previous_version = plan["previous"]["version"] if plan["previous"] else None
        self._serves_again(name, version)
        self._record(
            plan, version, "succeeded", plan["reason"], deployment, previous_version=previous_version
        )
        if self.settings.action == "rollback" and previous_version and previous_version != version:
            self.client.set_model_version_tag(
                name,
                previous_version,
                T.ROLLBACK_REASON,
                f"rolled back to version {version} by {plan['actor']}: {plan['reason']}"[:5000],
            )
        self.log.info("Version %s of model %s serves at %s", version, name, deployment.endpoint)
        result = {
            "model_name": name,
            "version": version,
            "previous_version": previous_version,
            "target": self.target.config_kind(),
            "endpoint": deployment.endpoint,
            "action": self.settings.action,
            "outcome": "succeeded",
            "changed": changed,
            **({"bake": plan["bake"]} if plan.get("bake") else {}),
        }
        self._finish("succeeded", result=result)
        return result

    def _failed(self, deployment: Deployment, plan: dict[str, Any], failure: str) -> dict[str, Any]:
        target = self.target
        name, version = plan["model_name"], plan["version"]
        self.log.error("Version %s of model %s failed verification: %s", version, name, failure)
        self._record(plan, version, "failed", failure, deployment)
        if plan.get("unchanged"):
            self._finish("failed", error=failure)
            raise DeploymentVerificationError(
                f"Version {version} of model {name!r} serves on target {target.config_kind()} but fails its "
                f"check: {failure}. Nothing was changed; roll back (the rollback DAG) or deploy another version.",
                model=name,
                version=version,
                reason=failure,
            )
        self.client.set_model_version_tag(
            name, version, T.ROLLBACK_REASON, f"automatic rollback: {failure}"[:5000]
        )
        if plan["previous"] is None:
            target.stop(name)
            self._restore_alias(plan)
            message = (
                f"Version {version} of model {name!r} failed verification on target {target.config_kind()}: "
                f"{failure}. Nothing served this model before, so it is no longer served at all."
            )
            self._finish("failed", error=message)
            raise DeploymentVerificationError(message, model=name, version=version, reason=failure)
        plan = {**plan, "phase": ROLLBACK, "failure": failure, "failed_version": version}
        return self._roll_back(plan)

    def _roll_back(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The rollback phase: the target goes back to the recorded previous deployment."""
        name = plan["model_name"]
        previous = Deployment.from_dict(plan["previous"])
        self._advance(ROLLBACK_STEP, plan)
        self.log.warning("Rolling back model %s to version %s", name, previous.version)
        try:
            restored = self.target.rollback(name, previous)
        except DeploymentError as err:
            return self._rolled_back(previous, plan, f"rollback refused: {err}")
        return self._await_ready(restored, plan)

    def _rolled_back(
        self, deployment: Deployment, plan: dict[str, Any], failure: str | None
    ) -> dict[str, Any]:
        """End of an automatic rollback: always raises, saying what serves now."""
        target, alias = self.target, self.settings.alias
        name, failed_version = plan["model_name"], plan["failed_version"]
        previous = plan["previous"]
        rollback_plan = {
            **plan,
            "reason": f"automatic rollback from version {failed_version}: {plan['failure']}",
        }
        if failure:
            self._record(rollback_plan, previous["version"], "failed", f"{rollback_plan['reason']}; {failure}",
                         deployment, action="auto_rollback", previous_version=failed_version)  # fmt: skip
            # The record stays at step "rollback": a retry tries the rollback again.
            raise DeploymentError(
                f"Version {failed_version} of model {name!r} failed verification ({plan['failure']}), and rolling "
                f"back to version {previous['version']} failed too: {failure}. The endpoint "
                f"{deployment.endpoint or ''} may not serve; check the target ({target.describe()}).",
                model=name,
                version=failed_version,
                reason=failure,
            )
        self._move_alias(name, previous["version"])
        self._serves_again(name, previous["version"])
        self._record(rollback_plan, previous["version"], "succeeded", rollback_plan["reason"], deployment,
                     action="auto_rollback", previous_version=failed_version)  # fmt: skip
        message = (
            f"Version {failed_version} of model {name!r} failed verification on target {target.config_kind()}: "
            f"{plan['failure']}. Rolled back: version {previous['version']} serves again at {deployment.endpoint}"
            + (f" and alias {alias!r} points at it." if alias else ".")
        )
        self._finish("rolled_back", error=message)
        raise DeploymentVerificationError(message, model=name, version=failed_version, reason=plan["failure"])

    # -- registry ------------------------------------------------------------------------------------------

    def _move_alias(self, name: str, version: str) -> None:
        alias = self.settings.alias
        if not alias:
            return
        if get_alias_version(self.client, name, alias) != int(version):
            self.client.set_registered_model_alias(name, alias, str(version))
            self.log.info("Alias %s of model %s now points at version %s", alias, name, version)

    def _restore_alias(self, plan: Mapping[str, Any]) -> None:
        """After a failure: the alias goes back to what serves (the previous deployment), if it moved."""
        alias = self.settings.alias
        if not alias:
            return
        name, version = plan["model_name"], plan["version"]
        client = self.client
        if get_alias_version(client, name, alias) != int(version):
            return
        if plan["previous"]:
            self._move_alias(name, plan["previous"]["version"])
            return
        mv = get_model_version(client, name, int(version))
        earlier = (mv.tags or {}).get(T.PREVIOUS_CHAMPION)
        if earlier and earlier.isdigit():
            self._move_alias(name, earlier)
        else:
            client.delete_registered_model_alias(name, alias)
            self.log.info("Removed alias %s of model %s: no version serves", alias, name)

    def _serves_again(self, name: str, version: str) -> None:
        """A version serving (again) is no longer "rolled away from"; its deployment history keeps why it was."""
        if T.ROLLBACK_REASON in (self.client.get_model_version(name, str(version)).tags or {}):
            self.client.delete_model_version_tag(name, str(version), T.ROLLBACK_REASON)

    def _record(
        self,
        plan: Mapping[str, Any],
        version: str,
        outcome: str,
        reason: str,
        deployment: Deployment | None,
        *,
        action: str | None = None,
        previous_version: str | None = None,
    ) -> None:
        target = plan["target"]
        entry = {
            "time": utc_now_iso(),
            "action": action or self.settings.action,
            "version": str(version),
            "outcome": outcome,
            "target": target.get("kind"),
            "endpoint": deployment.endpoint if deployment else "",
            "actor": plan["actor"],
            "reason": reason or "",
            "previous_version": previous_version,
            "verify": plan["verify"],
            "airflow": plan["airflow"],
        }
        if plan.get("bake") and str(version) == str(plan["version"]):
            entry["bake"] = {k: v for k, v in plan["bake"].items() if k not in ("failure", "measurements")}
        append_entry(
            self.client, plan["model_name"], entry, target if outcome == "succeeded" else None, self.keys
        )


# -- what a manual rollback restores ---------------------------------------------------------------------


def rollback_history(
    client: MlflowClient, name: str, keys: SigningKeys | None = None, log: Any = None
) -> list[dict[str, Any]]:
    """
    The model's deployment history, which a rollback needs: the entries the package signed (with *keys*).

    Entries it did not sign count as absent; each is logged as a warning to *log*.

    :raises DeploymentRejectedError: if the model has no deployment history (nothing to roll back).
    """
    rejected: list[tuple[dict[str, Any], str]] = []
    history = read_history(client, name, keys, rejected)
    for entry, problem in rejected:
        if log is not None:
            log.warning(
                "Ignoring a %s entry of model %s (version %s, %s at %s): its signature %s",
                T.DEPLOYMENTS, name, entry.get("version"), entry.get("outcome"), entry.get("time"), problem,
            )  # fmt: skip
    if not history:
        raise DeploymentRejectedError(
            f"Model {name!r} has no deployment history in the registry (tag {T.DEPLOYMENTS}): there is "
            "nothing to roll back. Deploy it with DeployModelOperator first.",
            model=name,
        )
    return history


def check_served_before(
    client: MlflowClient, name: str, version: str, keys: SigningKeys | None = None
) -> None:
    """
    Refuse a rollback to a version that never served successfully (by the entries the package signed).

    :raises RecordSignatureError: if only entries the package did not sign say it served (not retryable).
    :raises DeploymentRejectedError: naming the versions that did (not retryable).
    """
    rejected: list[tuple[dict[str, Any], str]] = []
    if served_before(client, name, version, keys, rejected):
        return
    claims = [(entry, problem) for entry, problem in rejected if entry.get("outcome") == "succeeded"]
    if claims:
        entry, problem = claims[-1]
        raise RecordSignatureError(
            f"Refusing to roll model {name!r} back to version {version}: the {T.DEPLOYMENTS} entry saying it "
            f"served ({entry.get('action')} at {entry.get('time')}) is not the package's: its signature {problem}. "
            "It counts as absent, and a rollback restores only a version that served. Nothing was changed.",
            model=name,
            version=str(version),
            reason="untrusted deployment history",
        )
    served = sorted(
        {str(e["version"]) for e in read_history(client, name, keys) if e.get("outcome") == "succeeded"},
        key=int,
    )
    raise DeploymentRejectedError(
        f"Refusing to roll model {name!r} back to version {version}: it never served successfully, and a "
        f"rollback restores only a version that did (recently served: {', '.join(served) or 'none'}). Deploy "
        "a new version through the continuous-training DAG instead.",
        model=name,
        version=version,
        reason="never served",
    )


def rollback_version(history: Sequence[Mapping[str, Any]], name: str, serving: str | None) -> str:
    """
    The previous champion: the last version that served successfully before *serving* took over.

    :raises DeploymentRejectedError: if there is none.
    """
    found = previous_serving_version(history, serving)
    if found is None:
        raise DeploymentRejectedError(
            f"Model {name!r} has no earlier version that served before version {serving}: give the "
            "version to roll back to.",
            model=name,
        )
    return found


def ensure_rollback_changes(
    target: DeployTarget,
    client: MlflowClient,
    current: Deployment | None,
    name: str,
    version: str,
    model_uri: str,
    alias: str | None,
) -> None:
    """
    Refuse a rollback to what already serves, answers and (with *alias*) is aliased.

    :raises DeploymentRejectedError: if nothing would change.
    """
    if current is not None and current.version == version and current.model_uri == model_uri:
        aliased = get_alias_version(client, name, alias) if alias else None
        if current.ready and target.health(current).ok and (not alias or aliased == int(version)):
            raise DeploymentRejectedError(
                f"Version {version} of model {name!r} already serves at {current.endpoint}: nothing to roll "
                "back, nothing changed. Give another version.",
                model=name,
                version=version,
            )


def rollback_smoke_test(
    client: MlflowClient, name: str, serving: str | None, keys: SigningKeys | None = None
) -> SmokeTest | None:
    """The smoke test of the last successful (signed) deployment of *serving* (None if there is none)."""
    last = last_verify_settings(client, name, serving, keys)
    return SmokeTest.from_dict(last) if last is not None else None


def _last_event(trigger: Any) -> dict[str, Any]:
    """Run *trigger* here to its one event (a release whose deferral returned waits in its own process)."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        return {"status": "error", "message": "the trigger ended without an event"}

    return asyncio.run(first())
