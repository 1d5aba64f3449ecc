"""
Operators take other tasks' whole results (``ingest.output``, ``train.output``, ``register.output``) where they
take a snapshot URI, a model URI or a version; what each returns is a type of :mod:`airflow_mlops.results`.
A whole result that lacks what an argument needs fails the task at once (ConfigurationError, not retried),
naming the argument and what it takes. No server.
"""

from __future__ import annotations

import inspect
from datetime import datetime

import pytest
from airflow.sdk import DAG

from airflow_mlops import results
from airflow_mlops.data.snapshots import ingest_result
from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.deployment import (
    DeployModelOperator,
    InfraValidateOperator,
    RollbackModelOperator,
)
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_mlops.operators.training import TrainModelOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.upstream import Upstream, assert_refused_at_execute

URI = "s3://lake/datasets/churn/41c0ee82"
SNAPSHOT = {
    "name": "churn", "snapshot_id": "41c0ee82", "uri": URI, "sha256": "ab12", "rows": 10,
    "schema": {"x": "int64", "label": "int64"},
    "splits": {"train": f"{URI}#train", "valid": f"{URI}#valid", "holdout": f"{URI}#holdout"},
}  # fmt: skip
UNSPLIT = {**SNAPSHOT, "splits": {}}
REGISTERED = {
    "model_name": "churn", "version": 3, "model_uri": "models:/churn/3", "source_uri": "models:/m-1",
    "run_id": "0f1e", "champion_version": 2,
}  # fmt: skip
TRAINED = {"run_id": "0f1e2d", "model_uri": "models:/m-0f1e", "metrics": {"accuracy": 0.9}}


def test_a_snapshot_stands_for_its_uri_or_the_split_an_argument_is_about():
    assert results.snapshot_uri(SNAPSHOT, "dataset_uri") == URI
    assert results.snapshot_uri(SNAPSHOT, "train_data", "train") == f"{URI}#train"
    assert results.snapshot_uri(UNSPLIT, "sample_data", "holdout", whole=True) == URI
    assert results.snapshot_uri(f"{URI}#valid", "valid_data", "valid") == f"{URI}#valid"  # a URI as it is
    with pytest.raises(
        ConfigurationError, match=r"train_data: snapshot s3://\S+ has no 'train' split"
    ) as err:
        results.snapshot_uri(UNSPLIT, "train_data", "train")
    assert err.value.retryable is False
    with pytest.raises(
        ConfigurationError, match=r"dataset_uri got a dict without 'uri' \(its keys: \['rows'\]\)"
    ):
        results.snapshot_uri({"rows": 3}, "dataset_uri")


def test_any_result_naming_a_version_stands_for_it_unless_it_is_about_another_model():
    assert results.model_version(REGISTERED, "version", "churn") == 3
    assert results.model_version({"model_name": "churn", "candidate_version": 4}, "version", " churn ") == 4
    assert results.model_version("5", "version", "churn") == "5"
    with pytest.raises(ConfigurationError, match="names version 3 of model 'churn', but the task is about"):
        results.model_version(REGISTERED, "version", "fraud")
    with pytest.raises(ConfigurationError, match="it takes a model version or a result naming one"):
        results.model_version({"model_name": "churn"}, "candidate_version")


def test_the_snapshot_type_has_exactly_the_keys_an_ingest_returns():
    manifest = {**SNAPSHOT, "files": {"data": "data.parquet", "train": "train.parquet"}}
    assert set(ingest_result(manifest)) == set(results.Snapshot.__annotations__)


@pytest.mark.parametrize(
    ("method", "annotation"),
    [
        (IngestDatasetOperator.execute, "Snapshot"),
        (ValidateDatasetOperator.execute, "ValidationSummary"),
        (TrainModelOperator.execute, "TrainingResult"),
        (TrainModelOperator.execute_complete, "TrainingResult"),
        (RegisterModelOperator.execute, "RegisteredVersion"),
        (PromoteModelOperator.execute, "Promotion"),
        (EvaluateModelOperator.execute, "EvaluationResult"),
        (InfraValidateOperator.execute, "InfraValidationSummary"),
        (DeployModelOperator.execute, "DeploymentResult"),
        (DeployModelOperator.execute_complete, "DeploymentResult"),
    ],
    ids=lambda value: getattr(value, "__qualname__", value),
)
def test_operators_say_what_they_return_with_the_result_types(method, annotation):
    assert inspect.signature(method).return_annotation == annotation
    assert annotation in results.__all__


