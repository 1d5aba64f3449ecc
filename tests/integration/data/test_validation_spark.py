"""
ValidateDatasetOperator with ``spark_conn_id``: a Parquet table validated through Great Expectations' Spark
datasource on a real local Spark gives the verdicts and messages the snapshot path gives on the same bad rows.
"""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.exceptions import DatasetError, DataValidationError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration

EXPECTATIONS = [
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 100}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount"}},
    {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "amount", "min_value": 0, "max_value": 50},
    },
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}},
    {
        "type": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "plan", "value_set": ["basic", "pro"]},
    },
    {"type": "expect_column_to_exist", "kwargs": {"column": "customer_id"}},
]


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory):
    """60 rows with nulls, out-of-range amounts, a third label and an unknown plan; as CSV and as Parquet."""
    root = tmp_path_factory.mktemp("bad-rows")
    frame = pd.DataFrame(
        {
            "amount": [None if i % 10 == 0 else float(i) for i in range(60)],
            "label": [i % 3 for i in range(60)],
            "plan": ["basic", "pro", "max"] * 20,
        }
    )
    frame.to_csv(root / "events.csv", index=False)
    frame.to_parquet(root / "events.parquet", index=False)
    return root


def _failures(summary: dict) -> list[tuple]:
    return sorted(
        (
            f["expectation"],
            str(f["column"]),
            f["observed"].get("unexpected_count"),
            f["observed"].get("observed_value"),
        )
        for f in summary["failed"]
    )


def test_spark_validation_gives_the_snapshot_verdicts_and_messages(spark_default, bad_rows, data_root):
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name="events", source=str(bad_rows / "events.csv"), data_root=str(data_root)
    ).execute(context={})["uri"]
    in_memory = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot, expectations=EXPECTATIONS, soft_fail=True
    ).execute(context={})
    table = f"parquet.`{bad_rows / 'events.parquet'}`"
    in_spark = ValidateDatasetOperator(
        task_id="validate", spark_conn_id="spark_default", table=table, expectations=EXPECTATIONS,
        data_root=str(data_root), soft_fail=True,
    ).execute(context={})  # fmt: skip

    assert in_spark["success"] is in_memory["success"] is False
    assert (in_spark["evaluated"], in_spark["unsuccessful"]) == (
        in_memory["evaluated"],
        in_memory["unsuccessful"],
    )
    assert _failures(in_spark) == _failures(in_memory)
    # The task's message: the same lines under each dataset's own heading.
    assert _message("spark", in_spark).split("\n", 1)[1] == _message("snapshot", in_memory).split("\n", 1)[1]
    assert in_spark["dataset"] == f"spark://spark_default/{table}"
    assert in_spark["data_docs"].startswith(f"{data_root}/validation/spark-spark_default/")


def _message(snapshot: str, summary: dict) -> str:
    from airflow_mlops.data.expectations import failure_message

    return failure_message(snapshot, summary).split("Data Docs")[0]  # each page is where its data's are


def test_a_query_that_passes_and_a_missing_table(spark_default, bad_rows, data_root):
    summary = ValidateDatasetOperator(
        task_id="validate", spark_conn_id="spark_default", data_root=str(data_root),
        query=f"SELECT * FROM parquet.`{bad_rows / 'events.parquet'}` WHERE label < 2 AND plan <> 'max'",
        expectations=[EXPECTATIONS[3], EXPECTATIONS[4]],
    ).execute(context={})  # fmt: skip
    assert summary["success"] is True
    assert summary["dataset"] == "spark://spark_default"

    with pytest.raises(
        DataValidationError, match=r"on Spark connection 'spark_default' failed 1 of 1"
    ) as failed:
        ValidateDatasetOperator(
            task_id="validate", spark_conn_id="spark_default", table=f"parquet.`{bad_rows / 'events.parquet'}`",
            expectations=[EXPECTATIONS[3]], data_root=str(data_root),
        ).execute(context={})  # fmt: skip
    assert "unexpected_count=20" in str(failed.value)
    assert failed.value.retryable is False

    with pytest.raises(DatasetError, match="Cannot validate table no_such_table on Spark connection") as err:
        ValidateDatasetOperator(
            task_id="validate",
            spark_conn_id="spark_default",
            table="no_such_table",
            expectations=EXPECTATIONS,
        ).execute(context={})
    assert err.value.retryable is False


def test_spark_arguments_are_checked_at_parse_time():
    with pytest.raises(ValueError, match="sql_conn_id and spark_conn_id exclude each other"):
        ValidateDatasetOperator(
            task_id="v", sql_conn_id="db", spark_conn_id="s", table="t", expectations=EXPECTATIONS
        )
    with pytest.raises(ValueError, match="With spark_conn_id, pass exactly one of table or query"):
        ValidateDatasetOperator(task_id="v", spark_conn_id="s", expectations=EXPECTATIONS)
    with pytest.raises(ValueError, match="dataset_uri .* or spark_conn_id with table or query, not both"):
        ValidateDatasetOperator(
            task_id="v", spark_conn_id="s", table="t", dataset_uri="/x", expectations=EXPECTATIONS
        )
