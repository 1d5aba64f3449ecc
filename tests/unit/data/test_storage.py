"""Storage (local and in-memory stores): URIs, reads and writes, listings and globs, transfer progress lines."""

from __future__ import annotations

import logging
import uuid

import pytest

from airflow_mlops.data.storage import (
    Storage,
    TransferProgress,
    as_uri,
    has_glob,
    is_local,
    join,
    scheme,
    split_bucket,
    split_conn,
)


def test_uri_helpers():
    assert [scheme(u) for u in ("s3://b/k", "GS://b/k", "abfs://c/k", "/data/k", "file:///data/k", "rel/k")] == [
        "s3", "gs", "abfs", "file", "file", "file",
    ]  # fmt: skip
    assert not is_local("memory://bucket/key")
    assert is_local("file:///data/key")
    assert split_bucket("s3://bucket/a/b.csv") == ("bucket", "a/b.csv")
    assert split_bucket("gs://my_gcp@bucket/a/b.csv") == ("bucket", "a/b.csv")
    # The connection is named as ObjectStoragePath names it; an Azure account host is not a connection.
    assert split_conn("gs://my_gcp@bucket/a") == ("my_gcp", "gs://bucket/a")
    assert split_conn("gs://bucket/a") == (None, "gs://bucket/a")
    azure = "abfs://container@account.dfs.core.windows.net/a"
    assert split_conn(azure) == (None, azure)
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


def test_as_uri_keeps_the_connection_of_an_object_storage_path(tmp_path):
    from airflow.sdk import ObjectStoragePath

    assert as_uri(ObjectStoragePath("gs://bucket/root", conn_id="my_gcp")) == "gs://my_gcp@bucket/root"
    assert as_uri(ObjectStoragePath("s3://aws_x@bucket/root")) == "s3://aws_x@bucket/root"
    assert as_uri(tmp_path) == str(tmp_path)
    assert as_uri("gs://bucket/root") == "gs://bucket/root"


@pytest.fixture
def memory_root():
    import fsspec

    root = f"memory://bucket-{uuid.uuid4().hex[:8]}"
    yield root
    memory = fsspec.filesystem("memory")
    if memory.exists(root.split("://", 1)[1]):
        memory.rm(root.split("://", 1)[1], recursive=True)


def test_any_fsspec_store_reads_writes_lists_globs_and_copies(memory_root, tmp_path):
    storage = Storage()
    storage.write_bytes(f"{memory_root}/data/a.csv", b"x,y\n1,2\n")
    storage.write_bytes(f"{memory_root}/data/sub/b.csv", b"x,y\n3,4\n")
    storage.write_bytes(f"{memory_root}/data2/c.csv", b"x\n")
    assert storage.exists(f"{memory_root}/data/a.csv")
    assert not storage.exists(f"{memory_root}/data")  # a folder is not a file
    assert storage.size(f"{memory_root}/data/a.csv") == 8
    assert storage.read_range(f"{memory_root}/data/a.csv", 4, 3) == b"1,2"
    # A prefix is a folder: data2/ is not under data/.
    assert storage.list_uris(f"{memory_root}/data") == [f"{memory_root}/data/a.csv", f"{memory_root}/data/sub/b.csv"]
    assert storage.glob(f"{memory_root}/data/*.csv") == [f"{memory_root}/data/a.csv", f"{memory_root}/data/sub/b.csv"]
    entries = storage.list_entries(f"{memory_root}/data")
    assert [e["size"] for e in entries] == [8, 8]
    # Within the store, then out of it and back in.
    storage.copy(f"{memory_root}/data/a.csv", f"{memory_root}/copy/a.csv")
    storage.copy(f"{memory_root}/copy/a.csv", str(tmp_path / "a.csv"))
    storage.copy(str(tmp_path / "a.csv"), f"{memory_root}/back/a.csv")
    assert storage.read_bytes(f"{memory_root}/back/a.csv") == b"x,y\n1,2\n"
    storage.delete(f"{memory_root}/back/a.csv")
    assert not storage.exists(f"{memory_root}/back/a.csv")
    with pytest.raises(FileNotFoundError, match="No object at memory://"):
        storage.read_bytes(f"{memory_root}/missing.csv")
    with pytest.raises(FileNotFoundError):
        storage.head(f"{memory_root}/missing.csv")


def test_a_connection_on_a_store_no_provider_registers_is_refused(memory_root):
    with pytest.raises(ValueError, match="names the Airflow connection 'my_conn'.*no installed provider"):
        Storage().read_bytes(memory_root.replace("memory://", "memory://my_conn@") + "/a.csv")
