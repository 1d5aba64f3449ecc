"""
Ingest new data when it arrives: wait (deferred, no worker slot) for new or changed files since the
dataset's last snapshot, then snapshot them and emit an event on the dataset's Asset, its real location
``file:///<data root>/datasets/<name>`` or ``s3://<bucket>/<prefix>/datasets/<name>`` (``dataset_asset``).

DAGs scheduled on that Asset run once per new snapshot; the event's extra holds the snapshot ``uri`` and
``sha256``. Settings read from the environment:

- ``MLOPS_SOURCE_PATH``: where new data lands (a local file, directory or glob, or an ``s3://`` key, prefix
  or glob); the same default as ``mlops_continuous_training``
- ``MLOPS_DATASET_NAME``: the dataset name (default ``demo_churn_classifier``, the name the continuous
  training DAG snapshots its data under)
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, chain

from airflow_mlops.operators.ingest import IngestDatasetOperator, dataset_asset
from airflow_mlops.sensors.new_data import NewDataSensor

SOURCE = os.environ.get("MLOPS_SOURCE_PATH", "data/customers.csv")
DATASET = os.environ.get("MLOPS_DATASET_NAME", "demo_churn_classifier")
DATASET_ASSET = dataset_asset(DATASET)

with DAG(
    dag_id="mlops_ingest",
    description="Wait for new data, then snapshot it and emit an Asset event.",
    schedule=timedelta(hours=1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["mlops"],
) as dag:
    wait = NewDataSensor(
        task_id="wait_for_new_data",
        source=SOURCE,
        dataset_name=DATASET,
        deferrable=True,
        poke_interval=60,
        timeout=timedelta(minutes=55).total_seconds(),
        soft_fail=True,  # nothing new within the hour: this run is skipped, the next one waits again
    )
    ingest = IngestDatasetOperator(
        task_id="ingest",
        dataset_name=DATASET,
        source=SOURCE,
        split={"train": 0.7, "valid": 0.15, "holdout": 0.15},
        asset=DATASET_ASSET,
    )
    chain(wait, ingest)
