"""The deployment operators reject bad arguments when the DAG is parsed, saying what is allowed."""

from __future__ import annotations

import pytest

from airflow_mlops.deploy_targets import LocalServerTarget
from airflow_mlops.operators.deployment import (
    DeployModelOperator,
    InfraValidateOperator,
    RollbackModelOperator,
    percentile,
)


def test_a_target_object_is_kept_as_its_json_config():
    op = DeployModelOperator(
        task_id="deploy", model_name="churn", version=3, target=LocalServerTarget(port=6001)
    )

    assert op.target["kind"] == "local"
    assert op.target["port"] == 6001
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
        ({"version": "latest"}, "positive integer model version"),
        ({"target": {"kind": "heroku"}}, "Unknown deploy target kind"),
        ({"target": 5001}, "target must be a DeployTarget"),
        ({"smoke_rows": 0}, "smoke_rows must be a positive integer"),
        ({"drop_columns": "label"}, "drop_columns must be a list"),
        ({"alias": ""}, "alias must be a registry alias"),
        ({"ready_timeout": -1}, "ready_timeout"),
        ({"canary_percent": 0}, "canary_percent must be an integer from 1 to 99"),
        ({"canary_percent": 100}, "canary_percent must be an integer from 1 to 99"),
        ({"canary_percent": True}, "canary_percent"),
        ({"bake_seconds": -1}, "bake_seconds must be a non-negative number"),
        ({"bake_interval": 0}, "bake_interval must be a positive number"),
        ({"max_error_rate": 1.5}, "max_error_rate must be a share from 0 to 1"),
        ({"max_latency_ms": 0}, "max_latency_ms must be a positive number"),
        ({"canary_percent": 10, "sample_data": "/d#holdout"}, "target local cannot roll out a canary"),
        ({"target": {"kind": "kserve", "canary_traffic_percent": 10}}, "give sample_data"),
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


def test_rollback_defaults_to_the_previous_champion_on_the_recorded_target():
    op = RollbackModelOperator(task_id="rollback", model_name="churn", reason="{{ params.reason }}")

    assert op.version is None
    assert op.target is None
    assert op.action == "rollback"


def test_percentiles_are_nearest_rank():
    values = [10.0, 1.0, 5.0, 3.0]

    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == 10.0
    assert percentile([7.0], 95) == 7.0


def test_a_canary_on_kserve_is_accepted_with_sample_data():
    op = DeployModelOperator(
        task_id="deploy", model_name="churn", version=2, target={"kind": "kserve"}, canary_percent=10,
        sample_data="/data/datasets/churn/abc#holdout", bake_seconds=300, max_error_rate=0.01,
    )  # fmt: skip

    assert (op.canary_percent, op.bake_seconds, op.max_error_rate) == (10, 300.0, 0.01)
