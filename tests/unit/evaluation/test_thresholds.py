"""Parse-time validation of the model operators: thresholds, names, versions. No server involved."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.operators.approval import ApproveModelOperator
from airflow_mlops.operators.evaluation import (
    EvaluateModelOperator,
    check_slices,
    parse_slices,
    parse_thresholds,
)
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


SLICES = {"column": "region", "metrics": {"accuracy_score": {"max_regression": 0.05}}, "min_rows": 30}


def test_slices_are_normalised_with_defaults_and_directions():
    assert parse_slices(None, "classifier") == []
    parsed = parse_slices({"column": "region", "metrics": {"f1_score": {"max_regression": 0}}}, "classifier")
    assert parsed == [
        {
            "column": "region",
            "metrics": {"f1_score": {"max_regression": 0.0, "greater_is_better": True}},
            "min_rows": 30,
        }
    ]
    from_json = parse_slices(
        '[{"column": "plan", "metrics": {"mean_absolute_error": {"max_regression": 2}}, "min_rows": 5}]',
        "regressor",
    )
    assert from_json[0]["metrics"]["mean_absolute_error"] == {
        "max_regression": 2.0,
        "greater_is_better": False,
    }


@pytest.mark.parametrize(
    ("slices", "message"),
    [
        ({**SLICES, "column": ""}, "must be the name of a holdout column"),
        ({**SLICES, "min_rows": 0}, "min_rows'] must be a whole number >= 1"),
        ({**SLICES, "min_rows": 2.5}, "min_rows'] must be a whole number >= 1"),
        ({**SLICES, "metrics": {}}, "must be a non-empty dict"),
        (
            {**SLICES, "metrics": {"roc_auc": {"max_regression": 0.1}}},
            "allowed: accuracy_score, precision_score",
        ),
        ({**SLICES, "metrics": {"accuracy_score": {"max_regression": -1}}}, "must be a number >= 0"),
        (
            {**SLICES, "metrics": {"accuracy_score": {"threshold": 0.7}}},
            "must be {'max_regression': number >= 0}",
        ),
        ({**SLICES, "segments": ["north"]}, "unknown keys ['segments']"),
        ([SLICES, "region"], "slices[1] must be a dict"),
        ("{region", "slices is a string but not valid JSON"),
    ],
)
def test_bad_slices_say_what_is_allowed(slices, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_slices(slices, "classifier")
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(slices=slices)  # at parse time


def test_templated_slices_are_checked_when_the_task_runs():
    evaluate(slices="{{ params.slices }}")


_Y = [1, 1, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize(
    ("regions", "candidate", "champion", "min_rows", "expected"),
    [
        pytest.param(
            ["a"] * 4 + ["b"] * 4, _Y, [1, 1, 0, 0, 0, 0, 1, 1], 2,
            {"a": ("pass", 1.0, 1.0), "b": ("pass", 1.0, 0.0)}, id="better everywhere",
        ),
        pytest.param(
            ["a"] * 4 + ["b"] * 4, [1, 1, 0, 0, 0, 0, 1, 1], _Y, 2,
            {"a": ("pass", 1.0, 1.0), "b": ("fail", 0.0, 1.0)}, id="worse on one slice",
        ),
        pytest.param(
            ["a"] * 6 + ["b"] * 2, [1, 1, 0, 0, 1, 1, 1, 1], _Y, 3,
            {"a": ("pass", 1.0, 1.0), "b": ("not enough rows", None, None)}, id="slices with too few rows",
        ),
        pytest.param(
            ["a"] * 4 + [None] * 4, _Y, None, 1,
            {"a": ("no champion", 1.0, None), "(missing)": ("no champion", 1.0, None)}, id="no champion",
        ),
    ],
)  # fmt: skip
def test_slice_segments_are_decided_per_metric(regions, candidate, champion, min_rows, expected):
    import pandas as pd

    data = pd.DataFrame({"region": regions, "label": _Y})
    spec = parse_slices({"column": "region", "metrics": {"accuracy_score": {"max_regression": 0.1}},
                         "min_rows": min_rows}, "classifier")  # fmt: skip
    rows = check_slices(spec, data, "label", candidate, champion)
    assert {row["segment"]: (row["status"], row["candidate"], row["champion"]) for row in rows} == expected
    assert all(row["passed"] is (row["status"] != "fail") for row in rows)
