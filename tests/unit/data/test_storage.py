"""Storage (local side): URIs, reads and writes, listings and globs, transfer progress lines."""

from __future__ import annotations

import logging

import pytest

from airflow_mlops.data.storage import Storage, TransferProgress, has_glob, is_s3, join, split_s3


def test_uri_helpers():
    assert is_s3("s3://bucket/key")
    assert not is_s3("/data/key")
    assert split_s3("s3://bucket/a/b.csv") == ("bucket", "a/b.csv")
    assert join("s3://bucket/root/", "datasets", "/name/") == "s3://bucket/root/datasets/name"
    assert join("/root", "a", "b") == "/root/a/b"
    assert has_glob("/data/*.csv")
    assert not has_glob("/data/x.csv")


def test_local_write_read_and_missing(tmp_path):
    storage = Storage()
    target = str(tmp_path / "deep" / "dir" / "file.bin")
    storage.write_bytes(target, b"hello")
    assert storage.read_bytes(target) == b"hello"
    assert storage.exists(target)
    assert storage.size(target) == 5
    # Atomic writes leave no temporary siblings behind.
    assert sorted(p.name for p in (tmp_path / "deep" / "dir").iterdir()) == ["file.bin"]
    assert storage.read_bytes(f"file://{target}") == b"hello"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "missing.bin"))
    assert not storage.exists(str(tmp_path / "missing.bin"))


def test_local_listing_and_glob(tmp_path):
    storage = Storage()
    for rel in ("data/a.csv", "data/sub/b.csv", "data2/c.csv", "data/notes.txt"):
        storage.write_bytes(str(tmp_path / rel), b"x")
    assert storage.list_uris(str(tmp_path / "data")) == [
        str(tmp_path / "data/a.csv"),
        str(tmp_path / "data/notes.txt"),
        str(tmp_path / "data/sub/b.csv"),
    ]
    assert storage.list_uris(str(tmp_path / "nothing-here")) == []
    assert storage.glob(str(tmp_path / "data" / "**" / "*.csv")) == [
        str(tmp_path / "data/a.csv"),
        str(tmp_path / "data/sub/b.csv"),
    ]
    copy = tmp_path / "copy" / "a.csv"
    storage.upload_file(tmp_path / "data/a.csv", str(copy))
    assert copy.read_bytes() == b"x"


def test_transfer_progress_logs_bytes_percent_and_rate(caplog):
    logger = logging.getLogger("test.progress")
    progress = TransferProgress("Upload s3://b/k", total=1000, interval=0, logger=logger)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress(250)
        progress(750)
        progress.done()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Upload s3://b/k in progress: 250 of 1000 bytes (25.0%)")
    assert lines[-1].startswith("Upload s3://b/k done: 1000 of 1000 bytes (100.0%)")
    assert lines[-1].endswith("MiB/s")


def test_transfer_progress_is_rate_limited(caplog):
    logger = logging.getLogger("test.progress2")
    progress = TransferProgress("Download s3://b/k", total=10, interval=3600, logger=logger)
    with caplog.at_level(logging.INFO, logger="test.progress2"):
        for _ in range(10):
            progress(1)
    assert caplog.records == []
    assert progress.bytes == 10


def test_server_faults_timeouts_and_lost_connections_are_transient():
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    from airflow_mlops.data.storage import is_transient_error

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert is_transient_error(client_error("InternalError", 500))
    assert is_transient_error(client_error("SlowDown", 503))
    assert is_transient_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert is_transient_error(ReadTimeoutError(endpoint_url="http://127.0.0.1:9"))
    assert not is_transient_error(client_error("AccessDenied", 403))
    assert not is_transient_error(client_error("NoSuchKey", 404))
    assert not is_transient_error(ValueError("bad input"))
