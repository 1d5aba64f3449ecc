"""KServe manifests validate against the InferenceService CRD; status reading and patches behave as KServe's."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import DeploymentError, DeploymentRejectedError
from airflow_mlops.serving.base import Deployment
from airflow_mlops.serving.kserve import KServeTarget, merge_patch, service_name_for
from airflow_mlops.utils.k8s import KubernetesConnection
from tests.support.kubernetes import apply_merge_patch, spec_validator


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
    with pytest.raises(DeploymentError, match="cannot download") as err:
        KServeTarget().storage_uri("/local/path/model")
    assert isinstance(err.value, DeploymentRejectedError)
    assert err.value.retryable is False
    assert err.value.uri == "/local/path/model"


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


def test_labels_use_the_shared_kubernetes_label_sanitiser():
    from airflow_mlops.utils.k8s import label_value

    for name in ("Churn.Classifier_v2", "x" * 200, "_odd-"):
        label = KServeTarget().build_manifest(name, "1", "s3://b/m")["metadata"]["labels"]["airflow-mlops/model"]
        assert label == label_value(name)
        assert len(label) <= 63


def test_the_target_hands_its_whole_cluster_connection_to_its_trigger():
    target = KServeTarget(
        namespace="ml", kubernetes_conn_id="k8s", config_file="/etc/kube/config", cluster_context="prod",
        in_cluster=False, poll_interval=2,
    )  # fmt: skip
    deployment = Deployment("m", "3", "s3://b/3", "kserve", "", "", ready=False,
                            details={"name": "m", "generation": 4})  # fmt: skip

    trigger = target.ready_trigger(deployment, timeout=60)

    expected = KubernetesConnection(
        conn_id="k8s", namespace="ml", config_file="/etc/kube/config", cluster_context="prod", in_cluster=False
    )
    assert target.connection == expected
    assert target.hook.connection == expected
    assert trigger.connection == expected.to_dict()
    assert trigger.namespace == "ml"
    assert (trigger.min_generation, trigger.poll_interval) == (4, 2.0)
    assert KServeTarget.from_config(target.to_config()).connection == expected


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (409, True), (422, False), (400, False), (403, False)],
)
def test_kubernetes_api_errors_are_retryable_only_when_a_retry_can_help(status, retryable):
    from kubernetes.client.exceptions import ApiException

    def refuse(*args):
        raise ApiException(status=status, reason="Refused")

    with pytest.raises(DeploymentError, match=f"HTTP {status}") as err:
        KServeTarget(kubernetes_conn_id="k8s")._call("patch InferenceService m", refuse, model="m")

    assert err.value.retryable is retryable
    assert isinstance(err.value, DeploymentRejectedError) is not retryable
    assert err.value.model == "m"


def test_an_unreachable_api_server_is_retryable():
    from urllib3.exceptions import ReadTimeoutError

    def time_out(*args):
        raise ReadTimeoutError(None, "/apis", "read timed out")

    with pytest.raises(DeploymentError, match="unreachable") as err:
        KServeTarget()._call("read InferenceService m", time_out)

    assert err.value.retryable is True
