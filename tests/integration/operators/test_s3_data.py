"""Ingest and validation against a real S3-compatible server, through the ``aws_default`` connection."""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.data.snapshots import load_manifest, read_snapshot
from airflow_mlops.exceptions import DatasetError
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration

SPLIT = {"train": 0.8, "holdout": 0.2}


def demo_csv(rows: int = 50) -> bytes:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"row_id": range(rows), "f1": rng.normal(size=rows), "label": rng.integers(0, 2, rows)}
    )
    return frame.to_csv(index=False).encode()


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh, versioned bucket (versions show whether anything was written twice)."""
    name = f"mlops-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def ingest(source: str, root: str, **kwargs) -> dict:
    op = IngestDatasetOperator(task_id="ingest", dataset_name="demo", source=source, data_root=root, **kwargs)
    return op.execute(context={})


def keys_under(s3_server, bucket: str, prefix: str) -> list[str]:
    response = s3_server.client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted(version["Key"] for version in response.get("Versions", []))


def test_s3_source_to_s3_snapshot_and_back(s3_server, bucket):
    body = demo_csv()
    s3_server.client().put_object(Bucket=bucket, Key="raw/demo.csv", Body=body)
    root = f"s3://{bucket}/mlops"

    result = ingest(f"s3://{bucket}/raw/demo.csv", root, split=SPLIT, label_column="label")

    assert result["uri"] == f"{root}/datasets/demo/{result['snapshot_id']}"
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["rows"] == 50
    storage = StorageHook().get_conn()
    train = read_snapshot(result["splits"]["train"], storage=storage)
    holdout = read_snapshot(result["splits"]["holdout"], storage=storage)
    assert (len(train), len(holdout)) == (40, 10)
    assert set(train["row_id"]) | set(holdout["row_id"]) == set(range(50))
    pd.testing.assert_frame_equal(
        read_snapshot(result["uri"], storage=storage), pd.read_csv(io.BytesIO(body))
    )
    assert load_manifest(result["uri"], storage)["source"] == f"s3://{bucket}/raw/demo.csv"

    # A retry finds the manifest and writes nothing: one version of each object.
    assert ingest(f"s3://{bucket}/raw/demo.csv", root, split=SPLIT) == result
    snapshot_prefix = f"mlops/datasets/demo/{result['snapshot_id']}/"
    assert keys_under(s3_server, bucket, snapshot_prefix) == [
        f"{snapshot_prefix}{name}"
        for name in ("_manifest.json", "data.parquet", "holdout.parquet", "train.parquet")
    ]


def test_s3_prefix_source_skips_markers(s3_server, bucket):
    client = s3_server.client()
    body = demo_csv(40)
    lines = body.decode().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    client.put_object(Bucket=bucket, Key="raw/day=1/part-0.csv", Body=(header + "".join(rows[:20])).encode())
    client.put_object(Bucket=bucket, Key="raw/day=1/part-1.csv", Body=(header + "".join(rows[20:])).encode())
    client.put_object(Bucket=bucket, Key="raw/day=1/_SUCCESS", Body=b"")
    client.put_object(Bucket=bucket, Key="raw/day=10/part-0.csv", Body=b"not,this\n1,2\n")

    result = ingest(f"s3://{bucket}/raw/day=1", f"s3://{bucket}/mlops")

    assert result["rows"] == 40
    pd.testing.assert_frame_equal(
        read_snapshot(result["uri"], storage=StorageHook().get_conn()), pd.read_csv(io.BytesIO(body))
    )


def test_runtime_reads_s3_snapshot_with_only_the_aws_environment(s3_server, bucket, monkeypatch):
    s3_server.client().put_object(Bucket=bucket, Key="raw/demo.csv", Body=demo_csv())
    result = ingest(f"s3://{bucket}/raw/demo.csv", f"s3://{bucket}/mlops", split=SPLIT)
    # What a training pod gets: credentials and endpoint in its environment, no Airflow connection.
    for name, value in {
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert len(read_snapshot(result["splits"]["train"])) == 40


def test_validate_s3_snapshot(s3_server, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="raw/demo.csv", Body=demo_csv())
    result = ingest(f"s3://{bucket}/raw/demo.csv", f"s3://{bucket}/mlops", split=SPLIT)
    summary = ValidateDatasetOperator(
        task_id="validate", dataset_uri=result["splits"]["holdout"],
        expectations=[{"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}}],
    ).execute(context={})  # fmt: skip
    assert summary["success"] is True
    assert summary["rows"] == 10


def test_zero_byte_object_is_rejected(s3_server, bucket):
    s3_server.client().put_object(Bucket=bucket, Key="raw/empty.csv", Body=b"")
    with pytest.raises(DatasetError, match=r"'demo'.*s3://.*/raw/empty.csv is empty \(0 bytes\)"):
        ingest(f"s3://{bucket}/raw/empty.csv", f"s3://{bucket}/mlops")
    assert keys_under(s3_server, bucket, "mlops/") == []


def test_missing_key_is_rejected(s3_server, bucket):
    with pytest.raises(DatasetError, match=r"'demo'.*s3://.*/raw/missing.csv does not exist") as info:
        ingest(f"s3://{bucket}/raw/missing.csv", f"s3://{bucket}/mlops")
    assert info.value.retryable is False  # a retry would find the same nothing
    assert (info.value.dataset, info.value.uri) == ("demo", f"s3://{bucket}/raw/missing.csv")
    with pytest.raises(DatasetError, match="no files match"):
        ingest(f"s3://{bucket}/raw/*.parquet", f"s3://{bucket}/mlops")
    with pytest.raises(DatasetError, match="cannot read source"):
        ingest(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/raw/x.csv", f"s3://{bucket}/mlops")
    assert keys_under(s3_server, bucket, "mlops/") == []
