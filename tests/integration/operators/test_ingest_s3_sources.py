"""S3 sources: format and limits checked from listings and first bytes, before anything is downloaded."""

from __future__ import annotations

import gzip

import pytest

from airflow_mlops.data import sources
from airflow_mlops.exceptions import DatasetConfigurationError, DatasetError
from airflow_mlops.operators.ingest import IngestDatasetOperator

pytestmark = pytest.mark.integration

CSV = "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20))


def ingest(source, root) -> dict:
    op = IngestDatasetOperator(task_id="ingest", dataset_name="landing", source=source, data_root=str(root))
    return op.execute(context={})


def test_an_s3_prefix_is_checked_before_any_download(s3_server, tmp_path, monkeypatch):
    bucket = f"ml-landing-{tmp_path.name[-8:].lower().replace('_', '-')}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="churn/a.csv", Body=CSV.encode())
    client.put_object(Bucket=bucket, Key="churn/b.csv", Body=gzip.compress(CSV.encode()))
    client.put_object(Bucket=bucket, Key="private/c.csv", Body=CSV.encode())
    monkeypatch.setenv("AIRFLOW__MLOPS__ALLOWED_SOURCES", f"s3://{bucket}/churn")
    downloads = []
    monkeypatch.setattr(sources, "fetch_files", lambda *args, **kwargs: downloads.append(args) or [])

    with pytest.raises(DatasetError, match=rf"s3://{bucket}/churn/b\.csv is gzip-compressed, not CSV text"):
        ingest(f"s3://{bucket}/churn/", tmp_path / "root")
    monkeypatch.setenv("AIRFLOW__MLOPS__MAX_SOURCE_FILES", "1")
    with pytest.raises(DatasetError, match=rf"source s3://{bucket}/churn/ holds 2 files, more than"):
        ingest(f"s3://{bucket}/churn/", tmp_path / "root")
    with pytest.raises(DatasetConfigurationError, match=rf"source s3://{bucket}/private/c\.csv is outside"):
        ingest(f"s3://{bucket}/private/c.csv", tmp_path / "root")
    with pytest.raises(DatasetConfigurationError, match=rf"source s3://{bucket}/churn\* is outside"):
        ingest(f"s3://{bucket}/churn*", tmp_path / "root")  # a glob may not widen the prefix
    assert downloads == []
