"""The threshold spec of the gate: normalised, and every mistake named with what is allowed. No Airflow."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.evaluation.thresholds import (
    CustomMetric,
    custom_metrics,
    parse_thresholds,
    resolve_model_type,
)

GOOD = {"accuracy_score": {"threshold": 0.7, "min_absolute_change": 0.0}}


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
        ({"accuracy": {"threshold": 0.7}}, "classifier", "classifier: accuracy_score, f1_score"),
        ({"r2_score": {"threshold": 0.7}}, "classifier", "Unknown metric 'r2_score'"),
        ({"accuracy_score": {"threshold": 0.7}}, "regressor", "regressor: max_error, mean_absolute_error"),
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


@pytest.mark.parametrize(
    ("thresholds", "model_type"),
    [
        ({"accuracy_score": {"threshold": 0.7}}, "classifier"),
        ({"root_mean_squared_error": {"threshold": 50}, "r2_score": {"threshold": 0.3}}, "regressor"),
        ('{"mean_absolute_error": {"threshold": 40}}', "regressor"),
        ({"score": {"threshold": 0.5}}, None),  # both types have it: the model's signature decides
    ],
)
def test_the_model_type_comes_from_the_gated_metrics(thresholds, model_type):
    assert resolve_model_type(None, thresholds) == model_type


def test_metrics_of_both_types_are_refused_with_the_metrics_of_each_type():
    with pytest.raises(
        ValueError, match="mix classifier metrics \\['accuracy_score'\\] and regressor"
    ) as err:
        resolve_model_type(None, {"accuracy_score": {"threshold": 0.7}, "r2_score": {"threshold": 0.1}})
    assert "regressor: max_error" in str(err.value)


def cost(predictions, targets, metrics):
    return float(abs(predictions - targets).sum())


def test_a_custom_metric_is_gated_with_its_own_direction_and_listed_as_allowed():
    custom = custom_metrics([CustomMetric("business_cost", cost, greater_is_better=False)])
    assert custom == {"business_cost": False}
    parsed = parse_thresholds({"business_cost": {"threshold": 1000}}, "regressor", custom)
    assert parsed["business_cost"]["greater_is_better"] is False
    assert resolve_model_type(None, {"business_cost": {"threshold": 1}}, custom) is None
    with pytest.raises(ValueError, match="custom \\(extra_metrics\\): business_cost"):
        parse_thresholds({"cost": {"threshold": 1}}, "regressor", custom)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([CustomMetric("r2_score", cost, True)], "name of a built-in metric"),
        ([CustomMetric("c", cost, True), CustomMetric("c", cost, False)], "Two extra_metrics are named 'c'"),
        ([cost], "is not a CustomMetric"),
        ("business_cost", "must be a list"),
    ],
)
def test_bad_custom_metrics_say_what_is_expected(extra, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        custom_metrics(extra)


def test_a_custom_metric_needs_a_callable_a_name_and_a_direction():
    with pytest.raises(ValueError, match="eval_fn must be callable"):
        CustomMetric("cost", "cost", False)
    with pytest.raises(ValueError, match="greater_is_better must be true or false"):
        CustomMetric("cost", cost, "no")
    with pytest.raises(ValueError, match="must be a word"):
        CustomMetric("business cost", cost, False)
