"""
The release of a model version on a serving target: switch, await readiness, verify, bake, roll back, record.

A release is driven by a **plan**: one JSON-serialisable dict (it travels through a deferral to the
triggerer and back) made by :func:`new_plan`. Its ``phase`` says where the release is:

- ``deploy``: the target is switched to the new version (at the canary percent when the plan has one), and
  once ready the version is verified (health check and smoke test) and, for a canary, baked and promoted
  to 100% (then verified again). Passing moves the alias and records ``succeeded``; failing records
  ``failed``, tags the version with ``mlops.rollback.reason`` and enters the rollback phase (or, with
  nothing served before, stops serving the model and raises).
- ``rollback``: the target goes back to the previous deployment, which is verified again; the alias is
  moved back and an ``auto_rollback`` entry recorded. This phase always ends in an exception saying what
  serves now.

Keys of a plan: ``model_name``, ``version``, ``model_uri``, ``target`` (the target's config), ``previous``
(the deployment serving before, or None), ``verify`` (the :class:`~airflow_mlops.serving.verification.SmokeTest`
settings), ``reason``, ``actor``, ``airflow`` (task ids), ``phase``, ``canary`` (the percent, or None); added
on the way: ``deployment`` (when deferred), ``bake`` (the bake result), ``failure`` and ``failed_version``
(in the rollback phase).

:class:`Release` runs a plan. It gets the target, the MLflow client, its :class:`ReleaseSettings` and two
callbacks (a logger and "defer with this trigger"), never the operator, and returns the task's result. The
choice of what a manual rollback restores is here too (:func:`rollback_source`, :func:`rollback_version`,
:func:`ensure_rollback_changes`, :func:`rollback_smoke_test`). No Airflow context is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops import tags as T
from airflow_mlops.exceptions import DeploymentError, DeploymentRejectedError, DeploymentVerificationError
from airflow_mlops.lineage.deployments import (
    append_entry,
    last_target_config,
    last_verify_settings,
    previous_serving_version,
    read_history,
)
from airflow_mlops.registry import get_alias_version, get_model_version
from airflow_mlops.serving.canary import CanaryPolicy, bake
from airflow_mlops.serving.status import Deployment
from airflow_mlops.serving.verification import SmokeTest, smoke_test
from airflow_mlops.utils.clock import utc_now_iso

if TYPE_CHECKING:
    import logging

    from mlflow import MlflowClient

    from airflow_mlops.serving.base import DeployTarget

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
    :param aws_conn_id: ``aws`` connection for an ``s3://`` sample snapshot.
    """

    action: str = DEPLOY
    alias: str | None = T.CHAMPION
    ready_timeout: float = 900.0
    request_timeout: float = 30.0
    deferrable: bool = False
    canary: CanaryPolicy | None = None
    aws_conn_id: str | None = None


