"""
The pipeline the OpenLineage tests observe, run in a child process of their own (the provider reads its
configuration once per process): the example DAG up to the approval, an approval, then a deploy.
"""

from __future__ import annotations

import json
from pathlib import Path

# Not from tests.conftest: the child process imports this module, and conftest sets up a session of its own.
REPO = Path(__file__).resolve().parents[2]

MODEL = "lineage_churn"
# infra_validate starts a model server as the deploy does (a minute on CI): its builder has a unit test.
UP_TO_APPROVAL = ["ingest", "validate", "drift", "train", "register", "evaluate"]


def run_pipeline(source: str, port: int) -> None:
    """In the child process: the example DAG up to the approval, an approval, then a deploy of the version."""
    import runpy

    import mlflow
    from airflow.sdk import DAG

    from airflow_mlops import tags
    from airflow_mlops.operators.deployment import DeployModelOperator
    from tests.support.dags import serialize_dag
    from tests.support.deploy import approve_version, stop_local_processes

    example = runpy.run_path(str(REPO / "dags" / "continuous_training.py"))["dag"]
    subset = example.partial_subset(task_ids=UP_TO_APPROVAL, include_upstream=True)
    states = {ti.task_id: ti.state for ti in subset.test(run_conf={"model_name": MODEL, "data_path": source}).get_task_instances()}  # fmt: skip
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "challenger")
    approve_version(client, MODEL, version.version)
    holdout = f"{version.tags[tags.DATA_URI]}#holdout"
    with DAG("lineage_deploy", schedule=None) as deploy_dag:
        DeployModelOperator(
            task_id="deploy", model_name=MODEL, version=version.version, sample_data=holdout,
            drop_columns=["label"], target={"kind": "local", "port": port},
        )  # fmt: skip
    serialize_dag(deploy_dag)
    try:
        states.update({ti.task_id: ti.state for ti in deploy_dag.test().get_task_instances()})
    finally:
        stop_local_processes()
    print(json.dumps({"states": {k: str(v) for k, v in states.items()}, "version": version.version,
                      "snapshot": version.tags[tags.DATA_URI]}))  # fmt: skip
