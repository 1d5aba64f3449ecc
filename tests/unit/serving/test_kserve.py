"""KServe manifests validate against the InferenceService CRD; status reading and patches behave as KServe's."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import DeploymentError
from airflow_mlops.serving.kserve import (
    KServeTarget,
    inference_service_state,
    merge_patch,
    service_name_for,
)
from airflow_mlops.triggers.kserve import KServeInferenceServiceReadyTrigger
from tests.kube_api_stub import apply_merge_patch, spec_validator


@pytest.fixture(scope="module")
def validator():
    return spec_validator()


def errors(validator, manifest) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(manifest["spec"])]


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="mlflow-format-defaults"),
        pytest.param(
            {
                "namespace": "ml-serving",
                "runtime": "kserve-mlserver",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "gpus": 2,
                "canary_traffic_percent": 10,
                "min_replicas": 1,
                "max_replicas": 4,
                "service_account_name": "models-s3",
                "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
                "labels": {"team": "churn"},
                "predictor_overrides": {
                    "nodeSelector": {"nvidia.com/gpu.product": "A100"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
            id="gpus-canary-runtime-overrides",
        ),
        pytest.param(
            {
                "image": "registry.example.com/churn-predictor:1.4",
                "resources": {"limits": {"cpu": "2"}},
                "gpus": 1,
            },
            id="custom-predictor-image",
        ),
    ],
)
def test_generated_manifests_are_valid_inference_services(validator, settings):
    target = KServeTarget(**settings)

    manifest = target.build_manifest("Churn.Classifier_v2", "7", "s3://models/churn/7/artifacts")

    assert errors(validator, manifest) == []
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == "churn-classifier-v2"
    assert manifest["metadata"]["annotations"]["airflow-mlops/model-version"] == "7"
    predictor = manifest["spec"]["predictor"]
    if "image" in settings:
        (container,) = predictor["containers"]
        assert {"name": "STORAGE_URI", "value": "s3://models/churn/7/artifacts"} in container["env"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    else:
        assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
        assert predictor["model"]["storageUri"] == "s3://models/churn/7/artifacts"
    if settings.get("gpus") == 2:
        assert predictor["model"]["resources"]["limits"] == {"memory": "2Gi", "nvidia.com/gpu": "2"}


def test_the_schema_check_catches_a_misspelt_field(validator):
    manifest = KServeTarget(predictor_overrides={"canaryTrafficPercentage": 10}).build_manifest(
        "m", "1", "s3://b/m"
    )

    assert any("canaryTrafficPercentage" in e for e in errors(validator, manifest))


def test_canary_percent_is_set_on_deploy_and_dropped_on_rollback():
    target = KServeTarget(canary_traffic_percent=20)

    deploy = target.build_manifest("m", "2", "s3://b/2", canary_traffic_percent=target.canary_traffic_percent)
    rollback = target.build_manifest("m", "1", "s3://b/1")

    assert deploy["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert "canaryTrafficPercent" not in rollback["spec"]["predictor"]


def test_merge_patch_turns_the_old_spec_into_the_new_one():
    old = KServeTarget(canary_traffic_percent=20).build_manifest(
        "m", "2", "s3://b/2", canary_traffic_percent=20
    )
    new = KServeTarget(image="img:1").build_manifest("m", "1", "s3://b/1")

    patch = merge_patch(old["spec"], new["spec"])

    assert patch["predictor"]["model"] is None
    assert patch["predictor"]["canaryTrafficPercent"] is None
    assert apply_merge_patch(old["spec"], patch) == new["spec"]
    assert merge_patch(new["spec"], new["spec"]) == {}


def test_storage_uri_mapping_and_unreadable_locations():
    target = KServeTarget(storage_uri_map={"mlflow-artifacts:/": "s3://mlflow/artifacts/"})

    assert (
        target.storage_uri("mlflow-artifacts:/3/models/m-1/artifacts")
        == "s3://mlflow/artifacts/3/models/m-1/artifacts"
    )
    with pytest.raises(DeploymentError, match="storage_uri_map"):
        KServeTarget().storage_uri("mlflow-artifacts:/3/models/m-1/artifacts")
    with pytest.raises(DeploymentError, match="cannot download"):
        KServeTarget().storage_uri("/local/path/model")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"namespace": "Bad_NS!"}, "namespace"),
        ({"service_name": "9starts-with-digit"}, "service_name"),
        ({"gpus": -1}, "gpus"),
        ({"canary_traffic_percent": 150}, "canary_traffic_percent"),
        ({"resources": {"limit": {"cpu": "1"}}}, "resources"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_invalid_settings_are_rejected_with_what_is_allowed(settings, message):
    with pytest.raises(ValueError, match=message):
        KServeTarget(**settings)


def test_service_names_are_dns_labels():
    assert service_name_for("Churn.Classifier_v2") == "churn-classifier-v2"
    assert service_name_for("2024_model") == "m-2024-model"
    assert len(service_name_for("x" * 300)) <= 45


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


def test_trigger_serializes_exactly_its_arguments():
    trigger = KServeInferenceServiceReadyTrigger(
        name="churn",
        namespace="models",
        kubernetes_conn_id="k8s",
        min_generation=3,
        deadline=1e9,
        poll_interval=5,
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_mlops.triggers.kserve.KServeInferenceServiceReadyTrigger"
    assert kwargs == {
        "name": "churn", "namespace": "models", "kubernetes_conn_id": "k8s", "min_generation": 3,
        "deadline": 1e9, "poll_interval": 5.0,
    }  # fmt: skip
    assert KServeInferenceServiceReadyTrigger(**kwargs).serialize() == (classpath, kwargs)
