"""Server-side S3->S3 snapshots: no data through the worker, manifest from the Parquet footer."""

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
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration


def frame(rows: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {"f1": rng.normal(size=rows), "f2": rng.integers(0, 9, rows), "label": rng.integers(0, 2, rows)}
    )


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"mlops-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


class Traffic:
    """Counts bytes of object data the worker's S3 client receives (GetObject bodies) and sends."""

    def __init__(self, client) -> None:
        self.received = 0
        self.sent = 0
        self.calls: list[str] = []
        client.meta.events.register("after-call.s3", self._after)
        client.meta.events.register("before-call.s3", self._before)

    def _before(self, model, params, **_):
        self.calls.append(model.name)
        body = params.get("body")
        if model.name in ("PutObject", "UploadPart") and body is not None:
            self.sent += len(body) if isinstance(body, bytes) else 0

    def _after(self, model, parsed, **_):
        if model.name == "GetObject":
            self.received += int(parsed.get("ContentLength") or 0)


def run_ingest(source: str, root: str, **kwargs):
    op = IngestDatasetOperator(task_id="ingest", dataset_name="big", source=source, data_root=root, **kwargs)
    traffic = Traffic(op.hook.storage.s3)
    return op.execute(context={}), traffic


def test_single_parquet_object_is_copied_server_side(s3_server, bucket):
    df = frame()
    body = parquet_bytes(df)
    s3_server.client().put_object(Bucket=bucket, Key="raw/big.parquet", Body=body)

    result, traffic = run_ingest(
        f"s3://{bucket}/raw/big.parquet", f"s3://{bucket}/mlops", label_column="label"
    )

    assert result["rows"] == len(df)
    assert result["schema"] == {"f1": "float64", "f2": "int64", "label": "int64"}
    assert "CopyObject" in traffic.calls or "UploadPartCopy" in traffic.calls
    assert traffic.received < len(body) // 2  # only the footer was read
    assert traffic.sent < 4096  # only the manifest was written
    manifest = load_manifest(result["uri"], StorageHook().storage)
    assert manifest["copy"] == "server-side"
    assert manifest["sha256_of"] == "s3-etag+size"
    assert manifest["source_files"][0]["etag"]
    copied = s3_server.client().get_object(
        Bucket=bucket, Key=f"mlops/datasets/big/{result['snapshot_id']}/data.parquet"
    )
    assert copied["Body"].read() == body  # the object as-is
    pd.testing.assert_frame_equal(read_snapshot(result["uri"], storage=StorageHook().storage), df)

    again, traffic = run_ingest(f"s3://{bucket}/raw/big.parquet", f"s3://{bucket}/mlops")
    assert again == result
    assert "CopyObject" not in traffic.calls
    assert "PutObject" not in traffic.calls


def test_object_checksum_sha256_is_the_content_hash(s3_server, bucket):
    body = parquet_bytes(frame(300))
    s3_server.client().put_object(Bucket=bucket, Key="raw/c.parquet", Body=body, ChecksumAlgorithm="SHA256")

    result, _ = run_ingest(f"s3://{bucket}/raw/c.parquet", f"s3://{bucket}/mlops")

    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert load_manifest(result["uri"], StorageHook().storage)["sha256_of"] == "bytes"


def test_split_or_csv_falls_back_to_reading_the_data(s3_server, bucket):
    body = parquet_bytes(frame(300))
    s3_server.client().put_object(Bucket=bucket, Key="raw/s.parquet", Body=body)

    result, traffic = run_ingest(
        f"s3://{bucket}/raw/s.parquet", f"s3://{bucket}/mlops", split={"train": 0.5, "holdout": 0.5}
    )

    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert set(result["splits"]) == {"train", "holdout"}
    assert "CopyObject" not in traffic.calls


def test_not_parquet_and_missing_label_fail_before_copying(s3_server, bucket):
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="raw/bad.parquet", Body=b"not parquet at all")
    client.put_object(Bucket=bucket, Key="raw/ok.parquet", Body=parquet_bytes(frame(50)))

    with pytest.raises(DatasetError, match=r"raw/bad.parquet is not a Parquet file \(it does not start with PAR1"):
        run_ingest(f"s3://{bucket}/raw/bad.parquet", f"s3://{bucket}/mlops")
    with pytest.raises(DatasetError, match="label column 'target' is missing"):
        run_ingest(f"s3://{bucket}/raw/ok.parquet", f"s3://{bucket}/mlops", label_column="target")
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="mlops/")
