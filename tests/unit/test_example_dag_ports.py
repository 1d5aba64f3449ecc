"""The example DAGs serve each model on a port of its own, so several models serve from one Airflow."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from airflow_mlops.serving.base import target_from_config

DAGS = Path(__file__).resolve().parents[2] / "dags"


def load(name: str, monkeypatch, **env: str):
    for variable in ("MLOPS_SERVING_PORT", "MLOPS_REGRESSION_SERVING_PORT"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return runpy.run_path(str(DAGS / name))["dag"]


def port(dag, model_name: str, serving_port: int | None = None) -> int:
    """The port the deploy task's target has once rendered for a run with these params."""
    task = dag.get_task("deploy")
    context = {"params": {"model_name": model_name, "serving_port": serving_port}}
    rendered = task.render_template(task.target, context, dag.get_template_env())
    return target_from_config(rendered).port


@pytest.fixture
def dags(monkeypatch):
    return load("continuous_training.py", monkeypatch), load("regression.py", monkeypatch)


def test_each_model_gets_its_own_port_the_same_in_every_dag(dags):
    training, regression = dags

    assert port(training, "demo_churn_classifier") == 5001
    assert port(regression, "demo_diabetes_regressor") == 5002
    churn, fraud = port(training, "churn"), port(training, "fraud")
    assert churn != fraud
    assert all(5100 <= p <= 5999 for p in (churn, fraud))
    assert port(regression, "churn") == churn
    for dag in dags:
        for task_id in ("infra_validate", "deploy"):
            assert dag.get_task(task_id).target == dag.get_task("deploy").target


def test_the_serving_port_param_chooses_the_port(dags):
    training, regression = dags

    assert port(training, "churn", 6200) == 6200
    assert port(regression, "demo_diabetes_regressor", 6201) == 6201
    assert training.params.get_param("serving_port").resolve(None) is None


def test_an_environment_port_pins_every_model_of_the_dag_to_it(monkeypatch):
    training = load("continuous_training.py", monkeypatch, MLOPS_SERVING_PORT="6123")

    assert training.get_task("deploy").target == {"kind": "local", "port": 6123}
    assert "serving_port" not in training.params