def test_whole_results_parse_serialise_and_wire_the_dependency():
    from airflow.serialization import serialized_objects

    check = [{"type": "expect_column_to_exist", "kwargs": {"column": "x"}}]
    with DAG("whole", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        ingest, train, register = (Upstream(task_id=name) for name in ("ingest", "train", "register"))
        tasks = [
            ValidateDatasetOperator(task_id="validate", dataset_uri=ingest.output, expectations=check),
            TrainModelOperator(task_id="fit", entrypoint="pkg.train", experiment_name="e",
                               train_data=ingest.output, valid_data=ingest.output),
            RegisterModelOperator(task_id="reg", model_name="churn", model_uri=train.output),
            EvaluateModelOperator(task_id="evaluate", model_name="churn", candidate_version=register.output,
                                  holdout_data=ingest.output, thresholds={"accuracy_score": {"threshold": 0.7}}),
            InfraValidateOperator(task_id="infra", model_name="churn", version=register.output,
                                  sample_data=ingest.output),
            DeployModelOperator(task_id="deploy", model_name="churn", version=register.output,
                                sample_data=ingest.output),
            PromoteModelOperator(task_id="promote", model_name="churn", version=register.output),
            ApproveModelOperator(task_id="approve", model_name="churn", candidate_version=register.output),
            DriftCheckOperator(task_id="drift", dataset_uri=ingest.output, model_name="churn"),
        ]  # fmt: skip
    upstream = {task.task_id: task.upstream_task_ids for task in tasks}
    assert upstream == {
        "validate": {"ingest"}, "fit": {"ingest"}, "reg": {"train"}, "evaluate": {"register", "ingest"},
        "infra": {"register", "ingest"}, "deploy": {"register", "ingest"}, "promote": {"register"},
        "approve": {"register"}, "drift": {"ingest"},
    }  # fmt: skip
    stored = serialized_objects.LazyDeserializedDAG.from_dag(dag).data  # as the DAG processor stores it
    assert stored["dag"]["dag_id"] == "whole"


def test_whole_results_given_as_literals_are_checked_at_parse_time():
    # Taken when they hold what the argument needs...
    RegisterModelOperator(task_id="r", model_name="churn", model_uri=TRAINED)
    EvaluateModelOperator(
        task_id="e", model_name="churn", candidate_version=REGISTERED, holdout_data=SNAPSHOT,
        thresholds={"accuracy_score": {"threshold": 0.7}},
    )  # fmt: skip
    # ...refused, naming the argument, when they do not.
    with pytest.raises(ValueError, match="model_uri got a dict without 'model_uri'"):
        RegisterModelOperator(task_id="r", model_name="churn", model_uri={"run_id": "0f1e"})
    with pytest.raises(ValueError, match="holdout_data: snapshot .* has no 'holdout' split"):
        EvaluateModelOperator(
            task_id="e", model_name="churn", candidate_version=3, holdout_data=UNSPLIT,
            thresholds={"accuracy_score": {"threshold": 0.7}},
        )  # fmt: skip
    with pytest.raises(ValueError, match="but the task is about model 'fraud'"):
        PromoteModelOperator(task_id="p", model_name="fraud", version=REGISTERED)
    with pytest.raises(ValueError, match="but the task is about model 'fraud'"):
        ApproveModelOperator(task_id="a", model_name="fraud", candidate_version=REGISTERED)
    # The approval asks about the version the registration names.
    assert ApproveModelOperator(
        task_id="a", model_name="churn", candidate_version=REGISTERED
    )._model_version() == (
        "churn",
        REGISTERED["version"],
    )


@pytest.mark.parametrize(
    ("make", "rendered", "message"),
    [
        pytest.param(
            lambda out: ValidateDatasetOperator(
                task_id="t", dataset_uri=out, expectations=[{"type": "expect_column_to_exist", "kwargs": {"column": "x"}}],
            ),
            {"dataset_uri": {"rows": 3}},
            r"dataset_uri got a dict without 'uri' \(its keys: \['rows'\]\): it takes a snapshot URI or an "
            "ingest result", id="validate",
        ),
        pytest.param(
            lambda out: TrainModelOperator(task_id="t", entrypoint="pkg.train", experiment_name="e", train_data=out),
            {"train_data": UNSPLIT}, "train_data: snapshot .* has no 'train' split", id="train: no train split",
        ),
        pytest.param(
            lambda out: RegisterModelOperator(task_id="t", model_name="churn", model_uri=out),
            {"model_uri": {"metrics": {}}},
            "model_uri got a dict without 'model_uri'.*: it takes a logged model's URI or a training result",
            id="register",
        ),
        pytest.param(
            lambda out: EvaluateModelOperator(
                task_id="t", model_name="churn", candidate_version=out, holdout_data=SNAPSHOT,
                thresholds={"accuracy_score": {"threshold": 0.7}},
            ),
            {"candidate_version": {"model_name": "churn"}},
            "candidate_version got a dict without 'version' or 'candidate_version'", id="evaluate",
        ),
        pytest.param(
            lambda out: DeployModelOperator(task_id="t", model_name="churn", version=out),
            {"version": {**REGISTERED, "model_name": "x"}},
            "version names version 3 of model 'x', but the task is about model 'churn'", id="deploy",
        ),
        pytest.param(
            lambda out: RollbackModelOperator(task_id="t", model_name="churn", reason="r", sample_data=out),
            {"sample_data": {"rows": 1}}, "sample_data got a dict without 'uri'", id="rollback",
        ),
        pytest.param(
            lambda out: DriftCheckOperator(task_id="t", dataset_uri=out, model_name="churn"),
            {"dataset_uri": {"rows": 3}}, "dataset_uri got a dict without 'uri'", id="drift",
        ),
        pytest.param(
            lambda out: InfraValidateOperator(task_id="t", model_name="churn", version=out, sample_data=SNAPSHOT),
            {"version": {"decision": "approved"}}, "version got a dict without 'version'", id="infra-validate",
        ),
    ],
)  # fmt: skip
def test_a_whole_result_without_what_the_argument_needs_fails_at_execute_without_retries(
    make, rendered, message
):
    assert_refused_at_execute(make, rendered, message)


@pytest.mark.parametrize(
    ("cls", "snapshot", "rows"),
    [(InfraValidateOperator, SNAPSHOT, f"{URI}#holdout"), (DeployModelOperator, UNSPLIT, URI)],
    ids=["infra-validate", "deploy"],
)
def test_serving_operators_take_the_version_and_the_holdout_rows_from_whole_results(cls, snapshot, rows):
    op = cls(task_id="t", model_name="churn", version=REGISTERED, sample_data=snapshot)
    op.mlflow_conn_id = "no_such_connection"

    with pytest.raises(ConfigurationError, match="no_such_connection"):
        op.execute({})  # stops at the registry, after reading the results
    # Smoke-test rows from the holdout split (the whole snapshot when it has no splits), version 3.
    assert (op.version, op.sample_data) == (3, rows)
