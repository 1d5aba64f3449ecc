"""
EvaluateModelOperator(spark_conn_id=...) on a real local Spark and a real MLflow server: the models score the
holdout where Spark runs (``mlflow.pyfunc.spark_udf``) and the gate, the metrics and the slices are those of
the in-worker evaluation of the same rows.
"""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ModelEvaluationError
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from tests.support.snapshots import write_frames_snapshot

pytestmark = pytest.mark.integration

GATE = {"accuracy_score": {"threshold": 0.6, "min_absolute_change": 0.02}, "f1_score": {"threshold": 0.5}}
SLICES = {"column": "region", "metrics": {"accuracy_score": {"max_regression": 0.05}}, "min_rows": 30}


@pytest.fixture(scope="module")
def client(mlflow_server):
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    return MlflowClient(mlflow_server.uri)


@pytest.fixture(scope="module")
def holdout(tmp_path_factory) -> dict:
    x, y = make_classification(n_samples=700, n_features=5, n_informative=3, random_state=11)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(label=y)
    # A column the models never saw (a slice) and one that is not in their signature.
    frame["region"] = np.where(np.arange(len(frame)) % 2 == 0, "north", "south")
    frame["note"] = "not a feature"
    root = tmp_path_factory.mktemp("data")
    uri = write_frames_snapshot(root, "churn_spark", frame.iloc[:400], frame.iloc[400:])
    return {"uri": uri, "holdout": f"{uri}#holdout", "train": frame.iloc[:400], "file": f"{uri}/holdout.parquet"}


@pytest.fixture(scope="module")
def registry(client, holdout) -> dict[str, str]:
    """A weak champion and a strong candidate, each logged with the signature of the five features."""
    train = holdout["train"]
    x, y = train[[f"f{i}" for i in range(5)]], train["label"]
    name = f"spark-eval-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    versions = {}
    for key, estimator in (("weak", DummyClassifier(strategy="most_frequent")), ("strong", LogisticRegression())):
        estimator.fit(x, y)
        with mlflow.start_run(experiment_id=experiment_id, run_name=key):
            info = mlflow.sklearn.log_model(
                estimator, name="model", signature=infer_signature(x, estimator.predict(x)),
                pip_requirements=["scikit-learn"],
            )  # fmt: skip
        versions[key] = mlflow.register_model(info.model_uri, name).version
    client.set_registered_model_alias(name, T.CHAMPION, versions["weak"])
    return {"name": name, **versions}


def evaluate(registry, **kwargs) -> EvaluateModelOperator:
    return EvaluateModelOperator(
        task_id=f"evaluate_{uuid.uuid4().hex[:6]}", model_name=registry["name"],
        candidate_version=registry["strong"], thresholds=GATE, slices=SLICES, **kwargs,
    )  # fmt: skip


def test_spark_scores_the_same_snapshot_to_the_in_worker_metrics_gate_and_slices(
    spark_default, registry, holdout
):
    in_worker = evaluate(registry, holdout_data=holdout["holdout"]).execute({})
    # The ingest task's whole result, as a DAG wires it (holdout_data=ingest.output): its holdout split.
    ingested = {"uri": holdout["uri"], "splits": {"holdout": holdout["holdout"]}}
    on_spark = evaluate(registry, holdout_data=ingested, spark_conn_id="spark_default").execute({})

    assert on_spark["passed"] is in_worker["passed"] is True
    assert on_spark["champion_version"] == in_worker["champion_version"] == int(registry["weak"])
    for metric in ("accuracy_score", "f1_score", "precision_score", "recall_score"):
        for side in ("candidate", "champion"):
            assert on_spark["metrics"][metric][side] == pytest.approx(in_worker["metrics"][metric][side], abs=1e-12)
    assert on_spark["metrics"]["accuracy_score"]["candidate"] > 0.6
    assert on_spark["slices"] == in_worker["slices"]
    assert {row["segment"] for row in on_spark["slices"]} == {"north", "south"}
    assert "300" in on_spark["report"]  # the holdout's rows, all scored
    # Metrics from probabilities need the model in the worker: the Spark path leaves them out.
    assert "roc_auc" in in_worker["metrics"]
    assert "roc_auc" not in on_spark["metrics"]


def test_a_spark_table_is_scored_and_one_without_the_target_is_refused(spark_default, registry, holdout):
    table = f"parquet.`{holdout['file']}`"
    from_table = evaluate(registry, holdout_table=table, spark_conn_id="spark_default").execute({})
    in_worker = evaluate(registry, holdout_data=holdout["holdout"]).execute({})

    assert from_table["metrics"]["accuracy_score"]["candidate"] == pytest.approx(
        in_worker["metrics"]["accuracy_score"]["candidate"], abs=1e-12
    )
    assert from_table["passed"] is True

    query = f"SELECT f0, f1, f2, f3, f4, region FROM {table}"  # no label
    with pytest.raises(ModelEvaluationError, match="has no target column 'label'"):
        evaluate(registry, holdout_query=query, spark_conn_id="spark_default").execute({})

    lacking = f"SELECT f0, f1, label, region FROM {table}"
    with pytest.raises(ModelEvaluationError, match=r"lacks column\(s\) \['f2', 'f3', 'f4'\]"):
        evaluate(registry, holdout_query=lacking, spark_conn_id="spark_default").execute({})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holdout_table": "db.holdout"}, "holdout_table is read by Spark: give spark_conn_id"),
        ({"holdout_data": "/d#holdout", "holdout_table": "t", "spark_conn_id": "s"}, "one of holdout_data"),
        ({}, "got none"),
    ],
)
def test_the_holdout_arguments_are_checked_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvaluateModelOperator(task_id="e", model_name="m", candidate_version="1", thresholds=GATE, **kwargs)
