"""``mlops_rollback`` under ``dag.test()``: a one-click rollback on the local target, and its bad inputs."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    ConfigurationError,
    DeploymentError,
    DeploymentRejectedError,
    ModelVersionNotFoundError,
    RegistryError,
)
from airflow_mlops.lineage.deployments import read_history
from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator
from airflow_mlops.serving.local import LocalServerTarget
from airflow_mlops.serving.ports import serving_port
from tests.conftest import free_port
from tests.support.context import context_for
from tests.support.deploy import (
    approve_version,
    http_predict,
    register_version,
    stop_local_processes,
    write_holdout_snapshot,
)

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "rollback.py"
MODEL = "rollback_dag_churn"
ROWS = [{"tenure_months": 5.0, "monthly_spend": 50.0}]


@pytest.fixture(scope="module")
def dag(served):
    """The DAG file parsed with the serving settings of the deploy tasks (``served``)."""
    return runpy.run_path(str(DAG_FILE))["dag"]


@pytest.fixture(scope="module")
def client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.uri)


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    """v1 (predicts 0) deployed, then v2 (predicts 1) deployed on a local target: v2 serves."""
    from mlflow import MlflowClient

    v1 = register_version(mlflow_server.uri, MODEL, "zeros")
    v2 = register_version(mlflow_server.uri, MODEL, "ones")
    for version in (v1, v2):
        approve_version(MlflowClient(mlflow_server.uri), MODEL, version)
    holdout = write_holdout_snapshot(tmp_path_factory.mktemp("snapshots"))
    # The deploy tasks and the rollback DAG build the same target from the same settings.
    settings = {
        "MLOPS_SERVING_PORT": str(free_port()),
        "MLOPS_DATA_ROOT": str(tmp_path_factory.mktemp("root")),
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    config = {"kind": "local", "port": int(settings["MLOPS_SERVING_PORT"])}
    try:
        for version in (v1, v2):
            op = DeployModelOperator(
                task_id=f"deploy_v{version}", model_name=MODEL, version=version, target=config,
                sample_data=holdout, drop_columns=["label"],
            )  # fmt: skip
            op.execute(context_for(op))
        yield {"v1": v1, "v2": v2, "endpoint": f"http://127.0.0.1:{config['port']}", "config": config}
    finally:
        LocalServerTarget.from_config(config).stop(MODEL)
        stop_local_processes()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rollback(**kwargs):
    port = serving_port(MODEL, pinned=os.environ.get("MLOPS_SERVING_PORT"))  # as the DAG chooses it
    target = {"kind": "local", "port": port}
    op = RollbackModelOperator(task_id="rollback", **{"model_name": MODEL, "target": target, **kwargs})
    return op.execute(context_for(op, user="carol"))


def test_one_click_rollback_serves_the_previous_champion(dag, airflow_db, served, client):
    assert http_predict(served["endpoint"], ROWS) == ([1], served["v2"])

    dag_run = dag.test(run_conf={"model_name": MODEL, "version": "", "reason": "v2 flags every customer"})

    assert dag_run.state == "success", {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert http_predict(served["endpoint"], ROWS) == ([0], served["v1"])
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == served["v1"]
    entry = read_history(client, MODEL)[-1]
    assert (entry["action"], entry["version"], entry["outcome"]) == ("rollback", served["v1"], "succeeded")
    assert entry["reason"] == "v2 flags every customer"
    assert entry["previous_version"] == served["v2"]
    assert entry["actor"] == "dag_test"
    assert entry["time"]
    reason = client.get_model_version(MODEL, served["v2"]).tags[T.ROLLBACK_REASON]
    assert reason == f"rolled back to version {served['v1']} by dag_test: v2 flags every customer"


def test_the_form_requires_a_reason(dag, airflow_db, served):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="reason"):
        dag.test(run_conf={"model_name": MODEL, "version": "", "reason": ""})


def test_rolling_back_to_the_version_already_serving_changes_nothing(served, client):
    serving = LocalServerTarget.from_config(served["config"]).current(MODEL)

    with pytest.raises(DeploymentError, match=f"Version {serving.version} .* already serves") as err:
        rollback(version=serving.version, reason="again")

    assert isinstance(err.value, DeploymentRejectedError)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (MODEL, serving.version)

    assert (
        LocalServerTarget.from_config(served["config"]).current(MODEL).details["pid"]
        == serving.details["pid"]
    )


def test_rolling_back_to_a_version_that_does_not_exist_changes_nothing(served, client):
    before = read_history(client, MODEL)

    with pytest.raises(RegistryError, match="has no version 42") as err:
        rollback(version="42", reason="typo")

    assert isinstance(err.value, ModelVersionNotFoundError)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (MODEL, "42")

    assert read_history(client, MODEL) == before
    assert http_predict(served["endpoint"], ROWS)[1] == client.get_registered_model(MODEL).aliases[T.CHAMPION]


def test_an_empty_reason_is_refused_after_rendering(served):
    op = RollbackModelOperator(task_id="rollback", model_name=MODEL, reason="{{ params.reason }}")
    op.reason = " "  # what an empty form field renders to

    with pytest.raises(ValueError, match="reason is empty") as err:
        op.execute(context_for(op))

    assert isinstance(err.value, ConfigurationError)
    assert err.value.retryable is False


def test_a_model_without_deployment_history_cannot_be_rolled_back(client, mlflow_server):
    client.create_registered_model("never_deployed_churn")

    with pytest.raises(DeploymentError, match="no deployment history") as err:
        rollback(model_name="never_deployed_churn", reason="why not")

    assert isinstance(err.value, DeploymentRejectedError)
    assert err.value.retryable is False
    assert err.value.model == "never_deployed_churn"


def test_a_rollback_triggered_while_a_deploy_verifies_waits_for_it_then_rolls_back(
    dag, airflow_db, served, client
):
    """The on-call engineer need not re-trigger: the run waits (deferred) for the deploy, then rolls back."""
    import threading
    import time

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_mlops.serving.record import VERIFY, ReleaseRecord, release_id
    from airflow_mlops.serving.release import new_plan
    from airflow_mlops.serving.verification import SmokeTest
    from tests.support.signing import test_keys as signing_keys

    target = LocalServerTarget.from_config(served["config"])
    current = target.current(MODEL)
    serving, earlier = current.version, ({served["v1"], served["v2"]} - {current.version}).pop()
    # Another DAG run's deploy task, re-deploying what serves, is at its verify step (its signed record).
    airflow = {"dag_id": "mlops_continuous_training", "run_id": "scheduled__w49", "task_id": "deploy",
               "map_index": -1, "try_number": 1}  # fmt: skip
    plan = new_plan(
        model_name=MODEL, version=serving, model_uri=current.model_uri, target=target, previous=current,
        verify=SmokeTest(), reason="weekly retrain", actor="airflow:mlops_continuous_training", airflow=airflow,
    )  # fmt: skip
    deploy = ReleaseRecord.begin(
        client, MODEL, release_id(airflow), "deploy", plan, 1800.0, 1, signing_keys()
    )
    deploy.advance(VERIFY, plan, 1)
    deferred: list[str] = []

    def finish_the_deploy_once_the_rollback_defers():
        give_up = time.monotonic() + 300
        while not deferred and time.monotonic() < give_up:
            with create_session() as session:
                waiting = session.scalars(
                    select(TaskInstance.run_id).where(
                        TaskInstance.dag_id == "mlops_rollback",
                        TaskInstance.next_method == "execute_after_release",
                    )
                ).all()
            deferred.extend(waiting)
            time.sleep(0.5)
        deploy.finish("succeeded", result={"version": serving}, try_number=1)

    finisher = threading.Thread(target=finish_the_deploy_once_the_rollback_defers)
    finisher.start()
    try:
        dag_run = dag.test(
            run_conf={"model_name": MODEL, "version": earlier, "reason": "the retrain is wrong"}
        )
    finally:
        finisher.join(330)

    assert deferred == [dag_run.run_id]  # it waited in the triggerer, no worker slot held
    assert dag_run.state == "success", {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert http_predict(served["endpoint"], ROWS)[1] == earlier
    assert client.get_registered_model(MODEL).aliases[T.CHAMPION] == earlier
    entry = read_history(client, MODEL, signing_keys())[-1]
    assert (entry["action"], entry["version"], entry["outcome"]) == ("rollback", earlier, "succeeded")
    assert (entry["previous_version"], entry["reason"]) == (serving, "the retrain is wrong")
