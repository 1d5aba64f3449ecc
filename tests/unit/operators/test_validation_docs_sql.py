"""ValidateDatasetOperator: Data Docs next to the snapshot, warning-severity branch, SQL in the database."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from airflow_mlops.exceptions import DataValidationError
from airflow_mlops.links import DataDocsLink, data_docs_url
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.conftest import set_connection
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

LABEL_IN_SET = {
    "type": "expect_column_values_to_be_in_set",
    "kwargs": {"column": "label", "value_set": [0, 1]},
}


@pytest.fixture
def snapshot(tmp_path, data_root) -> str:
    source = tmp_path / "d.csv"
    pd.DataFrame({"x": range(50), "label": [0, 1, 7, 1, 0] * 10}).to_csv(source, index=False)
    op = IngestDatasetOperator(
        task_id="i", dataset_name="churn", source=str(source), data_root=str(data_root)
    )
    return op.execute(context={})["uri"]


@pytest.fixture
def sqlite_db(tmp_path) -> str:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER, amount REAL, label INTEGER)")
        db.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, float(i), i % 3) for i in range(60)])
    set_connection("warehouse", conn_type="sqlite", host=str(path))
    return str(path)


def test_data_docs_written_next_to_snapshot_and_linked(snapshot):
    op = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot, expectations=[LABEL_IN_SET], suite_name="quality"
    )
    with pytest.raises(DataValidationError, match="Data Docs: .*_validation/quality/index.html") as err:
        op.execute(context={})

    page = f"{snapshot}/_validation/quality/index.html"
    html = open(page, encoding="utf-8").read()
    assert "expect_column_values_to_be_in_set" in html or "values must belong to this set" in html
    assert "<html" in html.lower()
    # A page on the worker's disk opens in no reviewer's browser: the task page shows no link to it.
    assert DataDocsLink().get_link(op, ti_key=None) == ""
    assert "failed 1 of 1" in str(err.value)


def test_warning_severity_continues_when_asked(snapshot):
    warning = {**LABEL_IN_SET, "severity": "warning"}
    summary = ValidateDatasetOperator(
        task_id="validate", dataset_uri=f"{snapshot}", expectations=[warning], on_warning="continue"
    ).execute(context={})
    assert summary["success"] is False
    assert summary["blocking"] is False
    assert summary["failed"][0]["severity"] == "warning"
    assert summary["data_docs"].endswith("/_validation/churn-suite/index.html")

    with pytest.raises(DataValidationError):  # the default still fails on any failure
        ValidateDatasetOperator(task_id="validate", dataset_uri=snapshot, expectations=[warning]).execute({})
    critical = {**LABEL_IN_SET, "severity": "critical"}
    with pytest.raises(DataValidationError):  # critical failures block even with on_warning=continue
        ValidateDatasetOperator(
            task_id="validate", dataset_uri=snapshot, expectations=[critical], on_warning="continue"
        ).execute({})


def test_sql_table_validated_in_the_database(sqlite_db, data_root):
    op = ValidateDatasetOperator(
        task_id="validate", sql_conn_id="warehouse", table="events", data_root=str(data_root),
        expectations=[
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 50}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}},
        ],
    )  # fmt: skip
    with pytest.raises(
        DataValidationError, match=r"table events on connection 'warehouse' failed 1 of 2"
    ) as err:
        op.execute(context={})
    assert "unexpected_count=20" in str(err.value)
    assert (data_root / "validation" / "warehouse" / "events" / "events-suite" / "index.html").is_file()


def test_sql_query_validated_in_the_database(sqlite_db, data_root):
    summary = ValidateDatasetOperator(
        task_id="validate", sql_conn_id="warehouse", query="SELECT * FROM events WHERE label < 2",
        data_root=str(data_root),
        expectations=[{"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}}],
    ).execute(context={})  # fmt: skip
    assert summary["success"] is True
    assert summary["dataset"] == "sql://warehouse"
    assert summary["rows"] is None


def test_sql_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one of table or query"):
        ValidateDatasetOperator(task_id="v", sql_conn_id="w", expectations=[LABEL_IN_SET])
    with pytest.raises(ValueError, match="not both"):
        ValidateDatasetOperator(
            task_id="v", sql_conn_id="w", table="t", dataset_uri="x", expectations=[LABEL_IN_SET]
        )
    with pytest.raises(ValueError, match="on_warning must be one of fail, continue"):
        ValidateDatasetOperator(task_id="v", dataset_uri="x", expectations=[LABEL_IN_SET], on_warning="skip")


def test_data_docs_url_forms():
    assert data_docs_url("s3://b/p/x/index.html") == (
        "https://s3.console.aws.amazon.com/s3/object/b?prefix=p%2Fx%2Findex.html"
    )
    assert data_docs_url("s3://b/r/d/index.html", "https://docs.example.com", "s3://b/r") == (
        "https://docs.example.com/d/index.html"
    )


def test_data_docs_link_is_registered_with_airflow():
    from airflow.providers_manager import ProvidersManager

    assert "airflow_mlops.links.DataDocsLink" in set(ProvidersManager().extra_links_class_names)
