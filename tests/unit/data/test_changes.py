"""New or changed files since a snapshot, without Airflow (the sensor and the trigger share it)."""

from __future__ import annotations

from airflow_mlops.data.changes import changed_files, find_new_files
from airflow_mlops.data.storage import Storage


def test_a_file_counts_as_ingested_with_the_same_size_and_etag_or_mtime():
    manifest = {"source_files": [
        {"uri": "s3://b/a.csv", "bytes": 10, "etag": "e1"},
        {"uri": "/d/b.csv", "bytes": 5, "mtime": 100.0},
    ]}  # fmt: skip
    entries = [
        {"uri": "s3://b/a.csv", "size": 10, "etag": "e1", "mtime": 1.0},  # same
        {"uri": "/d/b.csv", "size": 5, "etag": None, "mtime": 100.0},  # same
        {"uri": "s3://b/c.csv", "size": 1, "etag": "e3", "mtime": 1.0},  # new
    ]
    assert [e["uri"] for e in changed_files(entries, manifest)] == ["s3://b/c.csv"]
    entries[0]["etag"] = "e2"  # rewritten with the same size
    entries[1]["mtime"] = 101.0  # touched
    assert len(changed_files(entries, manifest)) == 3
    assert len(changed_files(entries, None)) == 3


def test_with_no_snapshot_every_visible_file_is_new(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.csv").write_text("x\n1\n")
    (tmp_path / "raw" / "_SUCCESS").write_text("")
    found = find_new_files(Storage(), str(tmp_path / "raw"), "events", str(tmp_path / "root"))
    assert found["count"] == 1
    assert found["snapshot"] is None
    assert found["files"][0]["uri"] == str(tmp_path / "raw" / "a.csv")
