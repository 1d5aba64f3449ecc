"""
Drift computed by a real local Spark (``compute_drift_spark``): the same verdicts as the in-memory path on the
same rows, with only summaries collected to the worker.

Tolerances, as for the SQL push-down: PSI, the categorical distances and null rates as in memory (1e-6), KS and
Wasserstein too for numbers with few distinct values; for other numbers KS within 2 / quantiles and Wasserstein
within 0.1% of the reference's standard deviation.
"""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.data.drift import compute_drift
from airflow_mlops.data.spark_drift import SparkData, compute_drift_spark
from tests.integration.data.test_sql_drift import assert_same_report
from tests.support.drift_data import frames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """The drift test data as Parquet files, and as frames for the in-memory path."""
    root = tmp_path_factory.mktemp("spark-drift")
    reference, current = frames(rows=20_000)
    reference.to_parquet(root / "reference.parquet", index=False)
    current.to_parquet(root / "current.parquet", index=False)
    return root, pd.read_parquet(root / "reference.parquet"), pd.read_parquet(root / "current.parquet")


def test_spark_drift_matches_the_in_memory_report_and_collects_only_summaries(spark, parquet):
    root, reference, current = parquet
    transfer: dict[str, int] = {}
    report = compute_drift_spark(
        spark, SparkData(path=str(root / "reference.parquet")), SparkData(path=str(root / "current.parquet")),
        transfer=transfer,
    )  # fmt: skip
    expected = compute_drift(reference, current)

    assert report["drift"]
    assert set(report["drifted_features"]) >= {"tenure", "plan", "spend"}
    assert "active" not in report["drifted_features"]
    assert report["features"]["plan"]["metrics"]["new_categories"] == 1
    assert_same_report(report, expected, reference)
    # 30,000 rows in; a few hundred summary rows out (one per aggregate, one per category or value).
    assert transfer["rows_sampled"] == 0
    assert 0 < transfer["summary_rows"] < 100, transfer


def test_tables_and_queries_of_the_catalog_compare_with_columns_and_exclusions(spark, parquet):
    root, reference, current = parquet
    spark.read.parquet(str(root / "reference.parquet")).createOrReplaceTempView("customers_2025")
    spark.read.parquet(str(root / "current.parquet")).createOrReplaceTempView("customers_2026")
    options = {"exclude_columns": ["active"], "feature_thresholds": {"spend": {"null_rate": 0.5}}}
    report = compute_drift_spark(
        spark, SparkData(table="customers_2025"), SparkData(query="SELECT * FROM customers_2026"), **options
    )
    assert "active" not in report["features"]
    assert "spend" not in report["drifted_features"]  # its own null-rate limit is looser
    assert_same_report(report, compute_drift(reference, current, **options), reference)

    same = compute_drift_spark(spark, SparkData(table="customers_2025"), SparkData(table="customers_2025"))
    assert not same["drift"]


def test_a_source_spark_cannot_read_is_named(spark, tmp_path):
    with pytest.raises(ValueError, match="Cannot read table no_such_table"):
        compute_drift_spark(spark, SparkData(table="no_such_table"), SparkData(table="no_such_table"))
    with pytest.raises(ValueError, match=r"Cannot read parquet path .*missing\.parquet"):
        compute_drift_spark(
            spark, SparkData(path=str(tmp_path / "missing.parquet")), SparkData(table="no_such_table")
        )
    with pytest.raises(ValueError, match="exactly one of a table, a query or a path"):
        SparkData(table="a", path="/b")
