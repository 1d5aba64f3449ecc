"""
Tasks wired the Airflow way, with ``.output`` and ``.output[key]`` only (no Jinja, no native rendering), in a
real ``dag.test()`` run: ingest's result feeds validation and drift; a bad upstream value fails the task
that takes it at once, without retries.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.registry import RegisterModelOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.dags import serialize_dag
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration


def test_ingest_feeds_validation_and_drift_through_output(airflow_db, tmp_path):
    from airflow.sdk import DAG, task

    raw = tmp_path / "raw.csv"
    pd.DataFrame({"x": range(40), "label": [0, 1] * 20}).to_csv(raw, index=False)
    with DAG("mlops_output_wiring", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        ingest = IngestDatasetOperator(
            task_id="ingest", dataset_name="wired", source=str(raw), data_root=str(tmp_path / "root"),
            split={"train": 0.75, "holdout": 0.25}, label_column="label",
        )  # fmt: skip
        validate = ValidateDatasetOperator(
            task_id="validate",
            dataset_uri=ingest.output["uri"],
            expectations=[{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}}],
            data_docs=False,
        )
        drift = DriftCheckOperator(
            task_id="drift", dataset_uri=ingest.output["uri"], reference_uri=ingest.output["uri"]
        )

        @task
        def trained() -> dict:
            return {"model_uri": ""}  # a trainer that reported no model

        register = RegisterModelOperator(
            task_id="register", model_name="wired", model_uri=trained()["model_uri"],
            mlflow_conn_id="no_such_connection", retries=2, retry_delay=timedelta(0),
        )  # fmt: skip
    serialize_dag(dag)

    dag_run = dag.test()

    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    assert states == {
        "ingest": "success", "validate": "success", "drift": "success", "trained": "success",
        "register": "failed",
    }  # fmt: skip
    assert validate.upstream_task_ids == drift.upstream_task_ids == {"ingest"}
    assert tis["register"].try_number == 1  # a bad argument is not retried
    assert register.upstream_task_ids == {"trained"}
    result = tis["validate"].xcom_pull(task_ids="validate")
    uri = tis["ingest"].xcom_pull(task_ids="ingest", key="uri")
    assert uri == tis["ingest"].xcom_pull(task_ids="ingest")["uri"]
    assert result["success"] is True
    assert result["dataset"] == uri
    assert tis["drift"].xcom_pull(task_ids="drift")["dataset"] == uri
