"""
Kill-point DAGs of the release path: deploy one version to three endpoints at once (the local target, the
KServe stand-in, a KServe canary), and roll back on the KServe stand-in. Every task is retried once at once.

The targets are configured here, as a deployment's DAG would: the KServe ones use the ``kubernetes_kill``
connection (the stack's Kubernetes API-server stand-in). The fault plan says which task is killed where.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator
from tests.kill.faults import arm

DEFAULTS = {"retries": 1, "retry_delay": timedelta(0), "pre_execute": arm}
LOCAL_TARGET = {"kind": "local", "port": int(os.environ.get("MLOPS_KILL_SERVING_PORT", "5002"))}
KSERVE_TARGET = {
    "kind": "kserve",
    "namespace": "models",
    "kubernetes_conn_id": "kubernetes_kill",
    "poll_interval": 0.2,
}
CANARY_TARGET = {**KSERVE_TARGET, "canary_traffic_percent": 25}
#: A short bake: 30 requests over about 3 seconds, no failure allowed.
CANARY = {"percent": 25, "bake_seconds": 3, "interval": 0.1, "max_error_rate": 0.0}


def version_param() -> Param:
    """A version to deploy (one Param object per parameter: Airflow keeps each one's value on it)."""
    return Param("", type="string", pattern=r"^[0-9]*$")


with DAG(
    dag_id="mlops_kill_release",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["mlops", "kill-points"],
    params={
        "local_model": Param("kill_churn", type="string"),
        "local_version": version_param(),
        "kserve_model": Param("kill_kserve", type="string"),
        "kserve_version": version_param(),
        "canary_model": Param("kill_canary", type="string"),
        "canary_version": version_param(),
        "sample_data": Param("", type="string"),
    },
):
    shared = {"sample_data": "{{ params.sample_data }}", "drop_columns": ["label"], "ready_timeout": 300}
    DeployModelOperator(
        task_id="deploy_local",
        model_name="{{ params.local_model }}",
        version="{{ params.local_version }}",
        target=LOCAL_TARGET,
        **shared,
    )
    DeployModelOperator(
        task_id="deploy_kserve",
        model_name="{{ params.kserve_model }}",
        version="{{ params.kserve_version }}",
        target=KSERVE_TARGET,
        **shared,
    )
    DeployModelOperator(
        task_id="deploy_canary",
        model_name="{{ params.canary_model }}",
        version="{{ params.canary_version }}",
        target=CANARY_TARGET,
        canary=CANARY,
        **shared,
    )

with DAG(
    dag_id="mlops_kill_rollback",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["mlops", "kill-points"],
    params={
        "model_name": Param("kill_kserve", type="string"),
        "version": Param("", type=["string", "null"], pattern=r"^[0-9]*$"),
        "reason": Param("kill-point test", type="string", minLength=1),
    },
):
    RollbackModelOperator(
        task_id="rollback",
        model_name="{{ params.model_name }}",
        version="{{ params.version or '' }}",
        reason="{{ params.reason }}",
        target=KSERVE_TARGET,
    )
