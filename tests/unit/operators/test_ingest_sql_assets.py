"""IngestDatasetOperator: SQL query sources and Asset events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from airflow_mlops.data.snapshots import load_manifest, read_snapshot
from airflow_mlops.exceptions import DatasetError
from airflow_mlops.operators.ingest import IngestDatasetOperator, dataset_asset
from tests.conftest import set_connection
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)


@pytest.fixture
def sqlite_conn(tmp_path) -> str:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER, spend REAL, label INTEGER)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, i * 1.5, i % 2) for i in range(40)])
    set_connection("shop_db", conn_type="sqlite", host=str(path))
    return str(path)


def sql_ingest(data_root, sql: str, **kwargs) -> dict:
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="customers", sql=sql, sql_conn_id="shop_db",
        data_root=str(data_root), **kwargs,
    )  # fmt: skip
    return op.execute(context={})


def test_sql_query_becomes_a_snapshot(sqlite_conn, data_root):
    result = sql_ingest(
        data_root, "SELECT * FROM customers WHERE id < 30", split={"train": 0.5, "holdout": 0.5}
    )

    assert result["rows"] == 30
    assert result["schema"] == {"id": "int64", "spend": "float64", "label": "int64"}
    df = read_snapshot(result["uri"])
    assert list(df["id"]) == list(range(30))
    manifest = load_manifest(result["uri"])
    assert manifest["source"] == "sql://shop_db"
    assert manifest["query"] == "SELECT * FROM customers WHERE id < 30"
    assert manifest["sha256_of"] == "rows"
    assert len(read_snapshot(result["splits"]["train"])) == 15

    # Same rows, same snapshot; changed rows, a new one.
    assert (
        sql_ingest(data_root, "SELECT * FROM customers WHERE id < 30", split={"train": 0.5, "holdout": 0.5})
        == result
    )
    with sqlite3.connect(sqlite_conn) as db:
        db.execute("UPDATE customers SET spend = 0 WHERE id = 3")
    changed = sql_ingest(
        data_root, "SELECT * FROM customers WHERE id < 30", split={"train": 0.5, "holdout": 0.5}
    )
    assert changed["snapshot_id"] != result["snapshot_id"]


def test_sql_errors_name_the_connection(sqlite_conn, data_root):
    with pytest.raises(DatasetError, match="query on connection 'shop_db' failed"):
        sql_ingest(data_root, "SELECT * FROM no_such_table")
    with pytest.raises(DatasetError, match="returned no rows"):
        sql_ingest(data_root, "SELECT * FROM customers WHERE id < 0")
    assert not list(data_root.rglob("*.parquet"))


def test_sql_and_source_are_exclusive():
    with pytest.raises(ValueError, match="exactly one of source"):
        IngestDatasetOperator(task_id="t", dataset_name="d", source="x.csv", sql="SELECT 1", sql_conn_id="c")
    with pytest.raises(ValueError, match="needs sql_conn_id"):
        IngestDatasetOperator(task_id="t", dataset_name="d", sql="SELECT 1")


def test_default_asset_outlet_gets_the_snapshot_in_its_event(sqlite_conn, data_root):
    from airflow.sdk.execution_time.context import OutletEventAccessors

    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="customers", sql="SELECT * FROM customers", sql_conn_id="shop_db",
        data_root=str(data_root),
    )  # fmt: skip
    asset = dataset_asset("customers", str(data_root))
    # The real location of the dataset's snapshots, where the event's snapshot URI lies.
    assert asset.uri == asset.name == (data_root / "datasets" / "customers").resolve().as_uri()
    assert op.outlets == [asset]

    events = OutletEventAccessors()
    result = op.execute(context={"outlet_events": events})

    assert events[asset].extra == {
        "name": "customers", "snapshot_id": result["snapshot_id"], "uri": result["uri"],
        "sha256": result["sha256"], "rows": 40,
    }  # fmt: skip
    assert Path(result["uri"]).parent.as_uri() == asset.uri


def test_an_s3_root_gives_an_s3_asset_and_a_templated_root_none():
    asset = dataset_asset("churn", "s3://lake/mlops/")
    assert asset.uri == "s3://lake/mlops/datasets/churn"
    op = IngestDatasetOperator(task_id="t", dataset_name="churn", source="x.csv", data_root="s3://lake/mlops")
    assert op.outlets == [asset]
    # Outlets are fixed when the DAG is parsed: a root known only when the task runs gives no default Asset.
    op = IngestDatasetOperator(
        task_id="t", dataset_name="churn", source="x.csv", data_root="{{ params.root }}"
    )
    assert op.outlets == []


def test_templated_name_takes_an_explicit_asset():
    from airflow.sdk import Asset

    op = IngestDatasetOperator(task_id="t", dataset_name="{{ params.name }}", source="x.csv")
    assert op.outlets == []
    own = Asset("s3://lake/curated/churn")
    op = IngestDatasetOperator(task_id="t", dataset_name="{{ params.name }}", source="x.csv", asset=own)
    assert op.outlets == [own]
