"""
Monitoring a served model whose rows are logged in a SQL database (``sql_conn_id``): drift, data quality and
live accuracy computed by a real PostgreSQL and by SQLite, against a real MLflow server, with the verdicts the
capture path gives on the same rows; arguments refused before any query.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from airflow_mlops.exceptions import ConfigurationError, DatasetError
from airflow_mlops.operators.monitoring import MONITORING_VERDICT_TAG, MonitorModelOperator
from airflow_mlops.serving.capture import CaptureWriter
from tests.conftest import set_connection
from tests.support.context import context_for
from tests.support.monitoring import customers, make_champion
from tests.support.postgres import postgres_server  # noqa: F401  (session fixture)

pytestmark = pytest.mark.integration
MODEL = "sql_monitored_churn"


def logged(frame, batch: str, wrong: bool = False):
    """Rows as a serving log holds them: inputs, the prediction (the label rule: a perfect model), the label."""
    rows = frame.assign(prediction=frame["label"], batch=batch)
    return rows.assign(label=1 - rows["label"]) if wrong else rows


@pytest.fixture(scope="module")
def served(mlflow_server, postgres_server, tmp_path_factory):  # noqa: F811  (the fixture imported above)
    import pandas as pd

    root = tmp_path_factory.mktemp("sql-monitoring")
    version = make_champion(mlflow_server.uri, root, MODEL)
    shifted = customers(400, seed=1, spend_shift=40.0)
    like = customers(400, seed=2)
    rows = pd.concat([logged(shifted, "shifted"), logged(like, "like"), logged(like, "wrong", wrong=True)])
    engine = postgres_server.load("serving", {"served_rows": rows, "training": customers(1000, seed=0)})
    engine.dispose()
    sqlite_path = root / "serving.db"
    with sqlite3.connect(sqlite_path) as db:
        rows.to_sql("served_rows", db, index=False)
    return SimpleNamespace(
        root=root, version=version, shifted=shifted, mlflow=mlflow_server,
        postgres=postgres_server.connection("serving"), sqlite=str(sqlite_path),
    )  # fmt: skip


def monitor(**kwargs):
    op = MonitorModelOperator(
        task_id="monitor", model_name=MODEL, min_records=100, aws_conn_id=None, **kwargs
    )
    return op.execute(context_for(op))


def test_postgres_rows_are_degraded_as_their_captures_are(served):
    set_connection("serving", **served.postgres)

    result = monitor(
        sql_conn_id="serving", query="SELECT * FROM served_rows WHERE batch = 'shifted'",
        reference_table="training", exclude_columns=["batch"],
    )  # fmt: skip
    # The same rows captured as the serving side writes them, monitored in the worker.
    writer = CaptureWriter(str(served.root))
    for index, row in enumerate(served.shifted.drop(columns=["label"]).to_dict("records")):
        answer = json.dumps({"predictions": [int(served.shifted["label"].iloc[index])]}).encode()
        body = json.dumps({"dataframe_records": [row]}).encode()
        writer.submit(MODEL, served.version, f"shifted-{index}", 200, body, answer)
    writer.close()
    in_memory = monitor(capture_uri=str(served.root))

    assert result["engine"] == "sql"
    assert in_memory["engine"] == "memory"
    assert set(result) == set(in_memory)
    assert result["verdict"] == in_memory["verdict"] == "degraded"
    assert result["records"] == in_memory["records"] == 400
    for check in ("feature_drift", "prediction_drift"):
        assert result[check]["drifted_features"] == in_memory[check]["drifted_features"], check
    assert result["feature_drift"]["drifted_features"] == ["monthly_spend"]
    assert result["prediction_drift"]["drift"] is True
    assert result["data_quality"]["success"] is True
    assert result["performance"]["value"] == 1.0  # the label logged next to each prediction
    assert result["reasons"][:2] == in_memory["reasons"][:2]
    client = MlflowClient(served.mlflow.uri)
    run = client.get_run(result["monitoring_run_id"])
    assert run.data.metrics["drift.monthly_spend.psi"] > 0.2
    assert (
        json.loads(client.get_registered_model(MODEL).tags[MONITORING_VERDICT_TAG])["verdict"] == "degraded"
    )


def test_sqlite_rows_like_the_training_snapshot_are_healthy_until_the_labels_disagree(served):
    set_connection("serving_log", conn_type="sqlite", host=served.sqlite)
    window = {"window": timedelta(hours=1), "window_end": datetime.now(UTC).isoformat()}

    healthy = monitor(
        sql_conn_id="serving_log", query="SELECT * FROM served_rows WHERE batch = 'like'",
        exclude_columns=["batch"], **window,
    )  # fmt: skip
    assert healthy["verdict"] == "healthy", healthy["reasons"]
    assert healthy["window"]["end"] == window["window_end"]
    assert healthy["performance"]["labelled"] == 400

    wrong = monitor(
        sql_conn_id="serving_log", query="SELECT * FROM served_rows WHERE batch = 'wrong'",
        exclude_columns=["batch"], **window,
    )  # fmt: skip
    assert wrong["verdict"] == "degraded"
    assert wrong["performance"]["value"] == 0.0
    assert any(r.startswith("live accuracy_score 0 vs") for r in wrong["reasons"])

    # A feature logged as null, and a suite of the user's own (run by Great Expectations in the database).
    nulls = monitor(
        sql_conn_id="serving_log",
        query="SELECT tenure_months, NULL AS monthly_spend, prediction, label FROM served_rows WHERE batch = 'like'",
        expectations=None, **window,
    )  # fmt: skip
    assert nulls["data_quality"]["failed"][0]["expectation"] == "expect_column_values_to_not_be_null"
    assert nulls["data_quality"]["failed"][0]["observed"]["unexpected_count"] == 400
    assert "data quality: expect_column_values_to_not_be_null(monthly_spend)" in nulls["reasons"]
    bounded = {"column": "tenure_months", "min_value": 0, "max_value": 50}
    own = monitor(
        sql_conn_id="serving_log", table="served_rows", exclude_columns=["batch"],
        expectations=[{"type": "expect_column_values_to_be_between", "kwargs": bounded}], **window,
    )  # fmt: skip
    assert own["data_quality"]["success"] is False
    assert own["data_quality"]["failed"][0]["column"] == "tenure_months"

    quiet = monitor(sql_conn_id="serving_log", query="SELECT * FROM served_rows WHERE batch = 'none'")
    assert quiet["verdict"] == "not_enough_traffic"
    assert quiet["feature_drift"] is None

    with pytest.raises(DatasetError, match="Cannot read table no_such_log") as err:
        monitor(sql_conn_id="serving_log", table="no_such_log")
    assert err.value.retryable is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"sql_conn_id": "db", "table": "t", "capture_uri": "/c"},
            "capture_uri and sql_conn_id exclude each other",
        ),
        (
            {"sql_conn_id": "db", "table": "t", "labels_uri": "/l"},
            "labels_uri and sql_conn_id exclude each other",
        ),
        ({"table": "t"}, "table need sql_conn_id"),
        ({"sql_conn_id": "db"}, "exactly one of table or query"),
        ({"sql_conn_id": "db", "query": " "}, "query must be a non-empty string"),
        ({"sql_conn_id": "db", "table": "t", "wait_for_traffic": 60}, "wait_for_traffic and sql_conn_id"),
    ],
)
def test_bad_arguments_are_refused_at_parse_time(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        MonitorModelOperator(task_id="monitor", model_name=MODEL, **kwargs)


def test_a_query_rendered_empty_fails_before_the_registry_or_the_database_is_asked():
    op = MonitorModelOperator(
        task_id="monitor", model_name=MODEL, sql_conn_id="no_such_connection", query="{{ params.q }}"
    )
    op.query = ""  # as the template rendered
    with pytest.raises(ConfigurationError, match="query must be a non-empty string, got '' once rendered"):
        op.execute({})
