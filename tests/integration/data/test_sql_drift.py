"""
Drift computed in the database (``compute_drift_sql``) against a real PostgreSQL started by the test and SQLite:
the same verdicts as the in-memory path on the same rows, and only summaries moved to the worker.

Tolerances: PSI, the categorical distances and null rates as in memory (1e-6), and KS and Wasserstein too for
numbers with few distinct values; for other numbers KS within 2 / quantiles and Wasserstein within 0.1% of the
reference's standard deviation (both read off order statistics; 0.5% with a 2,000-row side).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_mlops.data.drift import compute_drift
from airflow_mlops.data.sql_drift import DEFAULT_QUANTILES, SqlData, compute_drift_sql
from tests.support.drift_data import frames
from tests.support.postgres import CountingProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres(postgres_server):
    engine = postgres_server.load(
        "drift", dict(zip(("customers_2025", "customers_2026"), frames(), strict=True))
    )
    yield postgres_server.server, engine
    engine.dispose()


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'drift.db'}")
    reference, current = frames(seed=1, rows=10_000)
    reference.to_sql("reference", engine, index=False)
    current.to_sql("current", engine, index=False)
    yield engine
    engine.dispose()


def assert_same_report(
    in_database: dict, in_memory: dict, reference: pd.DataFrame, wasserstein: float = 1e-3
) -> None:
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
                assert got["metrics"][metric] == pytest.approx(value, abs=wasserstein * spread), column
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


def test_a_frame_in_the_worker_compares_with_a_table_as_two_frames_do(sqlite_engine):
    # A small sample held by the worker (a model's predictions on its holdout) against a table of any size.
    sample = pd.read_sql("SELECT * FROM reference", sqlite_engine).sample(2_000, random_state=0)
    transfer: dict[str, int] = {}
    report = compute_drift_sql(
        sqlite_engine, sample, SqlData(table="current"), exclude_columns=["active"], transfer=transfer
    )
    expected = compute_drift(
        sample, pd.read_sql("SELECT * FROM current", sqlite_engine), exclude_columns=["active"]
    )
    # 2,000 values on one side: the 1,000 midpoints of the Wasserstein estimate are coarser (0.5% of the spread).
    assert_same_report(report, expected, sample, wasserstein=5e-3)
    assert transfer["rows_sampled"] == 100  # the current table's kind probe; the frame is the worker's own
    # SQLite returns order statistics as rows: about 1,000 per continuous column (tenure, spend), whatever its size.
    assert 0 < transfer["summary_rows"] < 2 * (DEFAULT_QUANTILES + 100)


def test_a_snapshot_read_one_column_at_a_time_compares_as_its_frame(sqlite_engine, tmp_path):
    from airflow_mlops.data.drift import snapshot_columns
    from airflow_mlops.data.snapshots import DATA, manifest_bytes, write_parquet

    reference = pd.read_sql("SELECT * FROM reference", sqlite_engine)
    write_parquet({DATA: reference}, tmp_path)
    (tmp_path / "_manifest.json").write_bytes(
        manifest_bytes({"name": "r", "files": {DATA: f"{DATA}.parquet"}})
    )

    with snapshot_columns(str(tmp_path), drop=["active"]) as columns:
        assert len(columns) == len(reference)
        report = compute_drift_sql(
            sqlite_engine, columns, SqlData(table="current"), exclude_columns=["active"]
        )
    frame = pd.read_parquet(tmp_path / f"{DATA}.parquet").drop(columns=["active"])
    assert report == compute_drift_sql(
        sqlite_engine, frame, SqlData(table="current"), exclude_columns=["active"]
    )


def test_few_values_in_the_first_rows_do_not_make_a_column_discrete(tmp_path):
    """
    The first rows only rule columns out: one whose many values come late is still compared from its order
    statistics (a few summary rows), and one with exactly ``quantiles`` values exactly, from its value counts.
    """
    import numpy as np

    from airflow_mlops.data.sql_drift import SCREEN_ROWS

    rng = np.random.default_rng(5)
    rows = SCREEN_ROWS + 30_000
    late = np.concatenate([rng.integers(0, 5, SCREEN_ROWS + 10_000), rng.normal(size=20_000)])
    frames = [
        pd.DataFrame({"late": late + shift, "rating": rng.integers(0, DEFAULT_QUANTILES, rows)}) for shift in (0, 0.2)
    ]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'late.db'}")
    for name, frame in zip(("reference", "current"), frames, strict=True):
        frame.to_sql(name, engine, index=False)
    transfer: dict[str, int] = {}

    report = compute_drift_sql(engine, SqlData(table="reference"), SqlData(table="current"), transfer=transfer)

    expected = compute_drift(*frames)
    assert_same_report(report, expected, frames[0])
    assert frames[0]["rating"].nunique() == DEFAULT_QUANTILES  # exactly at the limit: compared exactly
    for metric in ("ks", "wasserstein"):
        assert report["features"]["rating"]["metrics"][metric] == pytest.approx(
            expected["features"]["rating"]["metrics"][metric], abs=1e-9
        )
    # "late" (30,005 values) went through its order statistics, not 30,005 value counts per table.
    assert transfer["summary_rows"] < 2 * (2 * DEFAULT_QUANTILES + 100) + 2 * (DEFAULT_QUANTILES + 100)
    engine.dispose()
