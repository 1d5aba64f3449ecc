"""
The deployment operators reject bad arguments when the DAG is parsed, saying what is allowed, and the same
arguments found bad once rendered fail the task at once (ConfigurationError, no retries).
"""

from __future__ import annotations

import pytest

from airflow_mlops.deploy_targets import LocalServerTarget
from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.operators.deployment import (
    DeployModelOperator,
    InfraValidateOperator,
    RollbackModelOperator,
)
from airflow_mlops.serving.canary import CanaryPolicy


def test_a_target_object_is_kept_as_given_and_deployed_with_its_settings():
    target = LocalServerTarget(port=6001)
    op = DeployModelOperator(task_id="deploy", model_name="churn", version=3, target=target)

    assert op.target is target  # stored as given (a template field); read when the task runs
    assert op._target(op.target).to_config() == target.to_config()
    assert target.to_config()["port"] == 6001
    assert "target" in op.template_fields


def test_templated_arguments_are_accepted_until_rendered():
    op = DeployModelOperator(
        task_id="deploy",
        model_name="{{ params.model_name }}",
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        target={"kind": "local", "port": "{{ params.port }}"},
    )

    assert op.version.startswith("{{")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_name": "bad/name"}, "not a valid model name"),
        ({"model_name": "churn\n"}, "not a valid model name"),  # "$" alone would accept the newline
        ({"version": "latest"}, "positive integer model version"),
        ({"target": {"kind": "heroku"}}, "Unknown deploy target kind"),
        ({"target": 5001}, "target must be a DeployTarget"),
        ({"smoke_rows": 0}, "smoke_rows must be a positive integer"),
        ({"drop_columns": "label"}, "drop_columns must be a list"),
        ({"alias": ""}, "alias must be a registry alias"),
        ({"ready_timeout": -1}, "ready_timeout"),
        ({"canary": {"percent": 0}}, "canary percent must be an integer from 1 to 99"),
        ({"canary": {"percent": 100}}, "canary percent must be an integer from 1 to 99"),
        ({"canary": {"percent": True}}, "canary percent"),
        ({"canary": {"bake_seconds": -1}}, "bake_seconds must be a non-negative number"),
        ({"canary": {"interval": 0}}, "canary interval must be a positive number"),
        ({"canary": {"max_error_rate": 1.5}}, "max_error_rate must be a share from 0 to 1"),
        ({"canary": {"max_p95_ms": 0}}, "max_p95_ms must be a positive number"),
        ({"canary": {"bake_secs": 5}}, r"Unknown canary setting\(s\) \['bake_secs'\]"),
        ({"canary": 10}, "canary must be a CanaryPolicy"),
        ({"target": {"kind": "kserve", "canary_traffic_percent": 10}}, "give sample_data"),
        ({"canary_percent": 10}, r"canary=CanaryPolicy\(\.\.\.\).*canary_percent= -> percent="),
        ({"bake_interval": 1}, "bake_interval= -> interval="),
    ],
)
def test_deploy_operator_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeployModelOperator(task_id="deploy", **{"model_name": "churn", "version": 1, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_data": ""}, "sample_data must be a snapshot URI"),
        ({"sample_rows": 0}, "sample_rows"),
        ({"max_latency_ms": 0}, "max_latency_ms"),
    ],
)
def test_infra_validate_operator_rejects_bad_arguments(kwargs, message):
    base = {"model_name": "churn", "version": 1, "sample_data": "/data/datasets/churn/abc#holdout"}
    with pytest.raises(ValueError, match=message):
        InfraValidateOperator(task_id="infra_validate", **{**base, **kwargs})


@pytest.mark.parametrize("reason", ["", "   "])
def test_rollback_needs_a_reason(reason):
    with pytest.raises(ValueError, match="reason is required"):
        RollbackModelOperator(task_id="rollback", model_name="churn", reason=reason)


def test_rollback_defaults_to_the_previous_champion_on_the_dags_own_target():
    op = RollbackModelOperator(task_id="rollback", model_name="churn", reason="{{ params.reason }}")

    assert op.version is None
    assert op.target == "local"  # built from the DAG, like the deploy task's; never read from the registry
    assert op.action == "rollback"


def test_the_rollback_dag_builds_the_deploy_tasks_target(monkeypatch):
    import runpy
    from pathlib import Path

    monkeypatch.setenv("MLOPS_SERVING_PORT", "6123")
    dags = Path(__file__).resolve().parents[3] / "dags"
    rollback = runpy.run_path(str(dags / "rollback.py"))["dag"].get_task("rollback")
    deploy = runpy.run_path(str(dags / "continuous_training.py"))["dag"].get_task("deploy")

    assert rollback.target == deploy.target == {"kind": "local", "port": 6123}


@pytest.mark.parametrize(
    "canary",
    [
        CanaryPolicy(percent=10, bake_seconds=300, max_error_rate=0.01),
        {"percent": 10, "bake_seconds": 300, "max_error_rate": 0.01},
    ],
    ids=["policy", "dict"],
)
@pytest.mark.parametrize("target", [{"kind": "kserve"}, {"kind": "local"}])
def test_a_canary_is_accepted_with_sample_data(canary, target):
    op = DeployModelOperator(
        task_id="deploy", model_name="churn", version=2, target=target, canary=canary,
        sample_data="/data/datasets/churn/abc#holdout",
    )  # fmt: skip

    assert op.canary == CanaryPolicy(percent=10, bake_seconds=300.0, interval=1.0, max_error_rate=0.01)
    assert (op.canary.percent, op.canary.bake_seconds, op.canary.max_error_rate) == (10, 300.0, 0.01)


def test_deferrable_defaults_to_the_operators_default_deferrable_setting():
    from airflow_mlops.version_compat import conf

    default = conf.getboolean("operators", "default_deferrable", fallback=False)

    assert DeployModelOperator(task_id="deploy", model_name="churn", version=1).deferrable is default
    assert RollbackModelOperator(task_id="rollback", model_name="churn", reason="r").deferrable is default


@pytest.mark.parametrize(
    ("operator", "rendered", "message"),
    [
        (DeployModelOperator, {"model_name": "bad/name"}, "not a valid model name"),
        (DeployModelOperator, {"target": {"kind": "local", "port": "not-a-port"}}, "invalid deploy target"),
        (DeployModelOperator, {"target": None}, "give the deploy target"),
        (InfraValidateOperator, {"target": '{"kind": "heroku"}'}, "Unknown deploy target kind"),
        (RollbackModelOperator, {"model_name": "churn ml"}, "not a valid model name"),
        (RollbackModelOperator, {"model_name": "churn\n"}, "not a valid model name"),
    ],
)
def test_arguments_found_bad_once_rendered_fail_without_retries(operator, rendered, message):
    kwargs = {"task_id": "t", "model_name": "{{ params.model }}", "version": 1}
    if operator is InfraValidateOperator:
        kwargs["sample_data"] = "/data/datasets/churn/abc#holdout"
    if operator is RollbackModelOperator:
        kwargs["reason"] = "bad"
    op = operator(**kwargs)
    op.model_name = "churn"
    for field, value in rendered.items():  # what Jinja rendered
        setattr(op, field, value)

    with pytest.raises(ConfigurationError, match=message) as err:
        op.execute({})

    assert isinstance(err.value, ValueError)
    assert err.value.retryable is False
