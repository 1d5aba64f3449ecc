"""``wait_for_release`` is checked when the DAG is parsed: a duration, 0 to not wait, None for the default."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_mlops.operators.deployment import DeployModelOperator, RollbackModelOperator


def test_a_rollback_waits_for_the_configured_time_unless_told_otherwise():
    assert RollbackModelOperator(task_id="r", model_name="m", reason="bad").wait_for_release is None
    told = RollbackModelOperator(
        task_id="r", model_name="m", reason="bad", wait_for_release=timedelta(minutes=5)
    )
    assert told.wait_for_release == 300.0


def test_a_deploy_does_not_wait_by_default():
    assert DeployModelOperator(task_id="d", model_name="m", version=1).wait_for_release == 0.0


@pytest.mark.parametrize("wait", [-1, "10m", True, timedelta(seconds=-5)])
def test_a_wait_that_is_not_a_duration_is_refused_at_parse_time(wait):
    with pytest.raises(ValueError, match="wait_for_release must be a timedelta or a number of seconds"):
        RollbackModelOperator(task_id="r", model_name="m", reason="bad", wait_for_release=wait)
