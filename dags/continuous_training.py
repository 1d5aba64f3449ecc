"""
Continuous training: ingest -> validate -> drift -> train -> register -> evaluate (gate) -> infra-validate -> approve
-> promote -> deploy (verified, rolled back automatically if the new version does not serve).

Runs on the embedded default (local files, MLflow, a local training process) and, with other connections
and settings, in production. Trigger it from the Airflow UI; the params form sets the model name, the data
location, the thresholds and the hyper-parameters. It also starts on its own when monitoring asks for the
default model to be retrained (an event of its retraining Asset, emitted by the ``mlops_monitoring`` DAG for a
degraded verdict); the approval request then says which verdict started it. Settings read from the
environment:

- ``MLOPS_SOURCE_PATH``: default data location (a local path or glob, or an ``s3://`` key or prefix)
- ``MLOPS_APPROVERS``: comma-separated user ids allowed to approve (Airflow compares them with the
  answering user's id: the user name with the simple auth manager, the numeric id with FAB). Empty: any
  user allowed to answer this DAG's required actions (``PUT`` on the DAG's Human-in-the-loop details:
  roles ``user``, ``op`` and ``admin`` with the simple auth manager). Either way the user who triggered a
  run cannot approve it (``ApproveModelOperator(allow_self_approval=True)`` allows it), and promote and
  deploy refuse a version without a passed gate and a recorded approval.
- ``MLOPS_SERVING_PORT``: when set, the port of the local endpoint of every model this DAG serves (one model
  at a time). Unset: a port per model, so that several models serve side by side: the ``serving_port`` param,
  or 5001 for the default model and a port derived from the name for any other
  (:func:`airflow_mlops.serving.ports.port_for_model`, 5100-5999). A port that is another model's endpoint
  fails the deploy at once (not retried), naming that model.
- ``MLOPS_TRAINING_RUNTIME``: ``local`` (default, a child process) or ``kubernetes`` (a pod running
  ``MLOPS_TRAINING_IMAGE``); see :func:`airflow_mlops.training.selection.runtime_from_env`
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial

from airflow.sdk import DAG, Param, chain

from airflow_mlops.data.expectations import table_suite
from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.deployment import DeployModelOperator, InfraValidateOperator
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_mlops.operators.replay import ReplayTrafficOperator
from airflow_mlops.operators.training import TrainModelOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from airflow_mlops.retraining import describe_trigger, retraining_asset
from airflow_mlops.serving.ports import serving_port
from airflow_mlops.training.selection import runtime_from_env

APPROVERS = [{"id": user, "name": user} for user in os.environ.get("MLOPS_APPROVERS", "").split(",") if user]
FEATURES = ["tenure_months", "monthly_spend", "support_calls", "usage_hours", "discount_rate"]
MODEL_NAME = "demo_churn_classifier"
PINNED_PORT = os.environ.get("MLOPS_SERVING_PORT")

# Unpinned, a JSON target (templates render as text): the port of the model being served.
SERVING_TARGET = (
    {"kind": "local", "port": int(PINNED_PORT)}
    if PINNED_PORT
    else '{"kind": "local", "port": {{ serving_port(params.model_name, params.serving_port) }} }'
)
# The port per model, as a param, when MLOPS_SERVING_PORT does not pin one.
PORT_PARAM = {} if PINNED_PORT else {
    "serving_port": Param(None, type=["null", "integer"], minimum=1, maximum=65535,
                          description="Port of the model's local endpoint; empty: 5001 for the default model, a "
                                      "port derived from the name (5100-5999) for any other."),
}  # fmt: skip

with DAG(
    dag_id="mlops_continuous_training",
    description="Ingest, validate, train, evaluate against the champion, approve and promote a model.",
    # A degraded monitoring verdict of the default model schedules a run (the params' defaults); triggering by
    # hand works as before.
    schedule=retraining_asset(MODEL_NAME),
    catchup=False,
    max_active_runs=1,
    # Transient failures (a server restarting, a network blip) are retried; bad input fails at once.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    user_defined_macros={
        "describe_trigger": describe_trigger,
        # The serving_port param, else 5001 for the default model, else a port derived from the name.
        "serving_port": partial(serving_port, defaults={MODEL_NAME: 5001}),
    },
    tags=["mlops"],
    params={
        # Python's "$" also matches before a final newline: "(?!\n)" refuses it ("\Z" is not JavaScript).
        "model_name": Param(MODEL_NAME, type="string", minLength=1, maxLength=128,
                            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$(?!\n)",
                            description="Registered model name in MLflow (also the dataset name): letters, "
                                        "digits, '.', '_', '-'."),
        "data_path": Param(os.environ.get("MLOPS_SOURCE_PATH", "data/customers.csv"), type="string",
                           minLength=1, description="Local path or glob, or s3:// key or prefix (CSV/Parquet)."),
        "target": Param("label", type="string", minLength=1, description="Label column."),
        "min_accuracy": Param(0.7, type="number", minimum=0, maximum=1,
                              description="The candidate's holdout accuracy must reach this."),
        "min_improvement": Param(0.0, type="number", minimum=0,
                                 description="Required accuracy gain over the champion (absolute)."),
        "model_params": Param({"C": 1.0, "max_iter": 500}, type="object",
                              description="Hyper-parameters passed to the trainer as MLOPS_PARAMS."),
        **PORT_PARAM,
    },
) as dag:
    ingest = IngestDatasetOperator(
        task_id="ingest",
        dataset_name="{{ params.model_name }}",
        source="{{ params.data_path }}",
        split={"train": 0.7, "valid": 0.15, "holdout": 0.15},
        label_column="{{ params.target }}",
    )
    # Each task takes the results it needs with .output: the whole result (an operator picks what it takes,
    # e.g. the train split of the snapshot) or one key of it (output["uri"]).
    validate = ValidateDatasetOperator(
        task_id="validate",
        dataset_uri=ingest.output,
        # Exactly these columns (no extra or junk ones), a label that is 0 or 1 and never null, numeric features
        # (not "1,234", a timestamp or a list) that are never null.
        expectations=table_suite(
            FEATURES,
            "{{ params.target }}",
            label_values=[0, 1],
            min_rows=100,
            types=dict.fromkeys(FEATURES, "number"),
        ),
        # The Data Docs page is published to MLflow, so the approval page links to it.
        experiment_name="{{ params.model_name }}-data",
    )
    drift = DriftCheckOperator(
        task_id="drift",
        dataset_uri=ingest.output,
        # Compared with the data the current champion was trained on (none yet: the check passes).
        model_name="{{ params.model_name }}",
    )
    train = TrainModelOperator(
        task_id="train",
        entrypoint="airflow_mlops.trainer.examples.sklearn_classifier",
        experiment_name="{{ params.model_name }}",
        train_data=ingest.output,  # its train split
        valid_data=ingest.output,  # its valid split
        hyperparameters="{{ dict(params.model_params, target=params.target) | tojson }}",
        runtime=runtime_from_env(),  # MLOPS_TRAINING_RUNTIME=local|kubernetes (+ MLOPS_TRAINING_IMAGE)
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
        target="{{ params.target }}",
        thresholds={
            "accuracy_score": {
                "threshold": "{{ params.min_accuracy }}",
                "min_absolute_change": "{{ params.min_improvement }}",
                "greater_is_better": True,
            }
        },
        # Shown in the evaluation report, which is the body of the approval request; first, what started the
        # run (a monitoring verdict, if any).
        validation_summary=validate.output,
        drift_summary=drift.output,
        report_intro="{{ describe_trigger(triggering_asset_events | default(none)) }}",
    )
    # The candidate, where it will serve, and holdout rows (without the label) to send it.
    serving = {
        "model_name": "{{ params.model_name }}",
        "version": register.output,
        "sample_data": ingest.output,  # its holdout split
        "drop_columns": ["{{ params.target }}"],
        "target": SERVING_TARGET,
    }
    infra_validate = InfraValidateOperator(task_id="infra_validate", **serving)
    # The last day's production requests to the champion, answered again by the candidate in the sandbox: how
    # often it would have answered differently, shown to the reviewer (no limit set: it informs, it does not
    # gate; max_disagreement=... would). Without a champion or captured traffic there is nothing to replay.
    replay = ReplayTrafficOperator(
        task_id="replay",
        model_name="{{ params.model_name }}",
        version=register.output["version"],
        target=SERVING_TARGET,
    )
    approve = ApproveModelOperator(
        task_id="approve",
        model_name="{{ params.model_name }}",
        candidate_version=register.output,
        report=[evaluate.output["report"], replay.output["markdown"]],
        assigned_users=APPROVERS or None,
        response_timeout=timedelta(days=2),
    )
    promote = PromoteModelOperator(
        task_id="promote",
        model_name="{{ params.model_name }}",
        version=register.output,
    )
    deploy = DeployModelOperator(task_id="deploy", **serving)

    chain(ingest, validate, drift, train, register, evaluate, infra_validate, replay, approve, promote, deploy)
