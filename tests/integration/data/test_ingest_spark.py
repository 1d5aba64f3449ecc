"""
IngestDatasetOperator with a SparkSource: a real local Spark fingerprints the rows and writes the snapshot's
Parquet file itself; the same rows (in any order) give the same snapshot, which is not written again.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from airflow_mlops.exceptions import DatasetConfigurationError, DatasetError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.sources import SparkSource
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark-source")
    frame = pd.DataFrame(
        {
            "id": range(500),
            "amount": [None if i % 7 == 0 else i / 4 for i in range(500)],
            "plan": ["a", "b"] * 250,
        }
    )
    frame.to_parquet(root / "events.parquet", index=False)
    return root / "events.parquet", frame


def ingest(source: SparkSource, data_root, **kwargs) -> dict:
    return IngestDatasetOperator(
        task_id="ingest", dataset_name="events", source=source, data_root=str(data_root), **kwargs
    ).execute(context={})


def test_spark_writes_the_snapshot_and_the_same_rows_give_the_same_one(spark_default, events, data_root):
    path, frame = events
    first = ingest(SparkSource(path=str(path)), data_root)
    snapshot = data_root / "datasets" / "events" / first["snapshot_id"]
    manifest = json.loads((snapshot / "_manifest.json").read_text())
    assert manifest["rows"] == 500
    assert manifest["copy"] == "server-side"
    assert manifest["sha256_of"] == "spark-rows"
    assert manifest["schema"] == {"id": "int64", "amount": "float64", "plan": "object"}
    assert sorted(p.name for p in snapshot.iterdir()) == ["_manifest.json", "data.parquet"]  # no staging left
    pd.testing.assert_frame_equal(
        pd.read_parquet(snapshot / "data.parquet").sort_values("id", ignore_index=True), frame
    )

    written = (snapshot / "data.parquet").stat().st_mtime_ns
    reordered = ingest(SparkSource(query=f"SELECT * FROM parquet.`{path}` ORDER BY id DESC"), data_root)
    assert reordered["snapshot_id"] == first["snapshot_id"]
    assert (snapshot / "data.parquet").stat().st_mtime_ns == written  # nothing rewritten

    changed = ingest(
        SparkSource(
            query=f"SELECT id, CASE WHEN id = 3 THEN NULL ELSE amount END AS amount, plan FROM parquet.`{path}`"
        ),
        data_root,
    )
    assert changed["snapshot_id"] != first["snapshot_id"]
    assert changed["rows"] == 500


def test_a_split_a_missing_table_and_bad_arguments_are_refused(spark_default, events, data_root):
    path, _ = events
    with pytest.raises(DatasetConfigurationError, match="takes no split"):
        ingest(SparkSource(path=str(path)), data_root, split={"train": 0.8, "valid": 0.2})
    with pytest.raises(DatasetError, match="Spark cannot read table no_such_table"):
        ingest(SparkSource(table="no_such_table"), data_root)
    with pytest.raises(ValueError, match="exactly one of table, query or path"):
        SparkSource(table="a", path="/b")
    assert not (data_root / "datasets" / "events").exists() or not any(
        (data_root / "datasets" / "events").glob("*/_manifest.json")
    )
