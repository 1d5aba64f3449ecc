"""
A release runs from a JSON plan on a target and an MLflow client, without an operator or an Airflow context:
switch, await readiness (here or in the triggerer), verify, roll back, move the alias, record the history.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_mlops import tags as T
from airflow_mlops.exceptions import DeploymentRejectedError, DeploymentVerificationError
from airflow_mlops.serving.base import Deployment
from airflow_mlops.serving.release import (
    DEPLOY,
    Release,
    ReleaseSettings,
    new_plan,
    rollback_source,
    rollback_version,
)
from airflow_mlops.serving.verification import SmokeTest
from tests.deploy_support import EchoTarget, write_holdout_snapshot

LOG = logging.getLogger("test_release")


class Echo(EchoTarget):
    """The in-memory user target, with its own state; ``slow`` deployments are not ready until waited for."""

    def __init__(self, *, slow: bool = False) -> None:
        super().__init__()
        self.served: dict[str, Deployment] = {}
        self.broken: set[str] = set()
        self.slow = slow

    def deploy(self, model_name: str, version: str, model_uri: str) -> Deployment:
        deployment = super().deploy(model_name, version, model_uri)
        if self.slow:
            deployment = Deployment(**{**deployment.to_dict(), "ready": False})
        return deployment

    def ready_trigger(self, deployment: Deployment, timeout: float) -> Any:
        return ("trigger", deployment.version) if self.slow else None


class Registry:
    """The part of MlflowClient a release uses, in memory."""

    def __init__(self, versions: tuple[str, ...] = ("1", "2")) -> None:
        self.aliases: dict[str, str] = {}
        self.model_tags: dict[str, str] = {}
        self.version_tags: dict[str, dict[str, str]] = {v: {} for v in versions}

    def get_registered_model(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(aliases=dict(self.aliases), tags=dict(self.model_tags))

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(tags=dict(self.version_tags[str(version)]))

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.version_tags[str(version)][key] = value

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.model_tags[key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.model_tags.get(T.DEPLOYMENTS, "[]"))


AIRFLOW = {"dag_id": "d", "run_id": "r", "task_id": "deploy", "map_index": -1}


def plan_for(target: Echo, version: str, previous: Deployment | None) -> dict[str, Any]:
    return new_plan(
        model_name="m", version=version, model_uri=f"models:/m/{version}", target=target, previous=previous,
        verify=SmokeTest(), reason="why", actor="alice", airflow=AIRFLOW,
    )  # fmt: skip


def release_on(target: Echo, client: Registry, deferrals: list | None = None, **settings: Any) -> Release:
    def defer(trigger: Any, plan: dict[str, Any]) -> None:
        assert deferrals is not None, "this release must not defer"
        deferrals.append((trigger, plan))
        raise RuntimeError("deferred")  # what TaskDeferred does: the task leaves here

    return Release(target, client, ReleaseSettings(**settings), log=LOG, defer=defer)


def test_a_plan_is_json_and_starts_in_the_deploy_phase():
    plan = plan_for(Echo(), "2", Deployment("m", "1", "models:/m/1", "echo", "echo://m", ""))

    assert json.loads(json.dumps(plan)) == plan
    assert plan["phase"] == DEPLOY
    assert plan["previous"]["version"] == "1"
    assert plan["target"]["kind"] == Echo.config_kind()
    assert plan["canary"] is None


def test_a_verified_version_serves_moves_the_alias_and_is_recorded():
    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")

    result = release_on(target, client).start(plan_for(target, "2", previous))

    assert result == {
        "model_name": "m", "version": "2", "previous_version": "1", "target": target.config_kind(),
        "endpoint": "echo://m", "action": "deploy", "outcome": "succeeded", "changed": True,
    }  # fmt: skip
    assert target.served["m"].version == "2"
    assert client.aliases == {"champion": "2"}
    [entry] = client.history()
    assert (entry["action"], entry["version"], entry["outcome"], entry["actor"]) == ("deploy", "2", "succeeded", "alice")
    assert json.loads(client.model_tags[T.DEPLOYMENT_TARGET])["kind"] == target.config_kind()


def test_a_version_that_already_serves_is_not_switched_again():
    target, client = Echo(), Registry()
    serving = target.deploy("m", "2", "models:/m/2")

    result = release_on(target, client, alias=None).start(plan_for(target, "2", serving))

    assert (result["changed"], result["previous_version"]) == (False, None)
    assert client.aliases == {}


def test_a_failing_version_is_rolled_back_to_the_previous_one(tmp_path):
    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    client.aliases["champion"] = "2"  # promoted before the deploy
    target.broken.add("2")
    plan = new_plan(
        model_name="m", version="2", model_uri="models:/m/2", target=target, previous=previous,
        verify=SmokeTest(write_holdout_snapshot(tmp_path), ["label"], 2), reason="why", actor="alice",
        airflow=AIRFLOW,
    )  # fmt: skip

    with pytest.raises(DeploymentVerificationError, match="Rolled back: version 1 serves again") as err:
        release_on(target, client).start(plan)

    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == ("m", "2")
    assert target.served["m"].version == "1"
    assert client.aliases == {"champion": "1"}
    assert [(e["action"], e["version"], e["outcome"]) for e in client.history()] == [
        ("deploy", "2", "failed"), ("auto_rollback", "1", "succeeded"),
    ]  # fmt: skip
    assert client.version_tags["2"][T.ROLLBACK_REASON].startswith("automatic rollback: smoke test failed")


def test_a_release_defers_with_its_plan_and_resumes_from_it():
    target, client = Echo(slow=True), Registry()
    previous = Deployment("m", "1", "models:/m/1", target.config_kind(), "echo://m", "")
    deferrals: list = []

    with pytest.raises(RuntimeError, match="deferred"):
        release_on(target, client, deferrals, deferrable=True).start(plan_for(target, "2", previous))

    [(trigger, plan)] = deferrals
    assert trigger == ("trigger", "2")
    assert json.loads(json.dumps(plan)) == plan  # what goes to the metadata database
    assert (plan["phase"], plan["deployment"]["version"], plan["deployment"]["ready"]) == (DEPLOY, "2", False)
    assert client.history() == []  # nothing recorded before it is verified

    result = release_on(target, client).resume(plan, {"status": "success"})

    assert (result["version"], result["outcome"], result["previous_version"]) == ("2", "succeeded", "1")


def test_a_deployment_never_ready_in_the_triggerer_is_rolled_back():
    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    plan = {**plan_for(target, "2", previous), "deployment": Deployment("m", "2", "models:/m/2", "echo", "", "",
                                                                        ready=False).to_dict()}  # fmt: skip

    with pytest.raises(DeploymentVerificationError, match="not ready: timeout: 30s passed"):
        release_on(target, client).resume(plan, {"status": "timeout", "message": "30s passed"})

    assert [e["action"] for e in client.history()] == ["deploy", "auto_rollback"]


def test_a_rollback_needs_history_and_an_earlier_version():
    with pytest.raises(DeploymentRejectedError, match="no deployment history"):
        rollback_source(Registry(), "m", None)
    history = [{"version": "1", "outcome": "succeeded"}, {"version": "2", "outcome": "succeeded"}]

    assert rollback_version(history, "m", "2") == "1"
    with pytest.raises(DeploymentRejectedError, match="no earlier version that served before version 1"):
        rollback_version(history[:1], "m", "1")
