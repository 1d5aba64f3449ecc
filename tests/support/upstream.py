"""A stand-in upstream task, and the check that a result rendered into a field is refused at execute."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import DAG, BaseOperator

from airflow_mlops.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class Upstream(BaseOperator):
    """A task whose result the operators under test take (never run here)."""

    def execute(self, context):
        return {}


def assert_refused_at_execute(make: Callable[[Any], BaseOperator], rendered: Mapping[str, Any], message: str):
    """
    ``make(upstream.output)`` parses; once *rendered* is set on it, as Airflow renders an upstream result into
    the fields, ``execute`` fails with a ConfigurationError (not retried) matching *message*, before any
    connection is looked up.
    """
    with DAG("bad", schedule=None, start_date=datetime(2026, 1, 1)):
        op = make(Upstream(task_id="up").output)  # parses: nothing is known yet
    op.mlflow_conn_id = "no_such_connection"  # the argument is refused before any connection is looked up
    for field, value in rendered.items():
        setattr(op, field, value)

    with pytest.raises(ConfigurationError, match=message) as err:
        op.execute({})
    assert err.value.retryable is False
