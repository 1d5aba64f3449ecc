"""The threshold spec of the gate: normalised, and every mistake named with what is allowed. No Airflow."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.evaluation.thresholds import parse_thresholds

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
