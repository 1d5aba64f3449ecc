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
from airflow_mlops.exceptions import (
    DeploymentRejectedError,
    DeploymentVerificationError,
    ReleaseInProgressError,
)
from airflow_mlops.serving import record as R
from airflow_mlops.serving.base import Deployment
from airflow_mlops.serving.record import ReleaseRecord, release_id
from airflow_mlops.serving.release import (
    DEPLOY,
    Release,
    ReleaseSettings,
    new_plan,
    rollback_history,
    rollback_version,
)
from airflow_mlops.serving.verification import SmokeTest
from tests.support.deploy import EchoTarget, write_holdout_snapshot

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
        return SimpleNamespace(version=str(version), tags=dict(self.version_tags[str(version)]))

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.version_tags[str(version)][key] = value

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        del self.version_tags[str(version)][key]

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.model_tags[key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.model_tags.get(T.DEPLOYMENTS, "[]"))


AIRFLOW = {"dag_id": "d", "run_id": "r", "task_id": "deploy", "map_index": -1}
RID = release_id(AIRFLOW)


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

    result = release_on(target, client).start(plan_for(target, "2", previous), RID)

    assert result == {
        "model_name": "m", "version": "2", "previous_version": "1", "target": target.config_kind(),
        "endpoint": "echo://m", "action": "deploy", "outcome": "succeeded", "changed": True,
    }  # fmt: skip
    assert target.served["m"].version == "2"
    assert client.aliases == {"champion": "2"}
    [entry] = client.history()
    assert (entry["action"], entry["version"], entry["outcome"], entry["actor"]) == (
        "deploy",
        "2",
        "succeeded",
        "alice",
    )
    assert json.loads(client.model_tags[T.DEPLOYMENT_TARGET])["kind"] == target.config_kind()


def test_a_version_that_already_serves_is_not_switched_again():
    target, client = Echo(), Registry()
    serving = target.deploy("m", "2", "models:/m/2")

    result = release_on(target, client, alias=None).start(plan_for(target, "2", serving), RID)

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
        release_on(target, client).start(plan, RID)

    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == ("m", "2")
    assert target.served["m"].version == "1"
    assert client.aliases == {"champion": "1"}
    assert [(e["action"], e["version"], e["outcome"]) for e in client.history()] == [
        ("deploy", "2", "failed"), ("auto_rollback", "1", "succeeded"),
    ]  # fmt: skip
    assert client.version_tags["2"][T.ROLLBACK_REASON].startswith("automatic rollback: smoke test failed")


def test_a_version_that_serves_again_is_no_longer_tagged_rolled_away_from(tmp_path):
    target, client = Echo(), Registry()
    verify = SmokeTest(write_holdout_snapshot(tmp_path), ["label"], 2)

    def deploy(version: str, run_id: str) -> dict[str, Any]:
        plan = new_plan(
            model_name="m", version=version, model_uri=f"models:/m/{version}", target=target,
            previous=target.served.get("m"), verify=verify, reason="why", actor="alice", airflow=AIRFLOW,
        )  # fmt: skip
        return release_on(target, client).start(plan, release_id({**AIRFLOW, "run_id": run_id}))

    deploy("1", "r1")
    client.version_tags["1"][T.ROLLBACK_REASON] = "rolled back to version 0 by erin: an earlier episode"
    target.broken.add("2")
    with pytest.raises(DeploymentVerificationError):
        deploy("2", "r2")
    # v1 serves again after the automatic rollback; v2 is the one rolled away from.
    assert T.ROLLBACK_REASON not in client.version_tags["1"]
    assert client.version_tags["2"][T.ROLLBACK_REASON].startswith("automatic rollback: smoke test failed")

    target.broken.clear()
    deploy("2", "r3")
    assert target.served["m"].version == "2"
    assert T.ROLLBACK_REASON not in client.version_tags["2"]
    assert [e["reason"] for e in client.history() if e["outcome"] == "failed"][0].startswith(
        "smoke test failed"
    )


def test_a_release_defers_with_its_plan_and_resumes_from_it():
    target, client = Echo(slow=True), Registry()
    previous = Deployment("m", "1", "models:/m/1", target.config_kind(), "echo://m", "")
    deferrals: list = []

    with pytest.raises(RuntimeError, match="deferred"):
        release_on(target, client, deferrals, deferrable=True).start(plan_for(target, "2", previous), RID)

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
        rollback_history(Registry(), "m")
    history = [{"version": "1", "outcome": "succeeded"}, {"version": "2", "outcome": "succeeded"}]

    assert rollback_version(history, "m", "2") == "1"
    with pytest.raises(DeploymentRejectedError, match="no earlier version that served before version 1"):
        rollback_version(history[:1], "m", "1")


