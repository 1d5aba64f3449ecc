"""ApproveModelOperator's request form, as the DAG defines it. No server."""

from __future__ import annotations

import pytest

from airflow_mlops.operators.approval import ApproveModelOperator


def test_approval_operator_rejects_by_default_and_offers_a_comment_field():
    op = ApproveModelOperator(task_id="approve", model_name="churn", candidate_version="{{ v }}")
    assert op.defaults == ["Reject"]
    assert op.options == ["Approve", "Reject"]
    assert op.serialized_params["comment"]["schema"]["type"] == ["null", "string"]
    assert {"model_name", "candidate_version", "report", "subject", "body"} <= set(op.template_fields)


def test_self_approval_is_refused_unless_the_dag_allows_it():
    assert (
        ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1).allow_self_approval
        is False
    )
    with pytest.raises(ValueError, match="allow_self_approval must be True or False, got 'yes'"):
        ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1, allow_self_approval="yes")


def test_a_retry_adopts_the_earlier_answer_unless_the_dag_turns_it_off():
    assert (
        ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1).adopt_earlier_answer
        is True
    )
    with pytest.raises(ValueError, match="adopt_earlier_answer must be True or False, got 1"):
        ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1, adopt_earlier_answer=1)


def test_the_approval_retries_once_at_once_so_a_raced_answer_is_adopted_unless_the_dag_says_otherwise():
    from datetime import timedelta

    from airflow.sdk import DAG

    plain = ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1)
    assert (plain.retries, plain.retry_delay) == (1, timedelta(0))
    given = ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1, retries=0)
    assert given.retries == 0
    with DAG("d", schedule=None, default_args={"retries": 3, "retry_delay": timedelta(minutes=1)}):
        from_dag = ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1)
    assert (from_dag.retries, from_dag.retry_delay) == (3, timedelta(minutes=1))
    with DAG("e", schedule=None, default_args={"retry_delay": timedelta(seconds=7)}):
        delay_only = ApproveModelOperator(task_id="a", model_name="churn", candidate_version=1)
    assert (delay_only.retries, delay_only.retry_delay) == (1, timedelta(seconds=7))
    asks_again = ApproveModelOperator(
        task_id="a", model_name="churn", candidate_version=1, adopt_earlier_answer=False
    )
    assert asks_again.retries == 0  # Airflow's default_task_retries


def test_the_request_says_how_long_it_waits_and_how_to_answer_from_a_shell():
    from datetime import timedelta
    from types import SimpleNamespace

    from airflow_mlops.operators.approval import _duration, _shell_hint

    assert _duration(timedelta(days=2)) == "2 days"
    assert _duration(timedelta(minutes=90)) == "1 hour 30 minutes"
    assert _duration(timedelta(days=1, hours=6, seconds=5)) == "1 day 6 hours"
    run = SimpleNamespace(dag_id="churn_training", run_id="manual__2026-01-01T00:00:00+00:00")
    assert _shell_hint({"dag_run": run}) == (
        "From a shell: `airflow-mlops approve churn_training 'manual__2026-01-01T00:00:00+00:00' --as USER "
        "--comment '...'` (or `reject`)."
    )
    assert _shell_hint(None) == ""
