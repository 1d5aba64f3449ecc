"""NewDataTrigger: new or changed files since the dataset's latest snapshot, in the triggerer."""

from __future__ import annotations

import json
import os
import time

from airflow.triggers.base import BaseEventTrigger

from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.triggers.new_data import NewDataTrigger
from tests.support.new_data import (
    ingest,
    run_trigger,
    sources_in_temp_folders,  # noqa: F401  (autouse: sources in temp folders)
    write_csv,
)


def trigger_for(source, data_root, deadline: float | None = None) -> NewDataTrigger:
    return NewDataTrigger(
        source=str(source), dataset_name="events", data_root=str(data_root), aws_conn_id=None,
        poll_interval=0.05, deadline=deadline,
    )  # fmt: skip


def test_serialize_returns_exactly_the_arguments():
    trigger = NewDataTrigger(
        source="s3://b/raw/", dataset_name="events", data_root="s3://b/mlops", aws_conn_id="aws_default",
        poll_interval=30, deadline=1700000000.0,
    )  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.new_data.NewDataTrigger"
    assert kwargs == {
        "source": "s3://b/raw/", "dataset_name": "events", "data_root": "s3://b/mlops",
        "aws_conn_id": "aws_default", "poll_interval": 30.0, "deadline": 1700000000.0,
    }  # fmt: skip
    assert NewDataTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert isinstance(trigger, BaseEventTrigger)  # usable in an AssetWatcher


def test_fires_for_files_no_snapshot_ingested(tmp_path, data_root):
    raw = tmp_path / "raw"
    write_csv(raw / "a.csv")
    write_csv(raw / "_SUCCESS", 2)  # ignored, as the ingest ignores it

    (event,) = run_trigger(trigger_for(raw, data_root))

    assert event["status"] == "success"
    assert event["count"] == 1
    assert [f["uri"] for f in event["files"]] == [str(raw / "a.csv")]
    assert event["snapshot"] is None


def test_waits_while_nothing_changed_then_times_out(tmp_path, data_root):
    raw = tmp_path / "raw"
    write_csv(raw / "a.csv")
    snapshot = ingest(raw, data_root)

    (event,) = run_trigger(trigger_for(raw, data_root, deadline=time.time() + 0.3))

    assert event["status"] == "timeout"
    assert "No new or changed files" in event["message"]
    assert snapshot["uri"]


def test_fires_for_a_changed_and_a_new_file(tmp_path, data_root):
    raw = tmp_path / "raw"
    write_csv(raw / "a.csv")
    write_csv(raw / "b.csv")
    snapshot = ingest(raw, data_root)
    write_csv(raw / "b.csv", rows=12)  # changed
    write_csv(raw / "c.csv")  # new

    (event,) = run_trigger(trigger_for(raw, data_root, deadline=time.time() + 30))

    assert event["status"] == "success"
    assert sorted(f["uri"] for f in event["files"]) == [str(raw / "b.csv"), str(raw / "c.csv")]
    assert event["snapshot"] == snapshot["uri"]


def test_touched_file_with_same_size_counts_as_changed(tmp_path, data_root):
    raw = tmp_path / "raw"
    write_csv(raw / "a.csv")
    ingest(raw, data_root)
    later = time.time() + 10
    os.utime(raw / "a.csv", (later, later))

    (event,) = run_trigger(trigger_for(raw, data_root, deadline=time.time() + 30))
    assert event["count"] == 1


def test_trigger_can_watch_an_asset_for_event_driven_scheduling(tmp_path, data_root):
    from airflow.sdk import DAG, Asset, AssetWatcher

    trigger = trigger_for(tmp_path / "raw", data_root)
    source = Asset("mlops-source://events", watchers=[AssetWatcher(name="new_events", trigger=trigger)])
    with DAG("ingest_on_new_files", schedule=[source]) as dag:
        IngestDatasetOperator(task_id="ingest", dataset_name="events", source=str(tmp_path / "raw"))
    assert list(dag.timetable.asset_condition.objects) == [source]
    # The DAG processor stores the watcher's trigger by its serialize() output.
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    stored = json.dumps(DagSerialization.to_dict(dag))
    assert "airflow_mlops.triggers.new_data.NewDataTrigger" in stored


def test_a_source_outside_the_allowed_sources_ends_the_wait_with_an_error(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__ALLOWED_SOURCES", str(tmp_path / "landing"))
    (event,) = run_trigger(trigger_for("s3://someone-elses-bucket/raw/", data_root))
    assert event["status"] == "error"
    assert event["message"] == (
        "Not waiting for new data of dataset 'events': source s3://someone-elses-bucket/raw/ is outside the "
        f"allowed sources ({tmp_path / 'landing'}); an administrator allows more in [mlops] allowed_sources"
    )