class Release:
    """
    Run a release plan on a target: :meth:`start` it, and :meth:`resume` it after a deferral.

    Both return the task's result (``{"model_name", "version", "previous_version", "target", "endpoint",
    "action", "outcome", "changed"}``, plus ``"bake"`` after a canary) or raise what went wrong.

    :param target: Where the model serves.
    :param client: The MLflow client (aliases, tags, deployment history).
    :param settings: How the release runs.
    :param log: Where progress is logged (the task's logger).
    :param defer: Called with a trigger and the plan to resume with, to wait in the triggerer; it raises
        (the task defers) or returns (the release then waits here).
    """

    def __init__(
        self,
        target: DeployTarget,
        client: MlflowClient,
        settings: ReleaseSettings,
        *,
        log: logging.Logger | Any,
        defer: DeferCallback,
    ) -> None:
        self.target = target
        self.client = client
        self.settings = settings
        self.log = log
        self.defer = defer

    # -- the steps -----------------------------------------------------------------------------------------

    def start(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Switch the target to the plan's version (unless it already serves and answers), then go on."""
        target = self.target
        name, version = plan["model_name"], plan["version"]
        previous = Deployment.from_dict(plan["previous"]) if plan["previous"] else None
        if previous is not None and previous.version == version and previous.model_uri == plan["model_uri"]:
            if previous.ready and target.health(previous).ok:
                self.log.info("Version %s of model %s already serves at %s", version, name, previous.endpoint)
                plan["previous"] = None
                return self._succeeded(previous, plan, changed=False)
        self.log.info(
            "Deploying version %s of model %s (%s) on %s; serving now: %s",
            version, name, plan["model_uri"], target.describe(), previous.version if previous else "nothing",
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
            raise
        return self._await_ready(deployment, plan)

    def resume(self, plan: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
        """After the target's trigger fired: verify (deploy phase) or finish the rollback (rollback phase)."""
        deployment = Deployment.from_dict(plan["deployment"])
        if event.get("status") != "success":
            return self._not_ready(deployment, plan, f"{event.get('status')}: {event.get('message')}")
        fresh = self.target.current(plan["model_name"]) or deployment
        return self._ready(fresh, plan)

    def _await_ready(self, deployment: Deployment, plan: dict[str, Any]) -> dict[str, Any]:
        target = self.target
        if not deployment.ready:
            trigger = (
                target.ready_trigger(deployment, self.settings.ready_timeout) if self.settings.deferrable else None
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
        records = SmokeTest.from_dict(plan["verify"]).records(settings.aws_conn_id)
        canary = plan["phase"] == DEPLOY and bool(plan.get("canary")) and "bake" not in plan
        failure, health = smoke_test(
            target, deployment, records, timeout=settings.request_timeout, canary=canary
        )
        if not failure:
            self.log.info("Verified %s: %s; smoke test: %s rows", deployment.endpoint, health, len(records))
        if plan["phase"] == ROLLBACK:
            return self._rolled_back(deployment, plan, failure)
        if not failure and canary:
            result = bake(
                target, deployment, records, settings.canary or CanaryPolicy(),
                request_timeout=settings.request_timeout, log=self.log,
            )  # fmt: skip
            plan = {**plan, "bake": result}
            failure = result.get("failure")
            if not failure:
                self.log.info("Canary passed its bake: %s; promoting it to 100%%", result)
                try:
                    promoted = target.promote_canary(plan["model_name"], deployment)
                except DeploymentError as err:
                    failure = f"promoting the canary to 100% failed: {err}"
                else:
                    return self._await_ready(promoted, plan)
        if failure:
            return self._failed(deployment, plan, failure)
        return self._succeeded(deployment, plan, changed=True)

    def _not_ready(self, deployment: Deployment, plan: dict[str, Any], message: str) -> dict[str, Any]:
        if plan["phase"] == ROLLBACK:
            return self._rolled_back(deployment, plan, f"not ready: {message}")
        return self._failed(deployment, plan, f"not ready: {message}")

    def _succeeded(self, deployment: Deployment, plan: dict[str, Any], changed: bool) -> dict[str, Any]:
        name, version = plan["model_name"], plan["version"]
        self._move_alias(name, version)
        previous_version = plan["previous"]["version"] if plan["previous"] else None
        self._record(
            plan, version, "succeeded", plan["reason"], deployment, previous_version=previous_version
        )
        self.log.info("Version %s of model %s serves at %s", version, name, deployment.endpoint)
        return {
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

    def _failed(self, deployment: Deployment, plan: dict[str, Any], failure: str) -> dict[str, Any]:
        target = self.target
        name, version = plan["model_name"], plan["version"]
        self.log.error("Version %s of model %s failed verification: %s", version, name, failure)
        self._record(plan, version, "failed", failure, deployment)
        self.client.set_model_version_tag(
            name, version, T.ROLLBACK_REASON, f"automatic rollback: {failure}"[:5000]
        )
        previous = Deployment.from_dict(plan["previous"]) if plan["previous"] else None
        if previous is None:
            target.stop(name)
            self._restore_alias(plan)
            raise DeploymentVerificationError(
                f"Version {version} of model {name!r} failed verification on target {target.config_kind()}: "
                f"{failure}. Nothing served this model before, so it is no longer served at all.",
                model=name,
                version=version,
                reason=failure,
            )
        self.log.warning("Rolling back model %s to version %s", name, previous.version)
        plan = {**plan, "phase": ROLLBACK, "failure": failure, "failed_version": version}
        try:
            restored = target.rollback(name, previous)
        except DeploymentError as err:
            return self._rolled_back(previous, plan, f"rollback refused: {err}")
        return self._await_ready(restored, plan)

    def _rolled_back(self, deployment: Deployment, plan: dict[str, Any], failure: str | None) -> dict[str, Any]:
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
            raise DeploymentError(
                f"Version {failed_version} of model {name!r} failed verification ({plan['failure']}), and rolling "
                f"back to version {previous['version']} failed too: {failure}. The endpoint "
                f"{deployment.endpoint or ''} may not serve; check the target ({target.describe()}).",
                model=name,
                version=failed_version,
                reason=failure,
            )
        self._move_alias(name, previous["version"])
        self._record(rollback_plan, previous["version"], "succeeded", rollback_plan["reason"], deployment,
                     action="auto_rollback", previous_version=failed_version)  # fmt: skip
        raise DeploymentVerificationError(
            f"Version {failed_version} of model {name!r} failed verification on target {target.config_kind()}: "
            f"{plan['failure']}. Rolled back: version {previous['version']} serves again at {deployment.endpoint}"
            + (f" and alias {alias!r} points at it." if alias else "."),
            model=name,
            version=failed_version,
            reason=plan["failure"],
        )

    # -- registry ------------------------------------------------------------------------------------------

    def mark_rolled_away(self, name: str, serving: str | None, version: str, reason: str) -> None:
        """After a manual rollback to *version*: the version that served gets ``mlops.rollback.reason``."""
        if serving and serving != version:
            self.client.set_model_version_tag(
                name, serving, T.ROLLBACK_REASON, f"rolled back to version {version}: {reason}"[:5000]
            )

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
            entry["bake"] = {k: v for k, v in plan["bake"].items() if k != "failure"}
        append_entry(self.client, plan["model_name"], entry, target if outcome == "succeeded" else None)


# -- what a manual rollback restores ---------------------------------------------------------------------


def rollback_source(
    client: MlflowClient, name: str, target_config: Any
) -> tuple[list[dict[str, Any]], Any]:
    """
    The model's deployment history and the target config a rollback uses (*target_config*, else the last one).

    :raises DeploymentRejectedError: if the model has no deployment history (nothing to roll back).
    """
    history = read_history(client, name)
    config = target_config or last_target_config(client, name)
    if not history or config is None:
        raise DeploymentRejectedError(
            f"Model {name!r} has no deployment history in the registry (tag {T.DEPLOYMENTS}): there is "
            "nothing to roll back. Deploy it with DeployModelOperator first.",
            model=name,
        )
    return history, config


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


def rollback_smoke_test(client: MlflowClient, name: str, serving: str | None) -> SmokeTest | None:
    """The smoke test of the last successful deployment of *serving* (None if there is none)."""
    last = last_verify_settings(client, name, serving)
    return SmokeTest.from_dict(last) if last is not None else None
