"""The example DAGs are well formed: ids, params forms, and every Jinja expression lands in a template field."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[3] / "dags"


def _dags():
    from airflow.sdk import DAG

    found = {}
    for path in sorted(DAGS.glob("*.py")):
        for value in runpy.run_path(str(path), run_name="dag_file").values():
            if isinstance(value, DAG):
                found[value.dag_id] = value
    return found


def _has_jinja(value) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(_has_jinja(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_jinja(v) for v in value)
    return False


@pytest.fixture(scope="module")
def dags():
    return _dags()


def test_contract_dag_ids_exist(dags):
    assert "mlops_continuous_training" in dags
    assert "mlops_regression" in dags


def test_the_regression_dag_gates_lower_is_better_metrics_and_a_custom_one(dags):
    dag = dags["mlops_regression"]
    evaluate = dag.get_task("evaluate")
    assert evaluate.model_type is None  # inferred from the regression metrics
    assert set(evaluate.thresholds) == {"root_mean_squared_error", "mean_absolute_error", "under_forecast_cost"}
    [cost] = evaluate.extra_metrics
    assert (cost.name, cost.greater_is_better) == ("under_forecast_cost", False)
    # Its trainer is a file of the DAG folder, not a module of the package.
    entrypoint = dag.get_task("train").entrypoint
    assert Path(entrypoint[-1]) == DAGS / "regression_trainer.py"
    assert dag.params.get_param("features").resolve(value=["bmi"]) == ["bmi"]


def test_every_jinja_expression_is_in_a_template_field(dags):
    """A Jinja string in a non-templated argument reaches the operator verbatim ('{{ params.x }}')."""
    untemplated = []
    for dag in dags.values():
        for task in dag.tasks:
            for name, value in vars(task).items():
                if not name.startswith("_") and _has_jinja(value) and name not in task.template_fields:
                    untemplated.append(f"{dag.dag_id}.{task.task_id}.{name}")
    assert untemplated == []


def test_continuous_training_params_form(dags):
    params = dags["mlops_continuous_training"].params
    assert {"model_name", "data_path", "target", "min_accuracy", "min_improvement", "model_params"} <= set(
        params
    )
    schema = params.get_param("min_accuracy").schema
    assert (schema["minimum"], schema["maximum"]) == (0, 1)


@pytest.mark.parametrize("name", ["churn\n", "churn\r\n", "../churn", "_churn", "churn model"])
def test_the_model_name_param_refuses_unsafe_names(dags, name):
    from airflow.sdk.definitions.param import ParamValidationError

    param = dags["mlops_continuous_training"].params.get_param("model_name")
    assert param.resolve(value="demo_churn-classifier.v2") == "demo_churn-classifier.v2"
    with pytest.raises(ParamValidationError, match="does not match"):
        param.resolve(value=name)


def test_the_validation_suite_pins_the_columns_and_requires_a_label(dags):
    suite = dags["mlops_continuous_training"].get_task("validate").expectations
    by_type = {item["type"]: item["kwargs"] for item in suite}
    assert by_type["expect_table_columns_to_match_set"] == {
        "column_set": [
            "tenure_months", "monthly_spend", "support_calls", "usage_hours", "discount_rate", "{{ params.target }}",
        ],
        "exact_match": True,
    }  # fmt: skip
    assert {
        "type": "expect_column_values_to_not_be_null",
        "kwargs": {"column": "{{ params.target }}"},
    } in suite
