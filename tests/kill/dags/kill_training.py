"""
Kill-point DAG: the continuous-training path with real operators (ingest, train, register, evaluate,
infra-validate, approve, promote, deploy on the local target), every task retried once at once.

Every task arms the fault injector (tests/kill/faults.py) before it runs; the fault plan of the stack says
which task of which run is killed where. Without a plan it is an ordinary DAG.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param, chain

from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.deployment import DeployModelOperator, InfraValidateOperator
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from airflow_mlops.operators.training import TrainModelOperator
from tests.kill.faults import arm

APPROVERS = [{"id": user, "name": user} for user in os.environ.get("MLOPS_APPROVERS", "").split(",") if user]
SERVING_TARGET = {"kind": "local", "port": int(os.environ.get("MLOPS_KILL_SERVING_PORT", "5002"))}

with DAG(
    dag_id="mlops_kill_training",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(0), "pre_execute": arm},
    render_template_as_native_obj=True,
    tags=["mlops", "kill-points"],
    params={
        "model_name": Param("kill_churn", type="string"),
        "data_path": Param(os.environ.get("MLOPS_SOURCE_PATH", ""), type="string"),
    },
) as dag:
    ingest = IngestDatasetOperator(
        task_id="ingest",
        dataset_name="{{ params.model_name }}",
        source="{{ params.data_path }}",
        split={"train": 0.7, "valid": 0.15, "holdout": 0.15},
        label_column="label",
    )
    train = TrainModelOperator(
        task_id="train",
        # The demo classifier, logged without skops (tests/kill/trainer.py): seconds instead of a minute per run.
        entrypoint="tests.kill.trainer",
        experiment_name="{{ params.model_name }}",
        train_data="{{ ti.xcom_pull(task_ids='ingest')['splits']['train'] }}",
        valid_data="{{ ti.xcom_pull(task_ids='ingest')['splits']['valid'] }}",
        hyperparameters={"C": 1.0, "max_iter": 500, "target": "label"},
    )
    register = RegisterModelOperator(
        task_id="register",
        model_name="{{ params.model_name }}",
        model_uri="{{ ti.xcom_pull(task_ids='train')['model_uri'] }}",
        run_id="{{ ti.xcom_pull(task_ids='train')['run_id'] }}",
        tags={
            "mlops.data.uri": "{{ ti.xcom_pull(task_ids='ingest')['uri'] }}",
            "mlops.data.sha256": "{{ ti.xcom_pull(task_ids='ingest')['sha256'] }}",
        },
    )
    evaluate = EvaluateModelOperator(
        task_id="evaluate",
        model_name="{{ params.model_name }}",
        candidate_version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        holdout_data="{{ ti.xcom_pull(task_ids='ingest')['splits']['holdout'] }}",
        target="label",
        # An absolute bar only: every candidate of these tests passes the gate.
        thresholds={"accuracy_score": {"threshold": 0.5, "greater_is_better": True}},
    )
    infra_validate = InfraValidateOperator(
        task_id="infra_validate",
        model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        sample_data="{{ ti.xcom_pull(task_ids='ingest')['splits']['holdout'] }}",
        drop_columns=["label"],
        target=SERVING_TARGET,
        sample_rows=3,
    )
    approve = ApproveModelOperator(
        task_id="approve",
        model_name="{{ params.model_name }}",
        candidate_version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        report="{{ ti.xcom_pull(task_ids='evaluate')['report'] }}",
        assigned_users=APPROVERS or None,
        response_timeout=timedelta(hours=1),
    )
    promote = PromoteModelOperator(
        task_id="promote",
        model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
    )
    deploy = DeployModelOperator(
        task_id="deploy",
        model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        sample_data="{{ ti.xcom_pull(task_ids='ingest')['splits']['holdout'] }}",
        drop_columns=["label"],
        target=SERVING_TARGET,
        ready_timeout=300,
    )

    chain(ingest, train, register, evaluate, infra_validate, approve, promote, deploy)
