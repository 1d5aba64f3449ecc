"""
A GPU training runtime and the operator around it, for the tests of the Kubernetes objects they build (no
cluster: the connection points at an address that never answers).
"""

from __future__ import annotations

from airflow_mlops.training.kubernetes.config import Gpus, Resources, Scheduling
from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime
from airflow_mlops.utils.k8s import KubernetesConnection

#: The Kubernetes connection of the runtime (set by tests/unit/training/kubernetes/test_manifests.py).
CONN_ID = "kubernetes_manifest_tests"


def gpu_runtime(**overrides) -> KubernetesRuntime:
    values = dict(
        image="registry.example.com/ml/torch-trainer:2.13",
        gpus=Gpus(count=2, product="NVIDIA-H100-80GB-HBM3"),
        resources=Resources(cpu="8", memory="64Gi", shm_size="16Gi"),
        scheduling=Scheduling(
            priority_class="training-high", service_account="trainer",
            tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        connection=KubernetesConnection(conn_id=CONN_ID, namespace="ml-training"),
        image_pull_secrets=["registry-creds"],
        labels={"team": "recsys"},
        secret_env={"MLFLOW_TRACKING_PASSWORD": "mlflow-auth/password", "AWS_ACCESS_KEY_ID": ("s3-creds", "id")},
        env_from_secrets=["wandb"],
        volumes=[{"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets"}}],
        volume_mounts=[{"name": "datasets", "mountPath": "/data", "readOnly": True}],
    )  # fmt: skip
    return KubernetesRuntime(**{**values, **overrides})


def operator(runtime: KubernetesRuntime, **kwargs):
    from airflow_mlops.operators.training import TrainModelOperator

    return TrainModelOperator(
        task_id="train", entrypoint="-m airflow_mlops.trainer.examples.torch_mlp --epochs 3",
        train_data="s3://bucket/datasets/churn/abc#train", experiment_name="demo churn classifier (v2)",
        runtime=runtime, mlflow_conn_id="mlflow_manifests", timeout=7200, **kwargs,
    )  # fmt: skip
