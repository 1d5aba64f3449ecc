"""
DriftCheckOperator with ``spark_conn_id``: the same DAG task as on snapshots or SQL, computed by a real local
Spark over Parquet files, with the in-memory verdicts, the report stored and returned, and clear refusals.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from airflow_mlops.data.drift import compute_drift
from airflow_mlops.exceptions import ConfigurationError, ConnectionSetupError, DataDriftError, DatasetError
from airflow_mlops.operators.drift import DriftCheckOperator
from tests.support.drift_data import frames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Two Parquet folders, as a data lake holds them, and their rows as frames."""
    root = tmp_path_factory.mktemp("lake")
    reference, current = frames(seed=5, rows=10_000)
    for name, frame in (("customers_2025", reference), ("customers_2026", current)):
        (root / name).mkdir()
        frame.to_parquet(root / name / "part-0.parquet", index=False)
    return root, pd.read_parquet(root / "customers_2025"), pd.read_parquet(root / "customers_2026")


def test_parquet_tables_give_the_in_memory_verdicts_and_a_stored_report(spark_default, lake, data_root):
    root, reference, current = lake
    summary = DriftCheckOperator(
        task_id="drift", spark_conn_id="spark_default", table=f"parquet.`{root / 'customers_2026'}`",
        reference_query=f"SELECT * FROM parquet.`{root / 'customers_2025'}`", on_drift="continue",
        data_root=str(data_root),
    ).execute(context={})  # fmt: skip
    in_memory = compute_drift(reference, current)

    assert summary["engine"] == "spark"
    assert summary["drift"] is True
    assert summary["drifted_features"] == in_memory["drifted_features"]
    for feature, info in in_memory["features"].items():
        assert summary["features"][feature]["exceeded"] == info["exceeded"], feature
    assert summary["dataset"] == f"spark://spark_default/parquet.`{root / 'customers_2026'}`"
    assert summary["reference"].startswith("spark://spark_default/query-")
    assert summary["transfer"] == {"rows": 0, "summary_rows": summary["transfer"]["summary_rows"]}
    assert summary["transfer"]["summary_rows"] < 100
    assert summary["report"].startswith(f"{data_root}/drift/spark-spark_default/")
    stored = json.loads(open(summary["report"]).read())
    assert stored["drifted_features"] == summary["drifted_features"]
    assert "| plan | categorical | linf |" in open(summary["report"].replace(".json", ".md")).read()


def test_drift_fails_the_task_naming_the_features_and_a_missing_table_is_a_dataset_error(
    spark_default, lake, data_root
):
    root, _, _ = lake
    spark_default.read.parquet(str(root / "customers_2025")).createOrReplaceTempView("reference_customers")
    with pytest.raises(
        DataDriftError, match=r"drifted from spark://spark_default/reference_customers"
    ) as err:
        DriftCheckOperator(
            task_id="drift", spark_conn_id="spark_default", table=f"parquet.`{root / 'customers_2026'}`",
            reference_table="reference_customers", exclude_columns=["active"], data_root=str(data_root),
        ).execute(context={})  # fmt: skip
    assert "- tenure: " in str(err.value)
    assert err.value.retryable is False

    with pytest.raises(DatasetError, match="Cannot read table no_such_table") as missing:
        DriftCheckOperator(
            task_id="drift", spark_conn_id="spark_default", table="no_such_table",
            reference_table="reference_customers", data_root=str(data_root),
        ).execute(context={})  # fmt: skip
    assert missing.value.retryable is False


def test_an_undefined_spark_connection_says_how_to_define_one(data_root):
    with pytest.raises(ConnectionSetupError, match="Spark connection 'no_spark' is not defined"):
        DriftCheckOperator(
            task_id="drift",
            spark_conn_id="no_spark",
            table="a",
            reference_table="b",
            data_root=str(data_root),
        ).execute(context={})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"sql_conn_id": "db", "spark_conn_id": "spark_default", "table": "a", "reference_table": "b"},
            "sql_conn_id and spark_conn_id exclude each other", id="sql-and-spark",
        ),
        pytest.param(
            {"dataset_uri": "/s", "spark_conn_id": "spark_default", "table": "a", "reference_table": "b"},
            "dataset_uri and spark_conn_id exclude each other", id="snapshot-and-spark",
        ),
        pytest.param(
            {"spark_conn_id": "spark_default", "table": "a"},
            "With spark_conn_id, pass exactly one of reference_table or reference_query", id="no-reference",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_at_parse_time(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        DriftCheckOperator(task_id="drift", **kwargs)
