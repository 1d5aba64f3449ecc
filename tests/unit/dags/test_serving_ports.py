"""
The rollback and monitoring DAGs find a model's endpoint on the port the deploying DAG served it on, and a port
held by another model is a configuration error wherever it is imported from.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from airflow_mlops.serving.base import target_from_config
from airflow_mlops.serving.ports import port_for_model, serving_port

DAGS = Path(__file__).resolve().parents[3] / "dags"
SETTINGS = ("MLOPS_SERVING_PORT", "MLOPS_REGRESSION_SERVING_PORT", "MLOPS_MONITORING_TARGET")


def load(name: str, monkeypatch, **env: str):
    for variable in SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return runpy.run_path(str(DAGS / name))["dag"]


def port(dag, task_id: str, model_name: str, serving_port: int | None = None) -> int:
    """The port of the task's target once rendered for a run with these params."""
    task = dag.get_task(task_id)
    context = {"params": {"model_name": model_name, "serving_port": serving_port}}
    return target_from_config(task.render_template(task.target, context, dag.get_template_env())).port


def test_a_rollback_finds_each_model_on_the_port_its_deploy_used(monkeypatch):
    training = load("continuous_training.py", monkeypatch)
    regression = load("regression.py", monkeypatch)
    rollback = load("rollback.py", monkeypatch)

    for model in ("demo_churn_classifier", "churn", "fraud"):
        assert port(rollback, "rollback", model) == port(training, "deploy", model)
    assert port(rollback, "rollback", "demo_diabetes_regressor") == port(
        regression, "deploy", "demo_diabetes_regressor"
    )
    assert port(rollback, "rollback", "fraud") == port_for_model("fraud")
    assert port(rollback, "rollback", "churn", 6200) == port(training, "deploy", "churn", 6200) == 6200


def test_a_pinned_serving_port_is_where_every_rollback_goes(monkeypatch):
    rollback = load("rollback.py", monkeypatch, MLOPS_SERVING_PORT="6123")

    assert rollback.get_task("rollback").target == {"kind": "local", "port": 6123}
    assert "serving_port" not in rollback.params


def monitored(monkeypatch, **env: str):
    """The deploy target whose endpoint the monitor task checks (None: not checked)."""
    target = load("monitoring.py", monkeypatch, **env).get_task("monitor").target
    return None if target is None else target_from_config(target)


def test_monitoring_checks_the_endpoint_the_continuous_training_dag_serves_when_told_to(monkeypatch):
    assert monitored(monkeypatch) is None
    assert monitored(monkeypatch, MLOPS_MONITORING_TARGET="local").to_config()["port"] == 5001
    pinned = monitored(monkeypatch, MLOPS_MONITORING_TARGET="local", MLOPS_SERVING_PORT="6123")
    assert pinned.to_config()["port"] == 6123
    other = monitored(monkeypatch, MLOPS_MONITORING_TARGET='{"kind": "local", "port": 6300}')
    assert other.to_config()["port"] == 6300


def test_a_serving_port_that_is_not_a_tcp_port_is_refused():
    assert serving_port("churn", "", pinned=None, defaults={"churn": 5001}) == 5001
    for bad in (0, 70000, "x", True):
        with pytest.raises(ValueError, match="must be from 1 to 65535"):
            serving_port("churn", bad)


def test_port_in_use_is_a_configuration_error_from_either_import_path():
    from airflow_mlops import exceptions
    from airflow_mlops.serving import local

    assert local.PortInUseError is exceptions.PortInUseError
    error = exceptions.PortInUseError("port 5001 is churn's", model="fraud", holder="churn")
    assert isinstance(error, exceptions.ConfigurationError)
    assert not error.retryable
    assert error.holder == "churn"


def test_the_old_import_path_still_works_and_warns():
    with pytest.warns(DeprecationWarning, match="moved to airflow_mlops.serving.ports.serving_port"):
        from airflow_mlops.serving.local import serving_port as old

    assert old is serving_port
