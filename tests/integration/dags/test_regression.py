"""
``mlops_regression`` on the live Airflow services: bundled data -> gated regressor -> approved through the HITL
REST API -> served, answering requests with only the columns it was trained on.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from airflow_mlops import tags as T
from tests.support.deploy import http_predict

pytestmark = [pytest.mark.integration, pytest.mark.live]

DAG_ID = "mlops_regression"
MODEL = "diabetes_regressor_e2e"
FEATURES = ["bmi", "bp", "s5"]


def test_a_regressor_goes_from_bundled_data_to_an_approved_served_model(live_stack):
    stack = live_stack
    run_id = stack.trigger(DAG_ID, {"model_name": MODEL, "features": FEATURES})
    state = stack.wait_for_approval_request(DAG_ID, run_id, "approve")
    assert state == "awaiting_input", stack.task_states(DAG_ID, run_id)

    validation = stack.xcom(DAG_ID, run_id, "validate")
    assert validation["success"] is True
    evaluation = stack.xcom(DAG_ID, run_id, "evaluate")
    assert evaluation["passed"] is True, evaluation["reason"]
    metrics = evaluation["metrics"]
    # Lower is better: the gate passed on the user's limits (the DAG's params), with the custom metric gated.
    assert metrics["root_mean_squared_error"]["candidate"] <= 70.0
    assert metrics["mean_absolute_error"]["candidate"] <= 55.0
    assert metrics["under_forecast_cost"]["passed"] is True
    assert metrics["under_forecast_cost"]["candidate"] > metrics["mean_absolute_error"]["candidate"]
    assert "under_forecast_cost" in stack.hitl_detail(DAG_ID, run_id, "approve")["body"]
    infra = stack.xcom(DAG_ID, run_id, "infra_validate")
    assert infra["requests"] == infra["rows"] + 1

    answer = stack.respond(DAG_ID, run_id, "approve", "Approve", user="reviewer", comment="rmse ok")
    assert answer.status_code == 200, answer.text
    assert stack.wait_for_run(DAG_ID, run_id) == "success", stack.task_states(DAG_ID, run_id)

    version = str(stack.xcom(DAG_ID, run_id, "register")["version"])
    assert stack.alias_version(MODEL) == version
    endpoint = stack.xcom(DAG_ID, run_id, "deploy")["endpoint"]
    # The served model takes exactly its training columns; a request with only those is answered.
    predictions, served_by = http_predict(endpoint, [{"bmi": 32.1, "bp": 101.0, "s5": 4.8}])
    assert served_by == version
    assert len(predictions) == 1
    tags = MlflowClient(stack.mlflow_url).get_model_version(MODEL, version).tags
    assert (tags[T.GATE_DECISION], tags[T.APPROVAL_APPROVER]) == ("passed", "reviewer")
