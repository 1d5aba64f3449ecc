"""NewDataTrigger against a real S3-compatible server: ETags tell changed objects apart."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.triggers.new_data import NewDataTrigger
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration


def run(trigger: NewDataTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(first(), timeout=60))


def test_changed_object_of_same_size_fires(s3_server):
    bucket = f"mlops-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="raw/a.csv", Body=b"x,label\n1,0\n2,1\n")
    client.put_object(Bucket=bucket, Key="raw/_SUCCESS", Body=b"")
    root = f"s3://{bucket}/mlops"
    IngestDatasetOperator(
        task_id="i", dataset_name="events", source=f"s3://{bucket}/raw/", data_root=root
    ).execute(context={})

    def trigger(deadline: float) -> NewDataTrigger:
        return NewDataTrigger(
            source=f"s3://{bucket}/raw/",
            dataset_name="events",
            data_root=root,
            poll_interval=0.1,
            deadline=deadline,
        )

    assert run(trigger(time.time() + 0.5))["status"] == "timeout"

    client.put_object(Bucket=bucket, Key="raw/a.csv", Body=b"x,label\n3,0\n4,1\n")  # same size, new ETag
    event = run(trigger(time.time() + 30))
    assert event["status"] == "success"
    assert [f["uri"] for f in event["files"]] == [f"s3://{bucket}/raw/a.csv"]
    assert event["snapshot"].startswith(f"{root}/datasets/events/")


def test_unreachable_bucket_ends_in_an_error_event(s3_server, monkeypatch):
    monkeypatch.setattr("airflow_mlops.triggers.new_data.MAX_CONSECUTIVE_ERRORS", 2)
    event = run(
        NewDataTrigger(source="s3://no-such-bucket-x/raw/", dataset_name="events", data_root="s3://no-such-bucket-x/m",
                       poll_interval=0.05)
    )  # fmt: skip
    assert event["status"] == "error"
    assert "no-such-bucket-x" in event["message"]
