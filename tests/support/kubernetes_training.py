"""
The Kubernetes training runtime against the API-server stand-in: its connection, fast polling, what a trainer
pod writes as its result, and a TrainModelOperator factory on that runtime.
"""

from __future__ import annotations

from airflow_mlops.operators.training import KubernetesConnection, KubernetesRuntime, TrainModelOperator
from airflow_mlops.trainer import contract

#: The connection of the ``kube`` fixture (tests/integration/training/kubernetes/conftest.py).
CONN_ID = "kubernetes_training_stub"
FAST = {"poll_interval": 0.1, "connection": KubernetesConnection(conn_id=CONN_ID), "deferrable": True}


def trainer_result(env: dict[str, str]) -> dict:
    """What a trainer writes to MLOPS_RESULT_PATH, from the environment it was given."""
    return {
        "run_id": env[contract.RUN_ID],
        "model_uri": f"runs:/{env[contract.RUN_ID]}/model",
        "metrics": {"accuracy": 0.91},
        "checkpoint_uri": env[contract.CHECKPOINT_URI],
    }


def operator_factory(snapshot: str, experiment: str, tmp_path, **runtime_kwargs):
    """A maker of TrainModelOperators training the demo classifier on *snapshot* in the stand-in's pods."""

    runtime = KubernetesRuntime(image="registry.example.com/trainer:1.0", **{**FAST, **runtime_kwargs})

    def make():
        return TrainModelOperator(
            task_id="train",
            entrypoint="airflow_mlops.trainer.examples.sklearn_classifier",
            train_data=f"{snapshot}#train",
            experiment_name=experiment,
            output_root=str(tmp_path / "runs"),
            runtime=runtime,
        )

    return make
