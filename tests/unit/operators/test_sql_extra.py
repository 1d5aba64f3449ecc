"""SQL ingest without the ``sql`` extra (common.sql) says what to install, and changes nothing."""

from __future__ import annotations

import sqlite3
import sys

import pytest

from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from tests.conftest import set_connection
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)


def test_sql_ingest_without_common_sql_names_the_extra(tmp_path, data_root, monkeypatch):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    set_connection("shop_db_no_sql", conn_type="sqlite", host=str(path))
    # common.sql not installed: the database providers built on it cannot be imported either.
    for name in [
        m for m in sys.modules if m.startswith(("airflow.providers.sqlite", "airflow.providers.common.sql"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "airflow.providers.common.sql", None)
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="customers", sql="SELECT * FROM customers", sql_conn_id="shop_db_no_sql",
        data_root=str(data_root),
    )  # fmt: skip
    with pytest.raises(ConnectionSetupError, match=r"pip install 'airflow-provider-mlops\[sql\]'"):
        op.execute(context={})
    assert list(data_root.iterdir()) == []
