"""
ReplayTrafficOperator rejects bad arguments when the DAG is parsed, saying what is allowed; the same arguments
found bad once rendered fail the task at once (ConfigurationError, no retries).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.operators.replay import ReplayTrafficOperator
from tests.support.context import context_for


def replay(**kwargs) -> ReplayTrafficOperator:
    return ReplayTrafficOperator(task_id="replay", **{"model_name": "churn", "version": 4, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_name": "../churn"}, "not a valid model name"),
        ({"version": "latest"}, "version"),
        ({"since": "yesterday"}, "since must be an ISO 8601 time"),
        ({"until": "2026-12-05T00:00:00"}, "until must carry a time zone"),
        ({"window": 0}, "window must be positive"),
        ({"sample_size": 0}, "sample_size must be a positive integer"),
        ({"prediction_kind": "ranking"}, "prediction_kind must be one of auto, classification, regression"),
        ({"max_disagreement": 5}, "max_disagreement must be between 0 and 1"),
        (
            {"prediction_kind": "regression", "max_disagreement": 0.1},
            "max_disagreement applies to class labels",
        ),
        ({"target": {"kind": "nowhere"}}, "nowhere"),
        ({"request_timeout": 0}, "request_timeout must be a positive number"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        replay(**kwargs)


def test_templated_arguments_wait_until_rendered():
    op = replay(
        model_name="{{ params.model_name }}", version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        since="{{ data_interval_start }}", until="{{ data_interval_end }}", segment_column="{{ params.segment }}",
    )  # fmt: skip

    assert op.since == "{{ data_interval_start }}"
    assert {"model_name", "version", "since", "until", "target", "segment_column"} <= set(op.template_fields)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("since", "the day before", "since must be an ISO 8601 time"),
        ("until", "2026-12-05T00:00:00", "until must carry a time zone"),
        ("model_name", "bad name!", "not a valid model name"),
    ],
)
def test_arguments_found_bad_once_rendered_fail_without_retries(field, value, message):
    op = replay(since="{{ data_interval_start }}", window=timedelta(hours=6))
    setattr(op, field, value)  # what the template rendered to

    with pytest.raises(ConfigurationError, match=message) as err:
        op.execute(context_for(op))

    assert not err.value.retryable


def test_a_window_that_ends_before_it_starts_is_refused():
    op = replay(since="2026-12-05T00:00:00+00:00", until="2026-12-04T00:00:00+00:00")

    with pytest.raises(ConfigurationError, match="replay window of model 'churn' is empty"):
        op.execute(context_for(op))


def test_every_try_of_a_task_instance_draws_with_the_same_seed_and_another_run_with_another():
    op = replay()

    first = op._seed(context_for(op, run_id="scheduled__2026-12-05", try_number=1))
    retry = op._seed(context_for(op, run_id="scheduled__2026-12-05", try_number=2))
    next_run = op._seed(context_for(op, run_id="scheduled__2026-12-06", try_number=1))

    assert first == retry
    assert first != next_run
