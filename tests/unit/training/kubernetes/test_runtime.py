"""KubernetesRuntime's settings: composed of small parts, checked when the DAG is parsed, rendered as templates."""

from __future__ import annotations

import pytest

from airflow_mlops.training.kubernetes.config import Gpus, Resources, Scheduling
from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime
from airflow_mlops.utils.k8s import KubernetesConnection
from tests.support.kubernetes_manifests import operator


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": -1}, "gpus must be an integer >= 0"),
        ({"resources": Resources(memory="16 GB")}, "memory must be a Kubernetes quantity"),
        (
            {"connection": KubernetesConnection(namespace="ML_Training")},
            "namespace must be a lower-case DNS label",
        ),
        ({"secret_env": {"MLOPS_PARAMS": "s/k"}}, "secret_env may not set MLOPS_PARAMS"),
        ({"secret_env": {"TOKEN": "just-a-value"}}, "must name a Kubernetes Secret and key"),
        ({"gpus": Gpus(count=0, product="H100")}, "gpu_product needs gpus > 0"),
        ({"gpus": Gpus(count=1, product="H100 80GB")}, "gpu_product must be a node label value"),
        (
            {"scheduling": Scheduling(priority_class="Training_High")},
            "priority_class must be a Kubernetes object",
        ),
        (
            {"scheduling": Scheduling(node_selector={"pool": "a b"})},
            r"node_selector\['pool'\] = 'a b' is not a valid",
        ),
        ({"scheduling": Scheduling(affinity={"nodeSelector": {}})}, "affinity may only have the keys"),
        ({"resources": {"cpu": "4"}}, "resources must be a Resources"),
        ({"labels": {"team": "rec sys"}}, "is not a valid label value"),
        ({"image": ""}, "image must be a container image reference"),
        ({"num_nodes": 0}, "num_nodes must be >= 1"),
        ({"queue_name": "Team A"}, "queue_name must name a Kubernetes object"),
        ({"queue_priority_class": "high"}, "queue_priority_class needs queue_name"),
        (
            {"queue_name": "q", "admission_timeout": 0},
            "admission_timeout must be a positive number of seconds",
        ),
        ({"training_runtime": "torch_distributed"}, "training_runtime must name a Kubernetes object"),
        (
            {"training_runtime": "t", "training_runtime_kind": "Runtime"},
            "training_runtime_kind must be one of",
        ),
        (
            {"training_runtime": "t", "env_from_secrets": ["s"]},
            "env_from_secrets cannot be patched into a TrainJob",
        ),
        (
            {"training_runtime": "t", "scheduling": Scheduling(priority_class="hi")},
            "give queue_priority_class",
        ),
    ],
)
def test_invalid_settings_are_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KubernetesRuntime(**{"image": "trainer:1", **kwargs})


def test_templated_settings_are_checked_after_rendering():
    runtime = KubernetesRuntime(
        image="{{ params.image }}", connection=KubernetesConnection(namespace="{{ params.namespace }}")
    )
    runtime.image, runtime.namespace = "trainer:1", "Not A Namespace"

    with pytest.raises(ValueError, match="namespace must be a lower-case DNS label"):
        runtime.validate(rendered=True)


def test_runtime_repr_is_stable_for_dag_serialization():
    runtime = KubernetesRuntime(image="trainer:1", gpus=1, labels={"team": "a"})

    assert repr(runtime) == "KubernetesRuntime(gpus=Gpus(count=1), image='trainer:1', labels={'team': 'a'})"
    assert repr(runtime) == repr(KubernetesRuntime(image="trainer:1", gpus=1, labels={"team": "a"}))


def test_the_string_kubernetes_points_to_the_runtime_object():
    from airflow_mlops.operators.training import TrainModelOperator

    with pytest.raises(ValueError, match=r"runtime=KubernetesRuntime\(image="):
        TrainModelOperator(task_id="t", entrypoint="pkg.train", train_data="x", experiment_name="e",
                           runtime="kubernetes")  # fmt: skip


def test_runtime_settings_are_rendered_with_the_operator_templates():
    runtime = KubernetesRuntime(image="{{ params.image }}", labels={"team": "{{ params.team }}"})
    op = operator(runtime)

    op.render_template_fields({"params": {"image": "registry.example.com/trainer:2.0", "team": "ml"}})

    assert op.runtime.image == "registry.example.com/trainer:2.0"
    assert op.runtime.labels == {"team": "ml"}
    assert runtime.image == "{{ params.image }}"  # the operator renders its own copy


def test_namespace_and_gpu_product_render_into_their_parts():
    runtime = KubernetesRuntime(
        image="trainer:1",
        gpus=Gpus(count=1, product="{{ params.gpu }}"),
        connection=KubernetesConnection(conn_id="k8s", namespace="{{ params.ns }}", in_cluster=True),
    )
    op = operator(runtime)

    op.render_template_fields({"params": {"gpu": "NVIDIA-H100-80GB-HBM3", "ns": "ml"}})

    assert op.runtime.gpus == Gpus(count=1, product="NVIDIA-H100-80GB-HBM3")
    assert op.runtime.connection == KubernetesConnection(conn_id="k8s", namespace="ml", in_cluster=True)
    op.runtime.validate(rendered=True)


def test_a_gpu_count_is_short_for_gpus_and_parts_compare_by_value():
    assert KubernetesRuntime(image="t:1", gpus=2).gpus == Gpus(count=2)
    assert KubernetesRuntime(image="t:1").resources == Resources(shm_size="1Gi")
    assert repr(Scheduling(priority_class="high")) == "Scheduling(priority_class='high')"


@pytest.mark.parametrize(("configured", "expected"), [("True", True), ("False", False)])
def test_deferrable_defaults_to_the_operators_setting(monkeypatch, configured, expected):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", configured)

    assert KubernetesRuntime(image="t:1").deferrable is expected
    assert KubernetesRuntime(image="t:1", deferrable=not expected).deferrable is (not expected)
