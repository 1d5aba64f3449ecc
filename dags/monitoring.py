"""
Monitoring: every hour, check what the champion served in the last hour, and ask for retraining when it degraded.

``monitor`` reads the traffic the local target captured (serve with ``{"kind": "local", "capture": True}``;
captures under ``<MLOPS_DATA_ROOT>/captures/``) and compares it with the champion's training snapshot, its
holdout predictions and a data-quality suite; labels that arrived later (``labels_uri``) give live accuracy.
``request_retraining`` turns a degraded verdict into an event of the model's retraining Asset, which schedules
``mlops_continuous_training``, at most once per cool-down. The window is the hour before the run (a run
triggered by hand: the hour before it was triggered). With ``MLOPS_MONITORING_TARGET`` set, ``monitor`` also
checks the model's endpoint: one that does not answer is a ``degraded`` verdict with the reason, whatever the
traffic (and asks for no retraining). Settings read from the environment:

- ``MLOPS_MONITORING_CAPTURES``: data root of the captures (default ``MLOPS_DATA_ROOT``)
- ``MLOPS_MONITORING_MIN_RECORDS``: fewest captured rows for a verdict (default 100)
- ``MLOPS_MONITORING_COOLDOWN_HOURS``: hours between two retraining requests (default 24)
- ``MLOPS_MONITORING_TARGET``: the deploy target whose endpoint is checked: ``local`` (the local endpoint
  ``mlops_continuous_training`` serves the model on: ``MLOPS_SERVING_PORT``, default 5001), or a target as
  JSON (``{"kind": "kserve", "namespace": "ml"}``); unset: the endpoint is not checked
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.operators.monitoring import MonitorModelOperator, RequestRetrainingOperator
from airflow_mlops.serving.ports import serving_port

MODEL_NAME = "demo_churn_classifier"
TARGET_SETTING = os.environ.get("MLOPS_MONITORING_TARGET", "").strip()
#: The target whose endpoint is checked with the traffic (None: not checked).
SERVING_TARGET = (
    {
        "kind": "local",
        "port": serving_port(
            MODEL_NAME, pinned=os.environ.get("MLOPS_SERVING_PORT"), defaults={MODEL_NAME: 5001}
        ),
    }
    if TARGET_SETTING == "local"
    else TARGET_SETTING or None
)

with DAG(
    dag_id="mlops_monitoring",
    description="Monitor the served champion from its captured traffic; a degraded verdict asks for retraining.",
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["mlops"],
    params={
        "labels_uri": Param(
            "",
            type="string",
            description="Ground truth: a Parquet/CSV file (or glob) with _request_id and label; empty: none.",
        ),
    },
) as dag:
    monitor = MonitorModelOperator(
        task_id="monitor",
        model_name=MODEL_NAME,
        capture_uri=os.environ.get("MLOPS_MONITORING_CAPTURES") or None,
        window_end="{{ dag_run.run_after.isoformat() }}",
        window=timedelta(hours=1),
        labels_uri="{{ params.labels_uri }}",  # empty: no ground truth
        min_records=int(os.environ.get("MLOPS_MONITORING_MIN_RECORDS", "100")),
        label_column="label",
        target=SERVING_TARGET,
    )
    request_retraining = RequestRetrainingOperator(
        task_id="request_retraining",
        model_name=MODEL_NAME,
        monitoring=monitor.output,
        cooldown=timedelta(hours=float(os.environ.get("MLOPS_MONITORING_COOLDOWN_HOURS", "24"))),
    )
    monitor >> request_retraining
