"""The KServe hook judges an InferenceService as KServe does: ready for the generation written, or failed."""

from __future__ import annotations

import pytest

from airflow_mlops.hooks.kserve import (
    AsyncKServeHook,
    KServeHook,
    api_error_is_retryable,
    describe_conditions,
    inference_service_state,
)
from airflow_mlops.utils.k8s import KubernetesConnection


def _isvc(generation, observed, ready="True", **status):
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "url": "http://m.models.example.com",
            "conditions": [{"type": "Ready", "status": ready, "reason": status.pop("reason", None)}],
            **status,
        },
    }


def test_readiness_counts_only_for_the_generation_written():
    assert inference_service_state(_isvc(2, 2), 2) == ("ready", "http://m.models.example.com")
    # The controller has not seen the patch yet:
    assert inference_service_state(_isvc(2, 1), 2)[0] == "pending"
    rolling = _isvc(
        2, 2, components={"predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r1"}}
    )
    assert inference_service_state(rolling, 2)[0] == "pending"


def test_a_failed_model_load_is_reported_with_its_message():
    failed = _isvc(
        3, 3, ready="False",
        modelStatus={
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "No module named 'xgboost'"},
        },
    )  # fmt: skip

    state, message = inference_service_state(failed, 3)

    assert state == "failed"
    assert "No module named 'xgboost'" in message
    assert inference_service_state(failed, 4)[0] == "pending"  # an older generation's failure does not count


@pytest.mark.parametrize("reason", ["RevisionFailed", "InvalidPredictorSpec", "ModelLoadFailed"])
def test_failed_revisions_and_specs_end_the_wait(reason):
    obj = _isvc(2, 2, ready="False", reason=reason)
    obj["status"]["conditions"][0]["message"] = "container exited"

    state, message = inference_service_state(obj, 2)

    assert state == "failed"
    assert reason in message
    assert "container exited" in describe_conditions(obj)


def test_hooks_reach_the_cluster_as_the_connection_says():
    settings = {"namespace": "ml", "config_file": "/k/config", "cluster_context": "prod", "in_cluster": False}

    hook = KServeHook(kubernetes_conn_id="k8s", **settings)
    async_hook = AsyncKServeHook("k8s", **settings)

    assert hook.kubernetes_conn_id == async_hook.kubernetes_conn_id == "k8s"
    assert hook.namespace == async_hook.namespace == "ml"
    for k8s in (hook.kubernetes_hook, async_hook.async_kubernetes_hook):
        assert (k8s.conn_id, k8s.config_file, k8s.cluster_context, k8s.in_cluster) == (
            "k8s", "/k/config", "prod", False
        )
    assert KServeHook().namespace == "default"
    assert KServeHook().kubernetes_conn_id == "kubernetes_default"


def test_a_connection_object_still_works_and_warns_it_is_deprecated():
    connection = KubernetesConnection(
        conn_id="k8s", namespace="ml", config_file="/k/config", cluster_context="prod", in_cluster=False
    )

    with pytest.warns(DeprecationWarning, match="kubernetes_conn_id="):
        hook = KServeHook(connection=connection)
    with pytest.warns(DeprecationWarning, match="kubernetes_conn_id="):
        positional = AsyncKServeHook(connection.to_dict())  # the only argument of earlier releases

    for old in (hook, positional):
        assert (old.kubernetes_conn_id, old.namespace) == ("k8s", "ml")
        assert old.kubernetes_hook.config_file == "/k/config"


def test_api_errors_worth_a_retry():
    assert [s for s in (400, 403, 404, 408, 409, 422, 429, 500, 503) if api_error_is_retryable(s)] == [
        408, 409, 429, 500, 503
    ]
