"""
What every model operator shares: names and versions checked when the DAG is parsed unless templated, and
checked again once rendered, where a bad value is a ConfigurationError (no retries). No server.
"""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator
from tests.support.evaluation import evaluate


@pytest.mark.parametrize("name", ["", "  ", "team/churn", "churn:v1", "..churn", "churn model", "a" * 257])
def test_invalid_model_names_are_rejected_by_every_model_operator(name):
    with pytest.raises(ValueError, match="letters, digits"):
        RegisterModelOperator(task_id="register", model_name=name, model_uri="models:/m-123")
    with pytest.raises(ValueError, match="letters, digits"):
        PromoteModelOperator(task_id="promote", model_name=name, version=1)
    with pytest.raises(ValueError, match="letters, digits"):
        evaluate(model_name=name)
    with pytest.raises(ValueError, match="letters, digits"):
        ApproveModelOperator(task_id="approve", model_name=name, candidate_version=1)


def test_versions_and_uris_are_checked_at_parse_time_unless_templated():
    with pytest.raises(ValueError, match="positive integer model version"):
        PromoteModelOperator(task_id="promote", model_name="churn", version="latest")
    with pytest.raises(ValueError, match="positive integer model version"):
        evaluate(candidate_version="0")
    with pytest.raises(ValueError, match="candidate_version .* or candidate_model_uri"):
        evaluate(candidate_version=None)
    with pytest.raises(ValueError, match="model_uri must be a non-empty string"):
        RegisterModelOperator(task_id="register", model_name="churn", model_uri="")
    with pytest.raises(ValueError, match="tags must be a dict"):
        RegisterModelOperator(task_id="register", model_name="churn", model_uri="models:/m-1", tags=["a"])
    # Templated values are accepted now and validated after rendering.
    PromoteModelOperator(task_id="p", model_name="{{ params.model_name }}", version="{{ params.version }}")
    evaluate(candidate_version="{{ ti.xcom_pull('register')['version'] }}")


@pytest.mark.parametrize(
    ("make", "rendered", "message"),
    [
        pytest.param(
            lambda: PromoteModelOperator(
                task_id="promote", model_name="churn", version="{{ v }}", mlflow_conn_id="no_such_connection"
            ),
            {"version": "latest"}, "positive integer model version", id="promote: version",
        ),
        pytest.param(
            lambda: PromoteModelOperator(
                task_id="promote", model_name="{{ m }}", version=1, mlflow_conn_id="no_such_connection"
            ),
            {"model_name": "team/churn"}, "letters, digits", id="promote: model name",
        ),
        pytest.param(
            lambda: RegisterModelOperator(
                task_id="register", model_name="{{ m }}", model_uri="models:/m-1",
                mlflow_conn_id="no_such_connection",
            ),
            {"model_name": "churn model"}, "letters, digits", id="register: model name",
        ),
        pytest.param(
            lambda: RegisterModelOperator(
                task_id="register", model_name="churn", model_uri="models:/m-1", tags="{{ t }}",
                mlflow_conn_id="no_such_connection",
            ),
            {"tags": "[1, 2]"}, "tags must render to a dict", id="register: tags",
        ),
        pytest.param(
            lambda: RegisterModelOperator(
                task_id="register", model_name="churn", model_uri="{{ u }}", mlflow_conn_id="no_such_connection"
            ),
            {"model_uri": "  "}, "model_uri must be a non-empty string", id="register: model uri",
        ),
        pytest.param(
            lambda: evaluate(candidate_version="{{ v }}", mlflow_conn_id="no_such_connection"),
            {"candidate_version": "0"}, "positive integer model version", id="evaluate: version",
        ),
        pytest.param(
            lambda: evaluate(holdout_data="{{ h }}", mlflow_conn_id="no_such_connection"),
            {"holdout_data": ""}, "holdout_data of model 'churn' rendered empty", id="evaluate: holdout",
        ),
    ],
)  # fmt: skip
def test_rendered_arguments_that_are_invalid_fail_without_retries(make, rendered, message):
    op = make()
    for field, value in rendered.items():
        setattr(op, field, value)
    # Checked before any connection lookup: the error is about the argument, not the connection.
    with pytest.raises(ConfigurationError, match=message) as err:
        op.execute({})
    assert isinstance(err.value, ValueError)
    assert err.value.retryable is False


def test_a_rendered_approval_request_for_a_bad_version_is_not_made():
    op = ApproveModelOperator(
        task_id="approve",
        model_name="churn",
        candidate_version="{{ v }}",
        mlflow_conn_id="no_such_connection",
    )
    op.candidate_version = "-1"  # as rendered
    with pytest.raises(ConfigurationError, match="positive integer model version") as err:
        op.prepare_request()
    assert err.value.model == "churn"
