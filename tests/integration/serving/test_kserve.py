"""
The KServe target over real HTTP: the ``kubernetes`` client (cncf-kubernetes ``KubernetesHook``, a kubeconfig)
against a Kubernetes API-server stand-in on loopback (tests/support/kubernetes/kserve.py) that validates every spec
against the InferenceService CRD and plays KServe's controller and predictor.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_mlops import tags as T
from airflow_mlops.exceptions import DeploymentError, DeploymentRejectedError, DeploymentVerificationError
from airflow_mlops.lineage.deployments import read_history
from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator
from airflow_mlops.serving.canary import CanaryPolicy
from airflow_mlops.serving.capture import count_captures
from airflow_mlops.serving.kserve import KServeTarget
from tests.conftest import set_connection
from tests.support.capture_receiver import capture_receiver
from tests.support.context import context_for
from tests.support.deploy import approve_version, write_holdout_snapshot
from tests.support.kubernetes import KubeApiStub
from tests.support.traffic import Users

if TYPE_CHECKING:
    from airflow_mlops.triggers.kserve import KServeInferenceServiceReadyTrigger

pytestmark = pytest.mark.integration

CONN_ID = "kubernetes_stub"
#: Captures of the last hour and the next, as the tests write them.
WINDOW = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
ROWS = [{"tenure_months": 1.0, "monthly_spend": 30.0}, {"tenure_months": 2.0, "monthly_spend": 31.0}]


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    with KubeApiStub() as stub:
        kubeconfig = stub.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
        set_connection(CONN_ID, conn_type="kubernetes", extra={"kube_config_path": str(kubeconfig)})
        yield stub


@pytest.fixture
def target(kube) -> KServeTarget:
    kube.behaviour.clear()
    return KServeTarget(
        namespace="models", kubernetes_conn_id=CONN_ID, poll_interval=0.05, canary_traffic_percent=25
    )


def stored(kube, name, namespace="models") -> dict:
    return kube.objects[(namespace, name)]


def test_create_wait_patch_and_rollback_over_http(kube, target):
    first = target.deploy("churn", "1", "s3://models/churn/1")

    assert not first.ready
    assert first.details["generation"] == 1
    assert kube.requests[-1]["method"] == "POST"
    first = target.wait_ready(first, timeout=30)
    assert first.ready
    assert first.endpoint == f"{kube.url}/serving/models/churn"
    assert target.current("churn").version == "1"
    assert target.predict(first, ROWS) == [1, 1]

    second = target.deploy_canary("churn", "2", "s3://models/churn/2", target.canary_percent())

    patch = kube.requests[-1]
    assert patch["method"] == "PATCH"
    assert patch["content_type"] == "application/merge-patch+json"
    assert second.details["generation"] == 2
    second = target.wait_ready(second, timeout=30)
    predictor = stored(kube, "churn")["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://models/churn/2"
    assert predictor["canaryTrafficPercent"] == 25
    assert target.health(second).ok
    # The shared URL splits 25/75; the canary's own (tag) URL reaches version 2 only.
    assert sorted(target.predict(second, ROWS[:1])[0] for _ in range(8)) == [1] * 6 + [2] * 2
    assert target.canary_endpoint(second) == f"{kube.url}/serving/models/churn/latest"
    assert target.predict_canary(second, ROWS) == [2, 2]

    promoted = target.wait_ready(target.promote_canary("churn", second), timeout=30)

    assert "canaryTrafficPercent" not in stored(kube, "churn")["spec"]["predictor"]
    assert promoted.version == "2"
    assert [target.predict(promoted, ROWS[:1])[0] for _ in range(4)] == [2] * 4

    restored = target.wait_ready(target.rollback("churn", first), timeout=30)

    predictor = stored(kube, "churn")["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://models/churn/1"
    assert "canaryTrafficPercent" not in predictor  # a rollback sends all traffic to the restored version
    assert restored.version == "1"
    assert target.predict(restored, ROWS) == [1, 1]

    target.stop("churn")
    assert target.current("churn") is None
    assert ("models", "churn") not in kube.objects


def test_a_deploy_that_changes_nothing_sends_no_patch(kube, target):
    target.wait_ready(target.deploy("same", "1", "s3://models/same/1"), timeout=30)
    writes = [r for r in kube.requests if r["method"] in ("POST", "PATCH")]

    target.deploy("same", "1", "s3://models/same/1")

    assert [r for r in kube.requests if r["method"] in ("POST", "PATCH")] == writes
    target.stop("same")


def test_a_failed_rollout_is_reported_with_kserves_message(kube, target):
    kube.behaviour["3"] = "fail-load"

    deployment = target.deploy("broken", "3", "s3://models/broken/3")

    with pytest.raises(DeploymentError, match="No module named 'missing_dep'") as err:
        target.wait_ready(deployment, timeout=30)

    assert isinstance(err.value, DeploymentRejectedError)  # KServe says the model cannot load: no retry
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == ("broken", "3")
    assert "ModelLoadFailed" in err.value.reason
    target.stop("broken")


def test_the_api_server_refusing_a_spec_is_a_clear_error_and_changes_nothing(kube, target):
    target.wait_ready(target.deploy("strict", "1", "s3://models/strict/1"), timeout=30)
    bad = KServeTarget(
        namespace="models", kubernetes_conn_id=CONN_ID, predictor_overrides={"minReplicas": "two"}
    )

    with pytest.raises(DeploymentError, match="HTTP 422") as err:
        bad.deploy("strict", "2", "s3://models/strict/2")

    assert isinstance(err.value, DeploymentRejectedError)
    assert err.value.retryable is False
    assert err.value.model == "strict"

    assert target.current("strict").version == "1"
    target.stop("strict")


def first_event(trigger: KServeInferenceServiceReadyTrigger) -> dict:
    # The trigger as the triggerer would rebuild it from its serialized form.
    classpath, kwargs = trigger.serialize()
    rebuilt = type(trigger)(**json.loads(json.dumps(kwargs)))

    async def run():
        async for event in rebuilt.run():
            return event.payload

    return asyncio.run(run())


def test_the_trigger_waits_for_ready_in_the_triggerer(kube, target):
    kube.reads_until_ready = 3
    try:
        deployment = target.deploy("deferred", "1", "s3://models/deferred/1")
        event = first_event(target.ready_trigger(deployment, timeout=30))
    finally:
        kube.reads_until_ready = 1

    assert event["status"] == "success"
    assert event["url"] == f"{kube.url}/serving/models/deferred"
    kube.behaviour["2"] = "fail-load"
    event = first_event(
        target.ready_trigger(target.deploy("deferred", "2", "s3://models/deferred/2"), timeout=30)
    )
    assert event["status"] == "failed"
    assert "missing_dep" in event["message"]
    kube.behaviour["3"] = "pending"
    event = first_event(
        target.ready_trigger(target.deploy("deferred", "3", "s3://models/deferred/3"), timeout=0.2)
    )
    assert event["status"] == "timeout"
    target.stop("deferred")


# -- the operator, deferred, with the registry -------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(mlflow_server):
    return approved_versions(mlflow_server, "kserve_churn")


def approved_versions(mlflow_server, name: str):
    """The client, *name* and three versions of it (``s3://models/<name>/<i>``), each gated and approved."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    client.create_registered_model(name)
    versions = [
        client.create_model_version(name, source=f"s3://models/{name}/{i}").version for i in (1, 2, 3)
    ]
    for version in versions:  # only a version that passed the gate and was approved may serve
        approve_version(client, name, version)
    return client, name, versions


def run_deferrable(op, context) -> tuple[dict, int]:
    """Run *op* as Airflow would: execute, and on each deferral run the trigger and resume the named method."""
    from airflow.sdk.exceptions import TaskDeferred

    step, deferrals = (lambda: op.execute(context)), 0
    while True:
        try:
            return step(), deferrals
        except TaskDeferred as deferred:
            deferrals += 1
            json.dumps(deferred.kwargs)  # what goes to the metadata database must be JSON
            event = first_event(deferred.trigger)
            method, kwargs = getattr(op, deferred.method_name), deferred.kwargs or {}
            step = lambda method=method, kwargs=kwargs, event=event: method(context, event=event, **kwargs)  # noqa: E731


def test_deploy_operator_defers_verifies_and_rolls_back_on_kserve(kube, registry, tmp_path):
    client, name, (v1, v2, v3) = registry
    holdout = write_holdout_snapshot(tmp_path)
    config = {"kind": "kserve", "namespace": "models", "kubernetes_conn_id": CONN_ID, "poll_interval": 0.05}

    def deploy(version, task_id):
        op = DeployModelOperator(
            task_id=task_id, model_name=name, version=version, target=config, sample_data=holdout,
            drop_columns=["label"], deferrable=True,
        )  # fmt: skip
        return run_deferrable(op, context_for(op, user="bob"))

    result, deferrals = deploy(v1, "deploy_v1")

    assert deferrals == 1
    assert result["outcome"] == "succeeded"
    assert stored(kube, "kserve-churn")["spec"]["predictor"]["model"]["storageUri"] == f"s3://models/{name}/1"
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1

    kube.behaviour[v2] = "fail-load"
    with pytest.raises(DeploymentVerificationError, match="missing_dep") as err:
        deploy(v2, "deploy_v2")
    assert f"version {v1} serves again" in str(err.value)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (name, v2)
    assert err.value.reason.startswith("not ready: failed:")
    assert stored(kube, "kserve-churn")["spec"]["predictor"]["model"]["storageUri"] == f"s3://models/{name}/1"

    kube.behaviour[v3] = "bad-predict"
    with pytest.raises(DeploymentVerificationError, match="division by zero"):
        deploy(v3, "deploy_v3")

    assert stored(kube, "kserve-churn")["metadata"]["annotations"]["airflow-mlops/model-version"] == v1
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1
    history = read_history(client, name)
    assert [(e["action"], e["version"], e["outcome"]) for e in history] == [
        ("deploy", v1, "succeeded"),
        ("deploy", v2, "failed"),
        ("auto_rollback", v1, "succeeded"),
        ("deploy", v3, "failed"),
        ("auto_rollback", v1, "succeeded"),
    ]
    assert {e["actor"] for e in history} == {"bob"}
    assert json.loads(client.get_registered_model(name).tags[T.DEPLOYMENT_TARGET])["kind"] == "kserve"


def test_a_deferred_rollback_on_kserve_records_why_and_who_asked(kube, mlflow_server, tmp_path):
    """The rollback waits for readiness in the triggerer and resumes in execute_complete: it still tags."""
    from mlflow import MlflowClient

    kube.behaviour.clear()
    client = MlflowClient(mlflow_server.uri)
    name = "kserve_rollback"
    client.create_registered_model(name)
    v1, v2 = (client.create_model_version(name, source=f"s3://models/{name}/{i}").version for i in (1, 2))
    for version in (v1, v2):
        approve_version(client, name, version)
    config = {"kind": "kserve", "namespace": "models", "kubernetes_conn_id": CONN_ID, "poll_interval": 0.05}
    for version in (v1, v2):
        op = DeployModelOperator(task_id=f"deploy_{version}", model_name=name, version=version, target=config,
                                 deferrable=True)  # fmt: skip
        run_deferrable(op, context_for(op, run_id=f"manual__deploy_{version}"))

    op = RollbackModelOperator(task_id="rollback", model_name=name, target=config, reason="v2 drifts",
                               deferrable=True)  # fmt: skip
    result, deferrals = run_deferrable(op, context_for(op, user="erin", run_id="manual__rollback"))

    assert deferrals == 1
    assert (result["version"], result["previous_version"], result["action"]) == (v1, v2, "rollback")
    assert (
        stored(kube, "kserve-rollback")["spec"]["predictor"]["model"]["storageUri"] == f"s3://models/{name}/1"
    )
    assert (
        client.get_model_version(name, v2).tags[T.ROLLBACK_REASON]
        == "rolled back to version 1 by erin: v2 drifts"
    )
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v1


def test_deploy_operator_bakes_a_canary_then_promotes_it_or_rolls_it_back(kube, mlflow_server, tmp_path):
    kube.behaviour.clear()
    client, name, (v1, v2, v3) = approved_versions(mlflow_server, "kserve_canary")
    holdout = write_holdout_snapshot(tmp_path)
    config = {"kind": "kserve", "namespace": "models", "kubernetes_conn_id": CONN_ID, "poll_interval": 0.05,
              "canary_traffic_percent": 20}  # fmt: skip

    def deploy(version, task_id):
        op = DeployModelOperator(
            task_id=task_id, model_name=name, version=version, target=config, sample_data=holdout,
            drop_columns=["label"], deferrable=True, canary=CanaryPolicy(bake_seconds=0.3, interval=0.05),
        )  # fmt: skip
        return run_deferrable(op, context_for(op, user="carol"))

    result, _ = deploy(v1, "deploy_v1")  # nothing served before: no canary, straight to 100%
    assert "bake" not in result
    assert "canaryTrafficPercent" not in stored(kube, "kserve-canary")["spec"]["predictor"]

    seen = len(kube.predictions)
    result, deferrals = deploy(v2, "deploy_v2")

    assert deferrals == 2  # the canary's rollout, then the promotion, each waited for in the triggerer
    assert result["outcome"] == "succeeded"
    bake = result["bake"]
    assert bake["canary_percent"] == 20
    assert bake["requests"] >= 1
    assert bake["errors"] == 0
    assert bake["endpoint"] == f"{kube.url}/serving/models/kserve-canary/latest"
    baked = [p for p in kube.predictions[seen:] if p["tag"] == "latest"]
    assert {p["version"] for p in baked} == {v2}
    assert len(baked) == bake["requests"] + 1  # the bake plus the canary's smoke test
    predictor = stored(kube, "kserve-canary")["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor  # promoted: all traffic to version 2
    assert predictor["model"]["storageUri"] == f"s3://models/{name}/2"
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v2
    assert read_history(client, name)[-1]["bake"]["error_rate"] == 0.0

    kube.behaviour[v3] = "flaky-predict"  # passes the one smoke request, fails the bake
    with pytest.raises(DeploymentVerificationError, match="canary bake failed: error rate") as err:
        deploy(v3, "deploy_v3")

    assert f"version {v2} serves again" in str(err.value)
    stored_obj = stored(kube, "kserve-canary")
    assert "canaryTrafficPercent" not in stored_obj["spec"]["predictor"]
    assert stored_obj["metadata"]["annotations"]["airflow-mlops/model-version"] == v2
    assert stored_obj["spec"]["predictor"]["model"]["storageUri"] == f"s3://models/{name}/2"
    assert client.get_registered_model(name).aliases[T.CHAMPION] == v2
    history = read_history(client, name)
    assert [(e["action"], e["version"], e["outcome"]) for e in history[-2:]] == [
        ("deploy", v3, "failed"),
        ("auto_rollback", v2, "succeeded"),
    ]
    assert "upstream connect error" in history[-2]["reason"]
    assert history[-2]["bake"]["errors"] == 1
    assert "canary bake failed" in client.get_model_version(name, v3).tags[T.ROLLBACK_REASON]
    target = KServeTarget(namespace="models", kubernetes_conn_id=CONN_ID)
    assert target.predict(target.current(name), ROWS) == [int(v2)] * 2
    target.stop(name)


def test_a_kserve_canary_is_judged_on_the_traffic_its_logger_captured(kube, mlflow_server, tmp_path):
    """
    KServe's logger posts every request and answer to the capture receiver (a real process); the bake judges the
    canary's captured live requests against the baseline's in the trigger: a version that fails 5% of users'
    requests (its smoke test passes) is rolled back, a good one is promoted.
    """
    kube.behaviour.clear()
    kube.answer = lambda version, row: int(row.get("tenure_months", 0) >= 50)  # every version answers alike
    client, name, (v1, v2, v3) = approved_versions(mlflow_server, "kserve_logged")
    kube.behaviour[v2] = "fails-5-percent"
    holdout = write_holdout_snapshot(tmp_path)
    token = "capture-token-for-the-logger-0123"
    set_connection("capture_token", conn_type="generic", password=token)
    signature = {name: {"tenure_months": "double", "monthly_spend": "double"}}

    try:
        with capture_receiver(tmp_path / "receiver", token, signature, flush_seconds=0.5) as receiver:
            config = {"kind": "kserve", "namespace": "models", "kubernetes_conn_id": CONN_ID,
                      "poll_interval": 0.05, "canary_traffic_percent": 50,
                      "capture_logger": {"url": receiver.url, "token_conn_id": "capture_token",
                                         "traffic_header": True}}  # fmt: skip

            def deploy(version, task_id):
                op = DeployModelOperator(
                    task_id=task_id, model_name=name, version=version, target=config, sample_data=holdout,
                    drop_columns=["label"], deferrable=True, capture_uri=str(receiver.root),
                    canary=CanaryPolicy(bake_seconds=4, interval=1, min_requests=60),
                )  # fmt: skip
                return run_deferrable(op, context_for(op, user="carol"))

            endpoint = deploy(v1, "deploy_v1")[0]["endpoint"]
            logger = stored(kube, "kserve-logged")["spec"]["predictor"]["logger"]
            assert logger["url"].startswith(f"{receiver.url}?model={name}&version={v1}&key=")
            assert token not in json.dumps(stored(kube, "kserve-logged"))

            seen = len(kube.predictions)
            with Users(endpoint), pytest.raises(DeploymentVerificationError, match="canary bake fail") as err:
                deploy(v2, "deploy_v2")

            answered = [p["version"] for p in kube.predictions[seen:] if p["tag"] is None]
            assert answered.count(v2) > 40  # users reached the canary through the shared URL
            assert f"version {v1} serves again" in str(err.value)
            assert client.get_registered_model(name).aliases[T.CHAMPION] == v1
            failed = next(e for e in reversed(read_history(client, name)) if e["version"] == v2)
            bake = failed["bake"]
            assert (bake["judged"], bake["verdict"]) == ("live", "fail")
            assert bake["canary"]["errors"] > 0
            assert bake["baseline"]["errors"] == 0
            assert "live requests" in failed["reason"]
            assert stored(kube, "kserve-logged")["metadata"]["annotations"]["airflow-mlops/model-version"] == v1

            with Users(endpoint):
                result, deferrals = deploy(v3, "deploy_v3")

            assert (result["version"], result["outcome"]) == (v3, "succeeded")
            assert (result["bake"]["judged"], result["bake"]["verdict"]) == ("live", "pass")
            assert result["bake"]["canary"]["requests"] >= 60
            assert result["bake"]["baseline"]["requests"] >= 60
            assert result["bake"]["predictions"]["js_distance"] < 0.1  # the same answers to the same users
            assert deferrals == 3  # the canary's rollout, its bake and the promotion, each in the triggerer
            assert "canaryTrafficPercent" not in stored(kube, "kserve-logged")["spec"]["predictor"]
            assert client.get_registered_model(name).aliases[T.CHAMPION] == v3
        # The smoke tests were stored apart: only users' requests were judged.
        assert count_captures(str(receiver.root), name, *WINDOW, traffic="synthetic") >= 3
        assert count_captures(str(receiver.root), name, *WINDOW) > 200
    finally:
        kube.answer = None
        KServeTarget(namespace="models", kubernetes_conn_id=CONN_ID).stop(name)


def test_a_kubeconfig_file_alone_reaches_the_cluster_from_the_target_and_its_trigger(kube, tmp_path):
    kube.behaviour.clear()
    kubeconfig = kube.write_kubeconfig(tmp_path / "config")
    # No Airflow connection: only the kubeconfig file (the trigger used to drop it and fall back to defaults).
    target = KServeTarget(
        namespace="models", kubernetes_conn_id="kubernetes_default", config_file=str(kubeconfig),
        poll_interval=0.05,
    )  # fmt: skip

    deployment = target.deploy("by-file", "1", "s3://models/by-file/1")
    trigger = target.ready_trigger(deployment, timeout=30)
    event = first_event(trigger)

    assert trigger.serialize()[1]["connection"]["config_file"] == str(kubeconfig)
    assert event["status"] == "success"
    assert event["namespace"] == "models"
    assert target.current("by-file").version == "1"
    target.stop("by-file")
