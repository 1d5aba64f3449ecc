"""
What the Kubernetes training runtime would create, checked against the official schemas, and how it reads
a failed pod. No cluster: objects are rendered exactly as the cncf-kubernetes operators would send them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_mlops.runtimes import KubernetesRuntime, TrainingLaunch
from airflow_mlops.trainer import contract
from tests.conftest import set_connection
from tests.k8s_training_support import k8s_context
from tests.kube_api_stub import strict
from tests.kube_pod_stub import schema_versions, validate_object

CRDS = Path(__file__).resolve().parents[1] / "data" / "k8s-crds"
CONN_ID = "kubernetes_manifest_tests"
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


def launch(**overrides) -> TrainingLaunch:
    values = {
        "dag_id": "mlops_continuous_training",
        "dag_run_id": LONG_RUN_ID,
        "task_id": "train",
        "map_index": -1,
        "try_number": 1,
        "mlflow_run_id": "0123456789abcdef0123456789abcdef",
        "experiment_id": "7",
        "experiment_name": "demo churn classifier (v2)",
        "instance_uri": "s3://bucket/runs/x",
        "contract_env": {
            contract.TRACKING_URI: "http://mlflow.mlops:5000",
            contract.EXPERIMENT_NAME: "demo churn classifier (v2)",
            contract.RUN_ID: "0123456789abcdef0123456789abcdef",
            contract.TRAIN_DATA: "s3://bucket/datasets/churn/abc#train",
            contract.OUTPUT_URI: "s3://bucket/runs/x/output",
            contract.CHECKPOINT_URI: "s3://bucket/runs/x/checkpoints",
            contract.PARAMS: "{}",
        },
    }
    return TrainingLaunch(**{**values, **overrides})


def gpu_runtime(**overrides) -> KubernetesRuntime:
    values = dict(
        image="registry.example.com/ml/torch-trainer:2.13",
        gpus=2,
        gpu_product="NVIDIA-H100-80GB-HBM3",
        cpu="8",
        memory="64Gi",
        shm_size="16Gi",
        priority_class="training-high",
        service_account="trainer",
        image_pull_secrets=["registry-creds"],
        namespace="ml-training",
        labels={"team": "recsys"},
        secret_env={"MLFLOW_TRACKING_PASSWORD": "mlflow-auth/password", "AWS_ACCESS_KEY_ID": ("s3-creds", "id")},
        env_from_secrets=["wandb"],
        tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        volumes=[{"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets"}}],
        volume_mounts=[{"name": "datasets", "mountPath": "/data", "readOnly": True}],
        kubernetes_conn_id=CONN_ID,
    )  # fmt: skip
    return KubernetesRuntime(**{**values, **overrides})


def operator(runtime: KubernetesRuntime, **kwargs):
    from airflow_mlops.operators.training import TrainModelOperator

    return TrainModelOperator(
        task_id="train", entrypoint="-m airflow_mlops.trainer.examples.torch_mlp --epochs 3",
        train_data="s3://bucket/datasets/churn/abc#train", experiment_name="demo churn classifier (v2)",
        runtime=runtime, mlflow_conn_id="mlflow_manifests", timeout=7200, **kwargs,
    )  # fmt: skip


def container(obj: dict) -> dict:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]
    return spec["containers"][0]


def env_of(obj: dict) -> dict:
    return {e["name"]: e for e in container(obj)["env"]}


def test_gpu_pod_is_valid_for_kubernetes_1_30_and_the_newest_version():
    from airflow_mlops.operators import _kubernetes

    runtime = gpu_runtime()
    pod = _kubernetes.render_pod(
        runtime, operator(runtime), launch(), k8s_context("mlops_continuous_training")
    )

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
    from airflow_mlops.operators import _kubernetes

    runtime = gpu_runtime()
    pod = _kubernetes.render_pod(
        runtime, operator(runtime), launch(), k8s_context("mlops_continuous_training")
    )
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
    other = _kubernetes.object_labels(runtime, launch(dag_run_id=LONG_RUN_ID + "y"))
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
    from airflow_mlops.operators._kubernetes import label_value
    from tests.kube_pod_stub import check_metadata

    safe = label_value(value)

    assert safe.startswith(expected)
    assert check_metadata({"labels": {"k": safe}}, "Pod") == []


def test_secrets_are_references_never_values():
    from airflow_mlops.operators import _kubernetes

    runtime = gpu_runtime()
    pod = _kubernetes.render_pod(runtime, operator(runtime), launch(), k8s_context("d"))
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
    from airflow_mlops.operators import _kubernetes

    runtime = gpu_runtime(num_nodes=4)
    job, service = _kubernetes.render_job(
        runtime,
        operator(runtime),
        launch(),
        k8s_context("d"),
        name="job-train-1a2b3c4d",
        namespace="ml-training",
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


def test_kubeflow_trainjob_manifest_validates_against_the_crd():
    import jsonschema
    import yaml

    from airflow_mlops.operators import _kubernetes
    from tests.kube_pod_stub import check_metadata

    crd = yaml.safe_load((CRDS / "kubeflow-trainer.trainer.kubeflow.org_trainjobs.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = strict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    runtime = gpu_runtime(num_nodes=2)

    trainjob = _kubernetes.trainjob_manifest(
        runtime, operator(runtime), launch(), name="train-churn", namespace="ml-training"
    )

    errors = [
        f"{list(e.path)}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(trainjob["spec"])
    ]
    assert errors == []
    assert check_metadata(trainjob["metadata"], "TrainJob") == []
    assert trainjob["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
    trainer = trainjob["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 2)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    assert not any(e["name"].startswith("PET_") for e in trainer["env"])  # the torch runtime sets them


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": -1}, "gpus must be an integer >= 0"),
        ({"memory": "16 GB"}, "memory must be a Kubernetes quantity"),
        ({"namespace": "ML_Training"}, "namespace must be a lower-case DNS label"),
        ({"secret_env": {"MLOPS_PARAMS": "s/k"}}, "secret_env may not set MLOPS_PARAMS"),
        ({"secret_env": {"TOKEN": "just-a-value"}}, "must name a Kubernetes Secret and key"),
        ({"gpu_product": "H100", "gpus": 0}, "gpu_product needs gpus > 0"),
        ({"labels": {"team": "rec sys"}}, "is not a valid label value"),
        ({"image": ""}, "image must be a container image reference"),
        ({"num_nodes": 0}, "num_nodes must be >= 1"),
    ],
)
def test_invalid_settings_are_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KubernetesRuntime(**{"image": "trainer:1", **kwargs})


def test_templated_settings_are_checked_after_rendering():
    runtime = KubernetesRuntime(image="{{ params.image }}", namespace="{{ params.namespace }}")
    runtime.image, runtime.namespace = "trainer:1", "Not A Namespace"

    with pytest.raises(ValueError, match="namespace must be a lower-case DNS label"):
        runtime.validate(rendered=True)


def test_runtime_repr_is_stable_for_dag_serialization():
    runtime = KubernetesRuntime(image="trainer:1", gpus=1, labels={"team": "a"})

    assert repr(runtime) == "KubernetesRuntime(gpus=1, image='trainer:1', labels={'team': 'a'})"
    assert repr(runtime) == repr(KubernetesRuntime(image="trainer:1", gpus=1, labels={"team": "a"}))


def test_the_string_kubernetes_points_to_the_runtime_object():
    from airflow_mlops.operators.training import TrainModelOperator

    with pytest.raises(ValueError, match=r"runtime=KubernetesRuntime\(image="):
        TrainModelOperator(task_id="t", entrypoint="pkg.train", train_data="x", experiment_name="e",
                           runtime="kubernetes")  # fmt: skip


# -- reading a failed pod -------------------------------------------------------------------------------


def failed_pod(**status) -> dict:
    return {
        "metadata": {"name": "train-x", "namespace": "ml"},
        "spec": {"containers": [{"name": "base", "resources": {"limits": {"memory": "8Gi"}}}],
                 "activeDeadlineSeconds": 3600},
        "status": status,
    }  # fmt: skip


def base_status(state: dict) -> list[dict]:
    return [{"name": "base", "image": "trainer:1", "state": state}]


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "fragment"),
    [
        ({"phase": "Running", "containerStatuses": base_status(
            {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})},
         "oom", False, "was OOMKilled: the trainer used more memory than its limit (8Gi"),
        ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: ephemeral-storage."},
         "evicted", True, "was evicted: The node was low on resource: ephemeral-storage.; it is started again"),
        ({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                             "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]},
         "preempted", True, "evicted through the Eviction API (a node drain or an autoscaler scale-down)"),
        ({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                                             "reason": "DeletionByTaintManager"}]},
         "preempted", True, "its node became unreachable"),
        ({"phase": "Pending", "containerStatuses": base_status({"waiting": {
            "reason": "CreateContainerConfigError", "message": 'secret "mlflow-auth" not found'}})},
         "config", False, "Check that every Secret and key named in secret_env / env_from_secrets exists in ml"),
        ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
          "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]},
         "unschedulable", False, "check gpu_product / node_selector against 'kubectl get nodes -L"),
        ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
          "message": "0/2 nodes are available: 2 node(s) had untolerated taint {gpu: true}."}]},
         "unschedulable", False, "add tolerations="),
        ({"phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than"},
         "deadline", False, "ran longer than the task's timeout (3600 s)"),
        ({"phase": "Failed", "containerStatuses": base_status({"terminated": {"exitCode": 143, "reason": "Error"}})},
         "stopped", True, "stopped on SIGTERM (exit code 143)"),
    ],
)  # fmt: skip
def test_failed_pods_are_explained_in_one_line(status, kind, retryable, fragment):
    from airflow_mlops.operators._kubernetes import explain_pod_failure

    failure = explain_pod_failure(failed_pod(**status), gpu_runtime(), pod_name="train-x")

    assert (failure.kind, failure.retryable) == (kind, retryable)
    assert fragment in failure.line
    assert failure.line.startswith("Training pod train-x")
    assert "\n" not in failure.line


def test_a_vanished_pod_counts_as_preempted():
    from airflow_mlops.operators._kubernetes import explain_pod_failure

    failure = explain_pod_failure(None, gpu_runtime(), pod_name="train-x")

    assert failure.retryable
    assert "disappeared before it finished" in failure.line


def test_runtime_settings_are_rendered_with_the_operator_templates():
    runtime = KubernetesRuntime(image="{{ params.image }}", labels={"team": "{{ params.team }}"})
    op = operator(runtime)

    op.render_template_fields({"params": {"image": "registry.example.com/trainer:2.0", "team": "ml"}})

    assert op.runtime.image == "registry.example.com/trainer:2.0"
    assert op.runtime.labels == {"team": "ml"}
    assert runtime.image == "{{ params.image }}"  # the operator renders its own copy
