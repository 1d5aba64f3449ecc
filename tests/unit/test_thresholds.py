"""Parse-time validation of the model operators: thresholds, names, versions. No server involved."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.evaluation import EvaluateModelOperator, parse_thresholds
from airflow_mlops.operators.registry import PromoteModelOperator, RegisterModelOperator

GOOD = {"accuracy_score": {"threshold": 0.7, "min_absolute_change": 0.0}}


def evaluate(**overrides):
    kwargs = {
        "task_id": "evaluate",
        "model_name": "churn",
        "candidate_version": "3",
        "holdout_data": "s3://bucket/datasets/churn/abc#holdout",
        "thresholds": GOOD,
    }
    kwargs.update(overrides)
    return EvaluateModelOperator(**kwargs)


def test_thresholds_are_normalised_with_known_directions():
    parsed = parse_thresholds(
        {"accuracy_score": {"threshold": 1, "min_relative_change": 0}, "log_loss": {"threshold": 0.5}},
        "classifier",
    )
    assert parsed["accuracy_score"] == {
        "threshold": 1.0,
        "min_absolute_change": None,
        "min_relative_change": 0.0,
        "greater_is_better": True,
    }
    assert parsed["log_loss"]["greater_is_better"] is False


def test_explicit_direction_wins_over_the_table():
    parsed = parse_thresholds({"r2_score": {"threshold": 0.1, "greater_is_better": False}}, "regressor")
    assert parsed["r2_score"]["greater_is_better"] is False


@pytest.mark.parametrize(
    ("thresholds", "model_type", "message"),
    [
        ({"accuracy": {"threshold": 0.7}}, "classifier", "allowed: accuracy_score"),
        ({"r2_score": {"threshold": 0.7}}, "classifier", "Unknown metric 'r2_score'"),
        ({"accuracy_score": {"threshold": 0.7}}, "regressor", "allowed: max_error"),
        ({"accuracy_score": {"min_absolute_change": -0.1}}, "classifier", "must be >= 0"),
        ({"accuracy_score": {"min_relative_change": 1.5}}, "classifier", "between 0 and 1"),
        ({"accuracy_score": {"treshold": 0.7}}, "classifier", "unknown keys ['treshold']"),
        ({"accuracy_score": {"greater_is_better": True}}, "classifier", "sets no threshold"),
        ({"accuracy_score": {"threshold": "high"}}, "classifier", "must be a number"),
        ({"accuracy_score": {"threshold": float("nan")}}, "classifier", "finite number"),
        ({"accuracy_score": {"threshold": 0.7, "greater_is_better": "yes"}}, "classifier", "true or false"),
        ({"accuracy_score": 0.7}, "classifier", "must be a dict"),
        ({}, "classifier", "non-empty dict"),
        ("{not json", "classifier", "not valid JSON"),
        (GOOD, "ranker", "model_type must be one of ['classifier', 'regressor']"),
    ],
)
def test_bad_thresholds_say_what_is_allowed(thresholds, model_type, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_thresholds(thresholds, model_type)


def test_thresholds_from_a_rendered_template_are_parsed():
    assert parse_thresholds('{"f1_score": {"threshold": 0.5}}', "classifier")["f1_score"]["threshold"] == 0.5
    # what a plain "{{ params.thresholds }}" renders a dict param to
    rendered = str({"f1_score": {"threshold": 0.5, "greater_is_better": True}})
    assert parse_thresholds(rendered, "classifier")["f1_score"]["greater_is_better"] is True


def test_operator_rejects_bad_thresholds_at_parse_time():
    with pytest.raises(ValueError, match="Unknown metric 'accuracy'"):
        evaluate(thresholds={"accuracy": {"threshold": 0.7}})
    with pytest.raises(ValueError, match="model_type must be one of"):
        evaluate(model_type="clusterer")


def test_templated_thresholds_are_validated_when_the_task_runs():
    op = evaluate(thresholds="{{ params.thresholds }}", mlflow_conn_id="no_such_connection")
    op.thresholds = '{"accuracy_score": {"threshold": 0.7, "min_absolute_change": -1}}'  # as rendered
    # Validation comes before any connection lookup: the error is about thresholds, not the connection.
    with pytest.raises(ValueError, match="min_absolute_change'\\] must be >= 0"):
        op.execute({})


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


def test_approval_operator_rejects_by_default_and_offers_a_comment_field():
    op = ApproveModelOperator(task_id="approve", model_name="churn", candidate_version="{{ v }}")
    assert op.defaults == ["Reject"]
    assert op.options == ["Approve", "Reject"]
    assert op.serialized_params["comment"]["schema"]["type"] == ["null", "string"]
    assert {"model_name", "candidate_version", "report", "subject", "body"} <= set(op.template_fields)