# -- the release record: a killed try, retried -----------------------------------------------------------


class Killed(BaseException):
    """What SIGKILL does to the try: it stops right there (no except or finally of ours runs)."""


@pytest.fixture
def kill_at(monkeypatch):
    """Stop the try right after the record is written for a step (the kill points of the harness)."""
    steps: list[str] = []
    advance = ReleaseRecord.advance

    def arm(step: str) -> list[str]:
        def killing(self, name, plan=None, try_number=None):
            advance(self, name, plan, try_number)
            steps.append(name)
            if name == step:
                monkeypatch.setattr(ReleaseRecord, "advance", advance)  # the retry is not killed
                raise Killed(name)

        monkeypatch.setattr(ReleaseRecord, "advance", killing)
        return steps

    return arm


def retry(target: Echo, client: Registry, **settings: Any) -> dict[str, Any]:
    """A new try of the same task instance: what the operator does with the record it finds."""
    release = release_on(target, client, **settings)
    record = release.last("m")
    assert record is not None
    assert record.id == RID
    return release.repeat(record) if record.done else release.resume_record(record)


def broken_plan(target: Echo, tmp_path, previous: Deployment) -> dict[str, Any]:
    return new_plan(
        model_name="m", version="2", model_uri="models:/m/2", target=target, previous=previous,
        verify=SmokeTest(write_holdout_snapshot(tmp_path), ["label"], 2), reason="why", actor="alice",
        airflow=AIRFLOW,
    )  # fmt: skip


@pytest.mark.parametrize("step", [R.PLANNED, R.SWITCH, R.VERIFY, R.RECORD])
def test_a_deploy_killed_at_any_step_is_finished_by_the_retry_once(kill_at, step):
    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    kill_at(step)

    with pytest.raises(Killed):
        release_on(target, client).start(plan_for(target, "2", previous), RID)
    result = retry(target, client)

    assert (result["version"], result["previous_version"], result["outcome"]) == ("2", "1", "succeeded")
    assert target.served["m"].version == "2"
    assert client.aliases == {"champion": "2"}
    assert [(e["action"], e["version"], e["outcome"]) for e in client.history()] == [
        ("deploy", "2", "succeeded")
    ]
    assert json.loads(client.model_tags[T.RELEASE])["step"] == R.DONE
    # A try after the release ended returns its result again and changes nothing.
    assert retry(target, client) == result
    assert len(client.history()) == 1


@pytest.mark.parametrize("step", [R.SWITCH, R.VERIFY])
def test_a_retry_after_the_switch_verifies_in_full_and_rolls_back_to_the_recorded_previous(
    kill_at, tmp_path, step
):
    """Killed with v2 serving unverified: the retry does not trust what serves; v2 fails its smoke test."""
    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    client.aliases["champion"] = "2"  # promoted before the deploy
    target.broken.add("2")
    kill_at(step)

    with pytest.raises(Killed):
        release_on(target, client).start(broken_plan(target, tmp_path, previous), RID)
    assert target.served["m"].version == "2" or step == R.SWITCH
    with pytest.raises(DeploymentVerificationError, match="Rolled back: version 1 serves again"):
        retry(target, client)

    assert target.served["m"].version == "1"
    assert client.aliases == {"champion": "1"}
    assert [(e["action"], e["version"], e["outcome"]) for e in client.history()] == [
        ("deploy", "2", "failed"), ("auto_rollback", "1", "succeeded"),
    ]  # fmt: skip
    # A try after that rolled-back release fails the same way without deploying v2 again.
    target.broken.discard("2")
    with pytest.raises(DeploymentVerificationError, match="already ended \\(rolled_back\\)"):
        retry(target, client)
    assert target.served["m"].version == "1"


def test_a_rollback_killed_after_its_switch_finishes_the_same_rollback_with_its_reason(kill_at):
    target, client = Echo(), Registry(("1", "2", "3"))
    target.deploy("m", "2", "models:/m/2")
    serving = target.current("m")
    plan = new_plan(
        model_name="m", version="1", model_uri="models:/m/1", target=target, previous=serving,
        verify=SmokeTest(), reason="v2 drifts", actor="erin", airflow=AIRFLOW,
    )  # fmt: skip
    kill_at(R.SWITCH)

    with pytest.raises(Killed):
        release_on(target, client, action="rollback").start(plan, RID)
    target.deploy("m", "1", "models:/m/1")  # the switch went through before the kill
    result = retry(target, client, action="rollback")

    assert (result["version"], result["previous_version"], result["action"]) == ("1", "2", "rollback")
    assert [(e["action"], e["version"], e["actor"], e["reason"]) for e in client.history()] == [
        ("rollback", "1", "erin", "v2 drifts")
    ]
    assert client.version_tags["2"][T.ROLLBACK_REASON] == "rolled back to version 1 by erin: v2 drifts"


