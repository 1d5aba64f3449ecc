"""Storage (local side), snapshot layout helpers, and the StorageHook's S3 client settings."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.data.snapshots import (
    check_dataset_name,
    load_manifest,
    parse_snapshot_uri,
    read_snapshot,
    resolve_data_root,
    snapshot_uri,
)
from airflow_mlops.data.storage import Storage, has_glob, is_s3, join, split_s3
from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.hooks.storage import StorageHook


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


@pytest.mark.parametrize("name", ["churn", "churn-v2", "customers_2024.q1", "A1"])
def test_valid_dataset_names(name):
    assert check_dataset_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "..", "../etc", "/abs/path", "a..b", ".hidden", "x" * 200, None])
def test_unsafe_dataset_names_are_rejected(name):
    with pytest.raises(ValueError, match="Invalid dataset name"):
        check_dataset_name(name)


def test_data_root_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path / "from-env"))
    assert resolve_data_root() == str(tmp_path / "from-env")
    assert resolve_data_root("s3://bucket/prefix/") == "s3://bucket/prefix"
    monkeypatch.delenv("MLOPS_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root() == str(tmp_path / ".mlops-data")  # absolute, so it survives a chdir
    assert snapshot_uri("s3://b/r", "churn", "abc") == "s3://b/r/datasets/churn/abc"
    with pytest.raises(ValueError, match="Invalid dataset name"):
        snapshot_uri("/root", "../escape", "abc")


def test_snapshot_uri_parsing():
    assert parse_snapshot_uri("s3://b/r/datasets/x/abc#train") == ("s3://b/r/datasets/x/abc", "train")
    assert parse_snapshot_uri("/r/datasets/x/abc/") == ("/r/datasets/x/abc", None)


def test_snapshot_without_manifest_does_not_exist(tmp_path):
    snapshot = tmp_path / "datasets" / "x" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(FileNotFoundError, match="_manifest.json is missing"):
        load_manifest(str(snapshot))
    with pytest.raises(FileNotFoundError):
        read_snapshot(f"{snapshot}#train")


def test_read_snapshot_names_missing_split(tmp_path):
    import pandas as pd

    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    pd.DataFrame({"a": [1, 2]}).to_parquet(snapshot / "data.parquet", index=False)
    manifest = {"name": "x", "files": {"data": "data.parquet"}}
    (snapshot / "_manifest.json").write_text(json.dumps(manifest))
    assert read_snapshot(str(snapshot))["a"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="has no split 'train'"):
        read_snapshot(f"{snapshot}#train")


# -- StorageHook -------------------------------------------------------------------------------------------


class _Sent(Exception):
    """Raised from a botocore hook to stop a request after it was signed."""


def _signed_headers(client) -> dict[str, str]:
    """Headers of the request the client would send (nothing leaves the machine)."""
    seen: dict[str, str] = {}

    def capture(request, **_):
        seen.update({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
        raise _Sent

    client.meta.events.register("before-send.s3", capture)
    with pytest.raises(_Sent):
        client.list_buckets()
    return seen


def _aws_connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "aws", **fields}))


def test_hook_builds_client_from_connection(monkeypatch, capfd):
    _aws_connection(
        monkeypatch, "mlops_test_s3", login="AKIDFROMCONN", password="very-secret-key",
        extra={"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-3", "aws_session_token": "tok-123"},
    )  # fmt: skip
    storage = StorageHook(aws_conn_id="mlops_test_s3").get_conn()
    assert isinstance(storage, Storage)
    assert storage.s3.meta.endpoint_url == "http://127.0.0.1:9"
    assert storage.s3.meta.region_name == "eu-west-3"
    headers = _signed_headers(storage.s3)
    assert "Credential=AKIDFROMCONN/" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "tok-123"
    out, err = capfd.readouterr()
    assert "127.0.0.1:9" in out + err  # the hook logged which endpoint it uses...
    assert "very-secret-key" not in out + err
    assert "tok-123" not in out + err


def test_hook_reads_service_config_endpoint(monkeypatch):
    _aws_connection(
        monkeypatch, "mlops_test_s3_svc", login="a", password="b",
        extra={"endpoint_url": "http://127.0.0.1:8", "service_config": {"s3": {"endpoint_url": "http://127.0.0.1:7"}}},
    )  # fmt: skip
    assert (
        StorageHook(aws_conn_id="mlops_test_s3_svc").get_conn().s3.meta.endpoint_url == "http://127.0.0.1:7"
    )


def test_hook_without_connection_uses_boto3_defaults(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:6")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    client = StorageHook(aws_conn_id=None).get_conn().s3
    assert client.meta.endpoint_url == "http://127.0.0.1:6"
    assert "Credential=AKIDFROMENV/" in _signed_headers(client)["Authorization"]


def test_hook_names_missing_connection():
    with pytest.raises(ConnectionSetupError, match="'no_such_aws_conn' is not defined"):
        StorageHook(aws_conn_id="no_such_aws_conn").get_conn()


def test_hook_refuses_role_assumption(monkeypatch):
    _aws_connection(monkeypatch, "mlops_test_s3_role", extra={"role_arn": "arn:aws:iam::1:role/x"})
    with pytest.raises(ConnectionSetupError, match="role_arn"):
        StorageHook(aws_conn_id="mlops_test_s3_role").get_conn()
