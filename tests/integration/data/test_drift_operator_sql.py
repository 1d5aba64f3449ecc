"""
DriftCheckOperator on SQL data (``sql_conn_id`` with tables or queries): computed in a real PostgreSQL and in
SQLite, with the verdicts the snapshot path gives on the same rows, the report stored and returned as there,
and arguments refused before any query.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

import pytest
from airflow.sdk import DAG, BaseOperator

from airflow_mlops.exceptions import (
    ConfigurationError,
    ConnectionSetupError,
    DataDriftError,
    DatasetError,
    ServiceUnavailableError,
)
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from tests.conftest import free_port, set_connection
from tests.support.drift_data import frames
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration
ROWS = 20_000


@pytest.fixture(scope="module")
def warehouse(postgres_server):
    reference, current = frames(seed=3, rows=ROWS)
    engine = postgres_server.load("warehouse", {"customers_2025": reference, "customers_2026": current})
    engine.dispose()
    return postgres_server.connection("warehouse"), reference, current


@pytest.fixture
def sqlite_warehouse(tmp_path):
    reference, current = frames(seed=4, rows=4_000)
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        reference.to_sql("reference", db, index=False)
        current.to_sql("current", db, index=False)
    set_connection("lake", conn_type="sqlite", host=str(path))
    return reference, current


def snapshot(tmp_path, data_root, name, frame) -> str:
    source = tmp_path / f"{name}.csv"
    frame.to_csv(source, index=False)
    return IngestDatasetOperator(
        task_id="ingest", dataset_name="customers", source=str(source), data_root=str(data_root)
    ).execute(context={})["uri"]


def test_postgres_tables_give_the_snapshot_verdicts_and_report(warehouse, tmp_path, data_root):
    connection, reference, current = warehouse
    set_connection("warehouse", **connection)

    summary = DriftCheckOperator(
        task_id="drift", sql_conn_id="warehouse", query="SELECT * FROM customers_2026",
        reference_table="customers_2025", on_drift="continue", data_root=str(data_root),
    ).execute(context={})  # fmt: skip
    in_memory = DriftCheckOperator(
        task_id="drift", dataset_uri=snapshot(tmp_path, data_root, "cur", current),
        reference_uri=snapshot(tmp_path, data_root, "ref", reference), on_drift="continue",
    ).execute(context={})  # fmt: skip

    assert set(summary) == set(in_memory)
    assert summary["drift"] is True
    assert summary["drifted_features"] == in_memory["drifted_features"]
    assert set(summary["drifted_features"]) >= {"tenure", "plan", "spend"}
    for feature, info in in_memory["features"].items():
        assert summary["features"][feature]["exceeded"] == info["exceeded"], feature
        assert summary["features"][feature]["rows"] == info["rows"], feature
        assert summary["features"][feature]["metrics"]["null_rate"] == pytest.approx(
            info["metrics"]["null_rate"], abs=1e-6
        )
    assert summary["engine"] == "sql"
    assert in_memory["engine"] == "memory"
    assert summary["dataset"].startswith("sql://warehouse/query-")
    assert summary["reference"] == "sql://warehouse/customers_2025"
    # No rows but the kind probes (100 per source) reach the worker, against 30,000 rows read in memory.
    assert summary["transfer"]["rows"] <= 200
    assert summary["transfer"]["summary_rows"] < 200
    assert in_memory["transfer"]["rows"] == ROWS + ROWS // 2
    stored = json.loads(open(summary["report"]).read())
    assert summary["report"].startswith(f"{data_root}/drift/warehouse/query-")
    assert summary["report"].endswith("/customers_2025/report.json")
    assert stored["drifted_features"] == summary["drifted_features"]
    assert "| plan | categorical | linf |" in open(summary["report"].replace(".json", ".md")).read()
    json.dumps(summary, allow_nan=False)


def test_sqlite_drift_fails_the_task_naming_the_features(sqlite_warehouse, data_root):
    op = DriftCheckOperator(
        task_id="drift", sql_conn_id="lake", table="current", reference_query="SELECT * FROM reference",
        exclude_columns=["active"], data_root=str(data_root),
    )  # fmt: skip
    with pytest.raises(
        DataDriftError, match=r"Dataset sql://lake/current drifted from sql://lake/query-"
    ) as err:
        op.execute(context={})
    assert "- tenure: " in str(err.value)
    assert "- plan: " in str(err.value)
    assert err.value.retryable is False
    assert err.value.dataset == "current"


def test_same_table_passes_and_a_missing_table_is_a_dataset_error(sqlite_warehouse, data_root):
    same = DriftCheckOperator(
        task_id="drift", sql_conn_id="lake", table="reference", reference_table="reference",
        data_root=str(data_root),
    ).execute(context={})  # fmt: skip
    assert same["drift"] is False

    with pytest.raises(DatasetError, match="Cannot read table no_such_table") as err:
        DriftCheckOperator(
            task_id="drift", sql_conn_id="lake", table="no_such_table", reference_table="reference"
        ).execute(context={})
    assert err.value.retryable is False


def test_an_unreachable_database_is_retryable(data_root):
    set_connection(
        "down", conn_type="postgres", host="127.0.0.1", port=free_port(), login="postgres", schema="x"
    )
    with pytest.raises(ServiceUnavailableError, match="database of connection 'down' failed") as err:
        DriftCheckOperator(
            task_id="drift", sql_conn_id="down", table="a", reference_table="b", data_root=str(data_root)
        ).execute(context={})
    assert err.value.retryable is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"dataset_uri": "/s", "sql_conn_id": "lake", "table": "a", "reference_table": "b"},
            "dataset_uri and sql_conn_id exclude each other", id="snapshot-and-sql",
        ),
        pytest.param(
            {"model_name": "churn", "sql_conn_id": "lake", "table": "a", "reference_table": "b"},
            "model_name and sql_conn_id exclude each other", id="champion-and-sql",
        ),
        pytest.param(
            {"dataset_uri": "/s", "reference_uri": "/r", "table": "a"}, "table need sql_conn_id",
            id="table-without-connection",
        ),
        pytest.param(
            {"sql_conn_id": "lake", "table": "a", "query": "SELECT 1", "reference_table": "b"},
            "exactly one of table or query", id="table-and-query",
        ),
        pytest.param(
            {"sql_conn_id": "lake", "table": "a"}, "exactly one of reference_table or reference_query",
            id="no-reference",
        ),
        pytest.param(
            {"sql_conn_id": "lake", "table": " ", "reference_table": "b"}, "table must be a non-empty string",
            id="empty-table",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_at_parse_time(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        DriftCheckOperator(task_id="drift", **kwargs)


class _Upstream(BaseOperator):
    def execute(self, context):
        return {}


def test_task_results_are_taken_and_checked_once_rendered_before_any_query():
    with DAG("sql_drift", schedule=None, start_date=datetime(2026, 1, 1)):
        up = _Upstream(task_id="up")
        op = DriftCheckOperator(
            task_id="drift", sql_conn_id=up.output["conn"], query=up.output["query"],
            reference_table=up.output["reference"],
        )  # fmt: skip
    assert op.upstream_task_ids == {"up"}
    # As Airflow renders them; the connection does not exist, so any query would fail differently.
    op.sql_conn_id, op.query, op.reference_table = "no_such_connection", "SELECT * FROM t", ""
    with pytest.raises(
        ConfigurationError, match="reference_table must be a non-empty string, got '' once rendered"
    ):
        op.execute(context={})

    op.reference_table = "t"
    with pytest.raises(
        ConnectionSetupError, match="no SQLAlchemy engine from connection 'no_such_connection'"
    ):
        op.execute(context={})