def test_a_second_release_waits_for_the_one_in_progress_and_takes_over_an_abandoned_one(kill_at):
    target, client = Echo(), Registry(("1", "2", "3"))
    previous = target.deploy("m", "1", "models:/m/1")
    kill_at(R.SWITCH)
    with pytest.raises(Killed):
        release_on(target, client).start(plan_for(target, "2", previous), RID)

    other = release_on(target, client)
    with pytest.raises(ReleaseInProgressError, match="being released by another task") as err:
        other.check_free(other.last("m"), "d/r2/deploy/-1")
    assert err.value.retryable is True

    last = other.last("m")
    last.data["expires"] = "2000-01-01T00:00:00+00:00"  # its task died for good long ago
    assert other.check_free(last, "d/r2/deploy/-1") is last


def test_a_release_that_fails_for_good_leaves_the_alias_on_what_serves():
    target, client = Echo(), Registry(("1", "2"))
    previous = target.deploy("m", "1", "models:/m/1")
    release_on(target, client).start(plan_for(target, "1", previous), RID)  # v1 verified and recorded
    client.aliases["champion"] = "2"  # promoted; its deploy then fails before anything changed

    release_on(target, client).abandon("m", ValueError("bad sample data"))

    assert client.aliases == {"champion": "1"}


def test_a_resumed_release_checks_the_version_again_and_serves_what_the_registry_resolves():
    """A record's model URI is never served: the version is checked again and resolved through the registry."""
    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    plan = {**plan_for(target, "2", previous), "model_uri": "file:///tmp/crafted-model"}
    record = ReleaseRecord.begin(client, "m", RID, "deploy", plan, 600.0)
    record.advance(R.SWITCH, plan)
    checked: list[tuple[str, str]] = []
    release = Release(
        target, client, ReleaseSettings(), log=LOG, defer=lambda *_: None,
        allowed=lambda name, version: checked.append((name, version)),
    )  # fmt: skip

    result = release.resume_record(ReleaseRecord.load(client, "m", 600.0))

    assert checked == [("m", "2")]
    assert (result["version"], target.served["m"].model_uri) == ("2", "models:/m/2")


