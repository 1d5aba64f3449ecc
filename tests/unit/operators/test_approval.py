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
