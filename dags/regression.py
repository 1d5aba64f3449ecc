"""
Regression: scikit-learn's diabetes data -> validate -> train (a trainer file of this folder) -> register ->
evaluate against the champion (RMSE, MAE and a business cost, lower is better) -> infra-validate -> approve ->
promote -> deploy.

The data ships with scikit-learn (``sklearn.datasets.load_diabetes``, ten numeric columns and ``target``, a
disease-progression score); the first task writes it as a CSV under the data root, so nothing is downloaded.
The trainer, ``regression_trainer.py`` next to this file, fits a gradient-boosting regressor on the columns
of the ``features`` param only; evaluation and serving send the model exactly those (its signature).

Settings read from the environment: ``MLOPS_APPROVERS`` (as in ``mlops_continuous_training``),
``MLOPS_REGRESSION_SERVING_PORT`` (when set, the port of the local endpoint of every model it serves; unset:
the ``serving_port`` param, or 5002 for the default model and a port derived from the name for any other, as
in ``mlops_continuous_training``), ``MLOPS_DATA_ROOT``.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path

from airflow.sdk import DAG, Param, chain, task

from airflow_mlops.data.expectations import table_suite
from airflow_mlops.evaluation.thresholds import CustomMetric
from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.deployment import DeployModelOperator, InfraValidateOperator
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_mlops.operators.training import TrainModelOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from airflow_mlops.serving.ports import serving_port

TRAINER = Path(__file__).with_name("regression_trainer.py")
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
APPROVERS = [{"id": user, "name": user} for user in os.environ.get("MLOPS_APPROVERS", "").split(",") if user]
MODEL_NAME = "demo_diabetes_regressor"
PINNED_PORT = os.environ.get("MLOPS_REGRESSION_SERVING_PORT")

# Unpinned, a JSON target (templates render as text): the port of the model being served.
SERVING_TARGET = (
    {"kind": "local", "port": int(PINNED_PORT)}
    if PINNED_PORT
    else '{"kind": "local", "port": {{ serving_port(params.model_name, params.serving_port) }} }'
)
PORT_PARAM = {} if PINNED_PORT else {
    "serving_port": Param(None, type=["null", "integer"], minimum=1, maximum=65535,
                          description="Port of the model's local endpoint; empty: 5002 for the default model, a "
                                      "port derived from the name (5100-5999) for any other."),
}  # fmt: skip


def under_forecast_cost(predictions, targets, metrics):
    """Mean cost of the errors when under-forecasting a patient's progression costs three times as much."""
    error = targets - predictions
    return float((3 * error.clip(lower=0) - error.clip(upper=0)).mean())


@task
def export_data() -> str:
    """Write scikit-learn's bundled diabetes table to ``<data root>/incoming/diabetes.csv``; return its path."""
    from sklearn.datasets import load_diabetes

    root = Path(os.environ.get("MLOPS_DATA_ROOT") or ".mlops-data").resolve()
    path = root / "incoming" / "diabetes.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame.to_csv(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)  # a retry rewrites the same file
    return str(path)


with DAG(
    dag_id="mlops_regression",
    description="Train, gate (RMSE, MAE, a business cost), approve and serve a regressor on the diabetes data.",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    # The serving_port param, else 5002 for the default model, else a port derived from the name.
    user_defined_macros={"serving_port": partial(serving_port, defaults={MODEL_NAME: 5002})},
    tags=["mlops", "example"],
    params={
        "model_name": Param(MODEL_NAME, type="string", minLength=1, maxLength=128,
                            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$(?!\n)",
                            description="Registered model name in MLflow (also the dataset name)."),
        "features": Param(["bmi", "bp", "s5", "s6"], type="array", items={"type": "string", "enum": COLUMNS},
                          minItems=1, description="The columns the model is trained on (and gets when serving)."),
        "max_rmse": Param(70.0, type="number", exclusiveMinimum=0,
                          description="The candidate's holdout RMSE must not exceed this."),
        "max_mae": Param(55.0, type="number", exclusiveMinimum=0,
                         description="The candidate's holdout mean absolute error must not exceed this."),
        "max_cost": Param(150.0, type="number", exclusiveMinimum=0,
                          description="The candidate's mean under-forecast cost must not exceed this."),
        "model_params": Param({"n_estimators": 100, "max_depth": 2}, type="object",
                              description="Hyper-parameters passed to the trainer as MLOPS_PARAMS."),
        **PORT_PARAM,
    },
) as dag:
    source = export_data()
    ingest = IngestDatasetOperator(
        task_id="ingest",
        dataset_name="{{ params.model_name }}",
        source=source,  # the path export_data returned
        split={"train": 0.7, "valid": 0.15, "holdout": 0.15},
        label_column="target",
    )
    validate = ValidateDatasetOperator(
        task_id="validate",
        dataset_uri=ingest.output,
        expectations=[
            *table_suite(COLUMNS, "target", min_rows=300),
            # The progression score is 25..346 in the data set: a mean far from ~150 means a broken extract.
            {"type": "expect_column_mean_to_be_between",
             "kwargs": {"column": "target", "min_value": 100, "max_value": 200}},
        ],  # fmt: skip
        # The Data Docs page is published to MLflow, so the approval page links to it.
        experiment_name="{{ params.model_name }}-data",
    )
    train = TrainModelOperator(
        task_id="train",
        entrypoint=[sys.executable, str(TRAINER)],
        experiment_name="{{ params.model_name }}",
        train_data=ingest.output,  # its train split
        valid_data=ingest.output,  # its valid split
        hyperparameters="{{ dict(params.model_params, features=params.features, target='target') | tojson }}",
    )
    register = RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        # The trained model and its run; the run's data tags (snapshot, SHA-256) are copied to the version.
        model_uri=train.output,
        tags={"mlops.validation.success": validate.output["success"]},
    )
    evaluate = EvaluateModelOperator(
        task_id="evaluate",
        model_name="{{ params.model_name }}",
        candidate_version=register.output,
        holdout_data=ingest.output,  # its holdout split
        target="target",
        # Regression metrics: the model type is "regressor" without saying so; lower is better for all three.
        thresholds={
            "root_mean_squared_error": {"threshold": "{{ params.max_rmse }}", "min_absolute_change": 0},
            "mean_absolute_error": {"threshold": "{{ params.max_mae }}"},
            "under_forecast_cost": {"threshold": "{{ params.max_cost }}"},
        },
        extra_metrics=[CustomMetric("under_forecast_cost", under_forecast_cost, greater_is_better=False)],
        validation_summary=validate.output,
    )
    serving = {
        "model_name": "{{ params.model_name }}",
        "version": register.output,
        "sample_data": ingest.output,  # its holdout split
        "target": SERVING_TARGET,
    }
    infra_validate = InfraValidateOperator(task_id="infra_validate", **serving)
    approve = ApproveModelOperator(
        task_id="approve",
        model_name="{{ params.model_name }}",
        candidate_version=register.output,
        report=evaluate.output["report"],
        assigned_users=APPROVERS or None,
        response_timeout=timedelta(days=2),
    )
    promote = PromoteModelOperator(
        task_id="promote",
        model_name="{{ params.model_name }}",
        version=register.output,
    )
    deploy = DeployModelOperator(task_id="deploy", **serving)

    chain(source, ingest, validate, train, register, evaluate, infra_validate, approve, promote, deploy)