def test_a_resumed_release_of_a_version_no_longer_allowed_changes_nothing():
    from airflow_mlops.exceptions import ApprovalRequiredError

    target, client = Echo(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    plan = plan_for(target, "2", previous)
    ReleaseRecord.begin(client, "m", RID, "deploy", plan, 600.0).advance(R.SWITCH, plan)

    def refuse(name: str, version: str) -> None:
        raise ApprovalRequiredError(f"Refusing to deploy version {version} of model {name!r}")

    release = Release(target, client, ReleaseSettings(), log=LOG, defer=lambda *_: None, allowed=refuse)
    with pytest.raises(ApprovalRequiredError, match="Refusing to deploy version 2"):
        release.resume_record(ReleaseRecord.load(client, "m", 600.0))
    assert target.served["m"].version == "1"
    assert client.aliases == {}


def test_a_release_record_with_nan_and_infinity_is_strict_json_and_still_verifies():
    from tests.support.signing import test_keys

    class SignedRegistry(Registry):
        def get_model_version(self, name: str, version: str) -> SimpleNamespace:
            mv = super().get_model_version(name, version)
            return SimpleNamespace(**vars(mv), name=name, run_id="r1", source="models:/m1")

    client, keys = SignedRegistry(), test_keys()
    record = ReleaseRecord(client, "m", {"id": RID, "version": "2", "kind": "deploy"}, lease=60, keys=keys)
    record.finish("succeeded", result={"latency_ms": {"p50": float("nan"), "max": float("inf")}, "rows": 5})

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a registry tag")

    for tag in (client.version_tags["2"][T.RELEASE], client.model_tags[T.RELEASE]):
        json.loads(tag, parse_constant=refuse)
    loaded = ReleaseRecord.load(client, "m", 60, keys=keys, reader=RID)
    assert loaded is not None
    assert loaded.done
    assert loaded.data["result"] == {"latency_ms": {"p50": None, "max": None}, "rows": 5}


class CanaryEcho(Echo):
    """The in-memory target with a canary beside what serves (as the local target and KServe have)."""

    supports_canary = True

    def __init__(self) -> None:
        super().__init__()
        self.canary: Deployment | None = None

    def deploy(self, model_name: str, version: str, model_uri: str) -> Deployment:
        self.canary = None
        return super().deploy(model_name, version, model_uri)

    def deploy_canary(self, model_name: str, version: str, model_uri: str, percent: int) -> Deployment:
        self.canary = Deployment(model_name, str(version), model_uri, self.config_kind(), f"echo://{model_name}",
                                 "", details={"canary_traffic_percent": percent})  # fmt: skip
        return self.canary

    def health(self, deployment: Deployment, timeout: float = 10.0) -> Any:
        if self.canary is not None and deployment.version == self.canary.version:
            return type(super().health(deployment))(True, "canary answers")
        return super().health(deployment, timeout)

    def predict_canary(self, deployment: Deployment, records: Any, timeout: float = 30.0) -> list[Any]:
        return [int(deployment.version)] * len(records)

    def promote_canary(self, model_name: str, deployment: Deployment) -> Deployment:
        assert self.canary is not None
        self.canary = None
        return super().deploy(model_name, deployment.version, deployment.model_uri)


def live_event(verdict: str) -> dict[str, Any]:
    side = {
        "requests": 40,
        "errors": 4 if verdict == "fail" else 0,
        "error_rate": 0.1,
        "p50_ms": 2.0,
        "p95_ms": 3.0,
    }
    last = {"verdict": verdict, "canary": side, "baseline": {**side, "errors": 0}, "latency": None,
            "predictions": None, "reasons": []}  # fmt: skip
    return {"status": "success", "verdict": verdict, "message": f"the canary {verdict}", "last": last,
            "measurements": [{"verdict": verdict, "canary": side}]}  # fmt: skip


@pytest.mark.parametrize(
    ("verdict", "serves", "outcome"),
    [("pass", "2", "succeeded"), ("fail", "1", "failed"), ("inconclusive", "1", "failed")],
)
def test_a_canary_with_captured_traffic_is_baked_in_the_trigger_and_judged_live(verdict, serves, outcome):
    """Any target with captures (the local target's own, or a KServe receiver's root) takes the same path."""
    from airflow_mlops.serving.canary import CanaryPolicy
    from airflow_mlops.triggers.canary import CanaryBakeTrigger

    target, client = CanaryEcho(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    deferrals: list = []
    settings = {"capture_uri": "/data", "canary": CanaryPolicy(percent=10, bake_seconds=60)}
    plan = {**plan_for(target, "2", previous), "canary": 10}

    with pytest.raises(RuntimeError, match="deferred"):
        release_on(target, client, deferrals, **settings).start(plan, RID)

    [(trigger, deferred)] = deferrals
    assert isinstance(trigger, CanaryBakeTrigger)
    assert trigger.serialize()[1]["baseline_version"] == "1"
    assert trigger.serialize()[1]["capture_uri"] == "/data"
    recorded = json.loads(client.version_tags["2"][T.RELEASE])
    assert recorded["step"] == R.BAKE
    assert recorded["plan"]["bake_window"] == deferred["bake_window"]  # the window is durable before the wait
    assert target.served["m"].version == "1"
    assert target.canary.version == "2"

    if verdict == "pass":
        result = release_on(target, client, **settings).resume(deferred, live_event(verdict))
        assert (result["outcome"], result["bake"]["verdict"], result["bake"]["judged"]) == (
            outcome,
            "pass",
            "live",
        )
    else:
        with pytest.raises(DeploymentVerificationError, match=f"canary bake {verdict}"):
            release_on(target, client, **settings).resume(deferred, live_event(verdict))
    assert target.served["m"].version == serves
    entry = next(e for e in client.history() if e["version"] == "2")
    assert (entry["outcome"], entry["bake"]["verdict"], entry["bake"]["canary"]["requests"]) == (
        outcome,
        verdict,
        40,
    )


def test_a_retry_at_the_bake_bakes_the_same_window_and_switches_nothing():
    from airflow_mlops.serving.canary import CanaryPolicy

    target, client = CanaryEcho(), Registry()
    previous = target.deploy("m", "1", "models:/m/1")
    settings = {"capture_uri": "/data", "canary": CanaryPolicy(percent=10, bake_seconds=60)}
    first: list = []
    with pytest.raises(RuntimeError, match="deferred"):
        release_on(target, client, first, **settings).start(
            {**plan_for(target, "2", previous), "canary": 10}, RID
        )
    canary = target.canary
    record = ReleaseRecord.load(client, "m", 3600.0)

    again: list = []
    with pytest.raises(RuntimeError, match="deferred"):
        release_on(target, client, again, **settings).resume_record(record)

    assert target.canary is canary  # not switched again
    assert again[0][0].serialize() == first[0][0].serialize()  # same start, same deadlines
