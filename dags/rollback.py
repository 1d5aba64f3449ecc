"""
One-click rollback: serve an earlier version of a model again, on the serving target of the deploy task.

Trigger it from the Airflow UI; the params form asks for the model, the version to go back to (empty: the
previous champion, i.e. the last version that served before the current one) and the reason (required). The
run redeploys that version, verifies it serves (health check and the last deployment's smoke test), moves
the ``champion`` alias to it, and records who, why and when in the registry (``mlops.deployments``). If the
restored version fails verification, what served before keeps serving and the run fails. Only a version
that served before, passed the gate and was approved can be restored; a retried run finishes the same
rollback.

The target is built here, never from the registry: the local target on the model's port, chosen as the
example DAGs' deploy tasks choose it. ``MLOPS_SERVING_PORT`` when set (the port of every model, as in
``mlops_continuous_training``); else the ``serving_port`` param when set (the port the deploying run was
given), else 5001 for ``demo_churn_classifier``, 5002 for ``demo_diabetes_regressor`` and a port derived from
the name for any other model (:func:`airflow_mlops.serving.ports.port_for_model`).

A rollback triggered while a deploy of the same model is in progress waits for it without holding a worker
slot (deferred, up to ``wait_for_release``), then chooses and checks everything again against what serves
by then. Retries cover transient errors (the MLflow server or the target briefly unreachable); a refused
rollback (nothing to roll back, an unapproved version) fails at once.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import partial

from airflow.sdk import DAG, Param

from airflow_mlops.operators.deployment import RollbackModelOperator
from airflow_mlops.serving.ports import serving_port

#: The endpoint ports of the example DAGs' default models (mlops_continuous_training, mlops_regression).
DEFAULT_PORTS = {"demo_churn_classifier": 5001, "demo_diabetes_regressor": 5002}
PINNED_PORT = os.environ.get("MLOPS_SERVING_PORT")
# Unpinned, a JSON target (this DAG renders templates as text): the port of the model being rolled back.
SERVING_TARGET = (
    {"kind": "local", "port": int(PINNED_PORT)}
    if PINNED_PORT
    else '{"kind": "local", "port": {{ serving_port(params.model_name, params.serving_port) }} }'
)
# The port per model, as a param, when MLOPS_SERVING_PORT does not pin one.
PORT_PARAM = {} if PINNED_PORT else {
    "serving_port": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=65535,
        title="Serving port",
        description="Port of the model's local endpoint, if its deploy was given one; empty: the port the "
        "example DAGs derive for the model.",
    ),
}  # fmt: skip

with DAG(
    dag_id="mlops_rollback",
    description="Roll a model back to an earlier version: redeploy, verify, move champion, record why.",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["mlops"],
    doc_md=__doc__,
    user_defined_macros={"serving_port": partial(serving_port, defaults=DEFAULT_PORTS)},
    params={
        "model_name": Param(
            "demo_churn_classifier",
            type="string",
            minLength=1,
            pattern=r"^[\w.-]+$",
            title="Model",
            description="Registered model name in MLflow.",
        ),
        "version": Param(
            "",
            type=["string", "null"],
            pattern=r"^[0-9]*$",
            title="Version",
            description="Version to roll back to. Empty: the previous champion.",
        ),
        "reason": Param(
            type="string",
            minLength=1,
            title="Reason",
            description="Why the model is rolled back (required; recorded in the registry).",
        ),
        **PORT_PARAM,
    },
) as dag:
    RollbackModelOperator(
        task_id="rollback",
        model_name="{{ params.model_name }}",
        version="{{ params.version or '' }}",
        reason="{{ params.reason }}",
        target=SERVING_TARGET,
        # Longer than a deploy's lease (its ready timeout + bake + 10 minutes): a deploy whose task died is
        # taken over; a live one is waited for.
        wait_for_release=timedelta(hours=1),
        retries=2,
        retry_delay=timedelta(seconds=30),
    )
