"""EvaluateModelOperator's arguments: checked when the DAG is parsed, and again once rendered. No server."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.exceptions import ConfigurationError
from tests.support.evaluation import BAD_SLICES, evaluate


def test_operator_rejects_bad_thresholds_at_parse_time():
    with pytest.raises(ValueError, match="Unknown metric 'accuracy'"):
        evaluate(thresholds={"accuracy": {"threshold": 0.7}})
    with pytest.raises(ValueError, match="model_type must be one of"):
        evaluate(model_type="clusterer")


def test_templated_thresholds_are_validated_when_the_task_runs():
    op = evaluate(thresholds="{{ params.thresholds }}", mlflow_conn_id="no_such_connection")
    op.thresholds = '{"accuracy_score": {"threshold": 0.7, "min_absolute_change": -1}}'  # as rendered
    # Validation comes before any connection lookup: the error is about thresholds, not the connection.
    with pytest.raises(ValueError, match="min_absolute_change'\\] must be >= 0") as err:
        op.execute({})
    assert isinstance(err.value, ConfigurationError)  # a rendered value: fails at once, no retries
    assert err.value.retryable is False
    assert err.value.model == "churn"


@pytest.mark.parametrize(("slices", "message"), BAD_SLICES)
def test_bad_slices_are_refused_at_parse_time(slices, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(slices=slices)


def test_templated_slices_are_checked_when_the_task_runs():
    evaluate(slices="{{ params.slices }}")
    op = evaluate(slices="{{ params.slices }}", mlflow_conn_id="no_such_connection")
    op.slices = '{"column": "region", "metrics": {"roc_auc": {"max_regression": 0.1}}}'  # as rendered
    with pytest.raises(ConfigurationError, match="cannot be checked per slice"):
        op.execute({})


def test_a_rendered_empty_candidate_is_a_configuration_error():
    op = evaluate(candidate_version="{{ params.version }}", mlflow_conn_id="no_such_connection")
    op.candidate_version = ""  # as rendered
    with pytest.raises(ConfigurationError, match="candidate_version and candidate_model_uri are empty"):
        op.execute({})
