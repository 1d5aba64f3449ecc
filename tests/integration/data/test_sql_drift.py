"""
Drift computed in the database (``compute_drift_sql``) against a real PostgreSQL started by the test and SQLite:
the same verdicts as the in-memory path on the same rows, and only summaries moved to the worker.

Tolerances: PSI, the categorical distances and null rates as in memory (1e-6), and KS and Wasserstein too for
numbers with few distinct values; for other numbers KS within 2 / quantiles and Wasserstein within 0.1% of the
reference's standard deviation (both read off order statistics).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_mlops.data.drift import compute_drift
from airflow_mlops.data.sql_drift import DEFAULT_QUANTILES, SqlData, compute_drift_sql
from tests.support.postgres import CountingProxy, Postgres

pytestmark = pytest.mark.integration


def frames(seed: int = 0, rows: int = 100_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current table: one shifted number, one widened integer, a new category, more nulls."""
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame(
        {
            "tenure": rng.normal(24, 6, rows),
            "calls": rng.integers(0, 10, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows, p=[0.5, 0.3, 0.2]),
            "spend": rng.gamma(2.0, 30.0, rows),
            "active": rng.random(rows) < 0.7,
        }
    )
    current = pd.DataFrame(
        {
            "tenure": rng.normal(30, 6, rows // 2),
            "calls": rng.integers(0, 14, rows // 2),
            "plan": rng.choice(["basic", "plus", "pro", "max"], rows // 2, p=[0.3, 0.3, 0.2, 0.2]),
            "spend": rng.gamma(2.0, 30.0, rows // 2),
            "active": rng.random(rows // 2) < 0.7,
        }
    )
    current.loc[::4, "spend"] = None
    return reference, current


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    server.psql("CREATE DATABASE drift")
    engine = sa.create_engine(server.url("drift"))
    for name, frame in zip(("customers_2025", "customers_2026"), frames(), strict=True):
        frame.head(0).to_sql(name, engine, index=False)
        connection = engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(
                    f"COPY {name} FROM STDIN WITH (FORMAT csv)",
                    io.StringIO(frame.to_csv(index=False, header=False)),
                )
            connection.commit()
        finally:
            connection.close()
    yield server, engine
    engine.dispose()
    server.stop()


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'drift.db'}")
    reference, current = frames(seed=1, rows=10_000)
    reference.to_sql("reference", engine, index=False)
    current.to_sql("current", engine, index=False)
    yield engine
    engine.dispose()


def assert_same_report(in_database: dict, in_memory: dict, reference: pd.DataFrame) -> None:
    assert in_database["drifted_features"] == in_memory["drifted_features"]
    assert in_database["missing_features"] == in_memory["missing_features"]
    assert in_database["added_features"] == in_memory["added_features"]
    for column, expected in in_memory["features"].items():
        got = in_database["features"][column]
        assert (got["kind"], got["rows"], got["exceeded"]) == (
            expected["kind"],
            expected["rows"],
            expected["exceeded"],
        )
        assert got["null_rate"] == pytest.approx(expected["null_rate"], abs=1e-6)
        for metric, value in expected["metrics"].items():
            if metric == "ks":
                assert got["metrics"][metric] == pytest.approx(value, abs=2 / DEFAULT_QUANTILES), column
            elif metric == "wasserstein":
                spread = float(reference[column].std())
                assert got["metrics"][metric] == pytest.approx(value, abs=1e-3 * spread), column
            elif metric == "ks_pvalue":
                assert math.isfinite(got["metrics"][metric])
            else:
                assert got["metrics"][metric] == pytest.approx(value, abs=1e-6), (column, metric)


def test_postgres_drift_matches_the_in_memory_report_and_moves_only_summaries(postgres):
    server, engine = postgres
    proxy = CountingProxy(server.port)
    counted = sa.create_engine(server.url("drift", port=proxy.port), poolclass=sa.pool.NullPool)
    try:
        proxy.reset()
        report = compute_drift_sql(
            counted, SqlData(table="customers_2025"), SqlData(query="SELECT * FROM customers_2026")
        )
        moved = proxy.to_client
    finally:
        counted.dispose()
        proxy.close()
    reference = pd.read_sql("SELECT * FROM customers_2025", engine)
    current = pd.read_sql("SELECT * FROM customers_2026", engine)
    expected = compute_drift(reference, current)

    assert report["drift"]
    assert set(report["drifted_features"]) >= {"tenure", "plan", "spend"}
    assert "active" not in report["drifted_features"]
    assert report["features"]["plan"]["metrics"]["new_categories"] == 1
    assert_same_report(report, expected, reference)
    # 150,000 rows of five columns are megabytes; the summaries are a small fraction of that.
    table_bytes = reference.memory_usage(deep=True).sum() + current.memory_usage(deep=True).sum()
    assert moved < table_bytes / 10, (moved, table_bytes)


def test_sqlite_drift_matches_the_in_memory_report_with_columns_and_exclusions(sqlite_engine):
    report = compute_drift_sql(
        sqlite_engine,
        SqlData(table="reference"),
        SqlData(table="current"),
        exclude_columns=["active"],
        feature_thresholds={"spend": {"null_rate": 0.5}},
    )
    reference = pd.read_sql("SELECT * FROM reference", sqlite_engine)
    expected = compute_drift(
        reference,
        pd.read_sql("SELECT * FROM current", sqlite_engine),
        exclude_columns=["active"],
        feature_thresholds={"spend": {"null_rate": 0.5}},
    )
    assert "active" not in report["features"]
    assert "spend" not in report["drifted_features"]  # its own null-rate limit is looser
    assert_same_report(report, expected, reference)


def test_the_same_table_twice_does_not_drift_and_a_missing_column_does(sqlite_engine):
    same = compute_drift_sql(sqlite_engine, SqlData(table="reference"), SqlData(table="reference"))
    assert not same["drift"]
    assert all(info["metrics"].get("ks", 0) == 0 for info in same["features"].values())

    narrowed = compute_drift_sql(
        sqlite_engine,
        SqlData(table="reference"),
        SqlData(query="SELECT tenure, calls, plan, active FROM current"),
    )
    assert narrowed["drift"]
    assert narrowed["missing_features"] == ["spend"]


def test_a_source_that_cannot_be_read_names_it(sqlite_engine):
    with pytest.raises(ValueError, match="Cannot read table no_such_table"):
        compute_drift_sql(sqlite_engine, SqlData(table="no_such_table"), SqlData(table="current"))
    with pytest.raises(ValueError, match="table or a query"):
        SqlData(table="reference", query="SELECT 1")
