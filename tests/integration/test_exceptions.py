"""
Every failure kind, raised in a real task with ``retries=1``: Airflow retries exactly the retryable ones.

The table in docs/operations.md ("Failure kinds") is this test's table. Rows marked ``operator`` raise through
the package's own operator on a real input (a missing file, a templated version that renders invalid, an MLflow
server that is down, a model version that does not exist); the others raise the type the way its module does.
Whether Airflow retried is read from the task instance (a second try ran), not from a flag on the class.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_mlops import exceptions as E
from tests.conftest import free_port, set_connection
from tests.support.dags import serialize_dag

pytestmark = pytest.mark.integration

# kind -> (raised by, retried by Airflow?)
DIRECT = {
    "DataValidationError": ("ValidateDatasetOperator: the suite failed", False),
    "DataDriftError": ("DriftCheckOperator: drift above its thresholds", False),
    "TrainingError": ("TrainModelOperator: the trainer exited non-zero", True),
    "TrainingTimeoutError": ("TrainModelOperator: training ran past its timeout", True),
    "TrainingPreemptedError": ("Kubernetes runtime: pod preempted or evicted", True),
    "TrainingResourceError": ("Kubernetes runtime: container OOMKilled", False),
    "TrainingImageError": ("Kubernetes runtime: ImagePullBackOff / CreateContainerConfigError", False),
    "InvalidManifestError": ("Kubernetes runtime: the API server rejected the manifest (422)", False),
    "TrainingResultError": ("TrainModelOperator: the trainer's result JSON is malformed", False),
    "RegistryError": ("registry: the MLflow registry failed", True),
    "ModelEvaluationError": ("EvaluateModelOperator: holdout unreadable, gated metric missing", False),
    "ModelGateFailedError": ("EvaluateModelOperator: the candidate failed the gate", False),
    "ApprovalRejectedError": ("ApproveModelOperator: rejected or timed out", False),
    "ApprovalRequiredError": ("Promote/Deploy/Rollback: the version has no passed gate or recorded approval", False),
    "InfraValidationError": ("InfraValidateOperator: the candidate cannot serve", False),
    "DeploymentError": ("DeployModelOperator: the target failed to switch", True),
    "ReleaseInProgressError": ("DeployModelOperator: another task is releasing the same model", True),
    "DeploymentVerificationError": ("DeployModelOperator: verification failed, rolled back", False),
}


RAISED: dict[str, list[str]] = {}


def _record(context) -> None:
    """Failure and retry callback: which exception type each try of each task raised."""
    RAISED.setdefault(context["ti"].task_id, []).append(type(context["exception"]).__name__)


def _raise(kind: str) -> None:
    raise getattr(E, kind)(f"{kind} raised for the failure-kind table", model="m", version="1")


def test_each_failure_kind_is_retried_exactly_when_a_retry_can_help(airflow_db, tmp_path):
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    from airflow_mlops.operators.ingest import IngestDatasetOperator
    from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator

    set_connection("mlflow_down", conn_type="mlflow", host=f"http://127.0.0.1:{free_port()}")
    set_connection("mlflow_local", conn_type="mlflow", host=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "data.csv").write_text("x,label\n1,0\n2,1\n")

    # task id -> (kind it must raise, retried?)
    expected: dict[str, tuple[str, bool]] = {}
    with DAG(
        "mlops_failure_kinds",
        schedule=None,
        default_args={
            "retries": 1, "retry_delay": timedelta(0),
            "on_failure_callback": _record, "on_retry_callback": _record,
        },  # fmt: skip
        params={"version": "latest"},
    ) as dag:
        for kind, (_, retried) in DIRECT.items():
            PythonOperator(task_id=f"raise_{kind}", python_callable=_raise, op_args=[kind])
            expected[f"raise_{kind}"] = (kind, retried)

        IngestDatasetOperator(
            task_id="ingest_missing_file", dataset_name="kinds", source=str(tmp_path / "missing.csv"),
            data_root=str(tmp_path / "root"),
        )  # fmt: skip
        expected["ingest_missing_file"] = ("DatasetError", False)
        PromoteModelOperator(
            task_id="promote_templated_bad_version", model_name="kinds", version="{{ params.version }}",
            mlflow_conn_id="mlflow_local",
        )  # fmt: skip
        expected["promote_templated_bad_version"] = ("ConfigurationError", False)
        RegisterModelOperator(
            task_id="register_mlflow_down", model_name="kinds", model_uri="runs:/0123456789abcdef/model",
            mlflow_conn_id="mlflow_down",
        )  # fmt: skip
        expected["register_mlflow_down"] = ("ServiceUnavailableError", True)
        PromoteModelOperator(
            task_id="promote_missing_version", model_name="kinds_missing", version=7,
            mlflow_conn_id="mlflow_local",
        )  # fmt: skip
        expected["promote_missing_version"] = ("ModelVersionNotFoundError", False)

    serialize_dag(dag)
    RAISED.clear()
    dag_run = dag.test()

    outcomes = {
        ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()
    }
    table = {task: (state, tries > 1) for task, (state, tries) in outcomes.items()}
    assert table == {task: ("failed", retried) for task, (_, retried) in expected.items()}

    # Each try raised the kind named in the table.
    assert RAISED == {
        task: [kind] * (2 if retried else 1) for task, (kind, retried) in expected.items()
    }
    # The class says the same as Airflow did, and each kind is its own type.
    for kind, retried in {kind: r for kind, r in expected.values()}.items():
        assert getattr(E, kind).retryable is retried, kind
    assert len({kind for kind, _ in expected.values()}) == len(expected)


def test_operator_failures_carry_what_they_are_about(tmp_path):
    from airflow_mlops.operators.registry import PromoteModelOperator

    set_connection("mlflow_local", conn_type="mlflow", host=f"sqlite:///{tmp_path / 'mlflow.db'}")
    op = PromoteModelOperator(
        task_id="promote", model_name="kinds_missing", version=7, mlflow_conn_id="mlflow_local"
    )
    with pytest.raises(E.ModelVersionNotFoundError) as err:
        op.execute({})
    assert (err.value.model, err.value.version) == ("kinds_missing", "7")
    assert "'kinds_missing' has no version 7" in str(err.value)
