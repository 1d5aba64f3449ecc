"""
What the Kubernetes training runtime would create, checked against the official schemas, and how it reads
a failed pod. No cluster: objects are rendered exactly as the cncf-kubernetes operators would send them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import pytest

from airflow_mlops.trainer import contract
from airflow_mlops.training.kubernetes.config import Scheduling
from tests.conftest import set_connection
from tests.support.deferred import k8s_context
from tests.support.kubernetes import schema_versions, validate_object
from tests.support.kubernetes_manifests import CONN_ID, gpu_runtime, operator

if TYPE_CHECKING:
    from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime
    from airflow_mlops.training.spec import TrainingSpec

LONG_RUN_ID = "scheduled__2025-06-01T12:30:00+00:00-with-a-rather-long-suffix-added-by-a-trigger/x"


@pytest.fixture(scope="module", autouse=True)
def connections(tmp_path_factory):
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://kubernetes.invalid"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c",
    }))  # fmt: skip
    set_connection(CONN_ID, conn_type="kubernetes", extra={"kube_config_path": str(kubeconfig)})
    set_connection(
        "mlflow_manifests", conn_type="mlflow", host="http://mlflow.mlops:5000", password="pw-1234"
    )


def training_spec(runtime: KubernetesRuntime | None = None, **overrides) -> TrainingSpec:
    """What the operator below hands its runtime once the MLflow run exists (built by the operator itself)."""
    built = operator(runtime or gpu_runtime()).training_spec(
        ids={"dag_id": "mlops_continuous_training", "run_id": LONG_RUN_ID, "task_id": "train", "map_index": -1,
             "try_number": 1},
        mlflow_run_id="0123456789abcdef0123456789abcdef",
        experiment_id="7",
        instance_uri="s3://bucket/runs/x",
        contract_env={
            contract.TRACKING_URI: "http://mlflow.mlops:5000",
            contract.EXPERIMENT_NAME: "demo churn classifier (v2)",
            contract.RUN_ID: "0123456789abcdef0123456789abcdef",
            contract.TRAIN_DATA: "s3://bucket/datasets/churn/abc#train",
            contract.OUTPUT_URI: "s3://bucket/runs/x/output",
            contract.CHECKPOINT_URI: "s3://bucket/runs/x/checkpoints",
            contract.PARAMS: "{}",
        },
    )  # fmt: skip
    return dataclasses.replace(built, **overrides)


def container(obj: dict) -> dict:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]
    return spec["containers"][0]


def env_of(obj: dict) -> dict:
    return {e["name"]: e for e in container(obj)["env"]}


def test_gpu_pod_is_valid_for_kubernetes_1_30_and_the_newest_version():
    from airflow_mlops.training.kubernetes.pod import render_pod

    runtime = gpu_runtime()
    pod = render_pod(runtime, training_spec(runtime), k8s_context("mlops_continuous_training"))

    assert schema_versions()[0] == "1.30.0"
    assert len(schema_versions()) == 2
    assert validate_object(pod) == []
    spec, base = pod["spec"], container(pod)
    assert base["image"] == "registry.example.com/ml/torch-trainer:2.13"
    # two GPUs: one torchrun process per GPU, settings through PET_* variables
    assert base["command"] == [
        "torchrun",
        "--module",
        "airflow_mlops.trainer.examples.torch_mlp",
        "--epochs",
        "3",
    ]
    assert {k: env_of(pod)[k]["value"] for k in ("PET_STANDALONE", "PET_NPROC_PER_NODE")} == {
        "PET_STANDALONE": "1", "PET_NPROC_PER_NODE": "2"}  # fmt: skip
    assert base["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "2"},
    }
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in spec["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in base["volumeMounts"]
    assert spec["priorityClassName"] == "training-high"
    assert spec["serviceAccountName"] == "trainer"
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["restartPolicy"] == "Never"
    assert pod["metadata"]["namespace"] == "ml-training"
    # KPO's XCom sidecar reads the result the trainer writes to the contract's result path
    assert [c["name"] for c in spec["containers"]] == ["base", "airflow-xcom-sidecar"]
    assert env_of(pod)[contract.RESULT_PATH]["value"] == "/airflow/xcom/return.json"


def test_cost_labels_are_valid_label_values_and_annotations_keep_the_full_ids():
    from airflow_mlops.training.kubernetes.pod import render_pod

    runtime = gpu_runtime()
    pod = render_pod(runtime, training_spec(runtime), k8s_context("mlops_continuous_training"))
    from airflow_mlops.training.kubernetes.manifests import object_labels

    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]

    assert labels["airflow-mlops/dag-id"] == "mlops_continuous_training"
    assert labels["airflow-mlops/task-id"] == "train"
    assert labels["airflow-mlops/run-id"].startswith("scheduled__2025-06-01T12_30_00_00_00-with-a-rather")
    assert len(labels["airflow-mlops/run-id"]) <= 63
    assert labels["airflow-mlops/model"].startswith("demo_churn_classifier__v2-")
    assert labels["team"] == "recsys"
    assert annotations["airflow-mlops/run-id"] == LONG_RUN_ID
    assert annotations["airflow-mlops/mlflow-run-id"] == "0123456789abcdef0123456789abcdef"
    # two different runs never share a label value, however they are truncated
    other = object_labels(runtime, training_spec(runtime, dag_run_id=LONG_RUN_ID + "y"))
    assert other["airflow-mlops/run-id"] != labels["airflow-mlops/run-id"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("train", "train"),
        ("manual__2025-01-01T00:00:00+00:00", "manual__2025-01-01T00_00_00_00_00-"),
        ("::", ""),
        ("x" * 80, "x" * 54 + "-"),
    ],
)
def test_label_values_are_sanitized(value, expected):
    from airflow_mlops.utils.k8s import label_value
    from tests.support.kubernetes import check_metadata

    safe = label_value(value)

    assert safe.startswith(expected)
    assert check_metadata({"labels": {"k": safe}}, "Pod") == []


def test_secrets_are_references_never_values():
    from airflow_mlops.training.kubernetes.pod import render_pod

    runtime = gpu_runtime()
    pod = render_pod(runtime, training_spec(runtime), k8s_context("d"))
    env = env_of(pod)

    assert "pw-1234" not in json.dumps(pod)  # the MLflow connection's password
    assert env["MLFLOW_TRACKING_PASSWORD"] == {
        "name": "MLFLOW_TRACKING_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "mlflow-auth", "key": "password"}},
    }
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": "id"}}
    assert container(pod)["envFrom"] == [{"secretRef": {"name": "wandb"}}]
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlops:5000"
    assert env["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"]["value"] == "true"


def test_multi_node_job_and_service_are_valid_and_wire_the_rendezvous():
    from airflow_mlops.training.kubernetes.job import render_job

    runtime = gpu_runtime(num_nodes=4)
    job, service = render_job(
        runtime, training_spec(runtime), k8s_context("d"), name="job-train-1a2b3c4d", namespace="ml-training"
    )

    assert validate_object(job) == []
    assert validate_object(service) == []
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["backoffLimit"] == 0
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod_spec = spec["template"]["spec"]
    assert pod_spec["subdomain"] == service["metadata"]["name"] == "job-train-1a2b3c4d"
    env = env_of(job)
    rank = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["PET_NODE_RANK"]["valueFrom"] == env["NODE_RANK"]["valueFrom"] == rank
    assert (
        env["MASTER_ADDR"]["value"]
        == env["PET_MASTER_ADDR"]["value"]
        == "job-train-1a2b3c4d-0.job-train-1a2b3c4d"
    )
    assert env["MASTER_PORT"]["value"] == env["PET_MASTER_PORT"]["value"] == "29500"
    assert (env["PET_NNODES"]["value"], env["PET_NPROC_PER_NODE"]["value"], env["WORLD_SIZE"]["value"]) == (
        "4", "2", "8")  # fmt: skip
    assert "PET_STANDALONE" not in env
    # rank 0's result comes back as its termination message (no exec, no sidecar)
    assert container(job)["terminationMessagePath"] == "/airflow/xcom/return.json"
    assert [c["name"] for c in pod_spec["containers"]] == ["base"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "job-train-1a2b3c4d"}
    assert service["metadata"]["ownerReferences"][0]["kind"] == "Job"


def trainjob_runtime(**overrides) -> KubernetesRuntime:
    """The GPU runtime as a TrainJob: no envFrom and no pod priority class (neither can be patched in)."""
    return gpu_runtime(
        training_runtime="torch-distributed", num_nodes=4, env_from_secrets=[],
        scheduling=Scheduling(service_account="trainer",
                              tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]),
        **overrides,
    )  # fmt: skip


def test_trainjob_is_valid_for_the_kubeflow_trainer_crd_and_carries_the_same_training():
    from airflow_mlops.training.kubernetes.manifests import trainjob_manifest
    from tests.support.kubernetes import trainjob_validators

    runtime = trainjob_runtime()
    spec = training_spec(runtime)
    manifest = trainjob_manifest(runtime, spec, name="tj-train-1a2b3c4d", namespace="ml-training")

    spec_validator, _ = trainjob_validators()
    assert [e.message for e in spec_validator.iter_errors(manifest["spec"])] == []
    assert (manifest["apiVersion"], manifest["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    train = manifest["spec"]
    assert train["runtimeRef"]["name"] == "torch-distributed"
    trainer = train["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 2)
    assert trainer["command"] == [
        "torchrun",
        "--module",
        "airflow_mlops.trainer.examples.torch_mlp",
        "--epochs",
        "3",
    ]
    assert trainer["resourcesPerNode"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}
    assert train["activeDeadlineSeconds"] == 7200  # the operator's timeout, counted from the start
    env = {e["name"]: e for e in trainer["env"]}
    assert env[contract.RESULT_PATH]["value"] == "/dev/termination-log"  # rank 0's termination message
    assert env[contract.CHECKPOINT_URI]["value"] == "s3://bucket/runs/x/checkpoints"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlflow-auth", "key": "password"}
    }
    assert "pw-1234" not in json.dumps(manifest)
    assert not any(name.startswith(("PET_", "MASTER_")) for name in env)  # the runtime sets the rendezvous
    (patch,) = train["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]
    assert node["name"] == "node"
    assert pod["metadata"]["labels"]["airflow-mlops/dag-id"] == "mlops_continuous_training"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["spec"]["containers"] == [
        {"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                                          {"name": "datasets", "mountPath": "/data", "readOnly": True}]}
    ]  # fmt: skip
    assert "suspend" not in train
    assert not any(key.startswith("kueue.x-k8s.io/") for key in manifest["metadata"]["labels"])


def test_kueue_labels_and_suspension_are_set_on_the_unit_kueue_admits():
    from airflow_mlops.training.kubernetes.job import render_job
    from airflow_mlops.training.kubernetes.manifests import pod_manifest, trainjob_manifest
    from tests.support.kubernetes import trainjob_validators

    queue = {"queue_name": "team-a", "queue_priority_class": "batch-high"}
    labels = {"kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": "batch-high"}
    runtime = trainjob_runtime(**queue)
    trainjob = trainjob_manifest(runtime, training_spec(runtime), name="tj-train-1", namespace="ml-training")
    assert [e.message for e in trainjob_validators()[0].iter_errors(trainjob["spec"])] == []
    assert trainjob["spec"]["suspend"] is True
    assert labels.items() <= trainjob["metadata"]["labels"].items()

    runtime = gpu_runtime(num_nodes=2, **queue)
    job, _ = render_job(runtime, training_spec(runtime), k8s_context("d"), name="job-train-1", namespace="ml")
    assert validate_object(job) == []
    assert job["spec"]["suspend"] is True
    assert labels.items() <= job["metadata"]["labels"].items()
    assert not labels.keys() & job["spec"]["template"]["metadata"]["labels"].keys()  # the Job is the workload

    runtime = gpu_runtime(**queue)
    pod = pod_manifest(runtime, training_spec(runtime))
    assert labels.items() <= pod["metadata"]["labels"].items()
