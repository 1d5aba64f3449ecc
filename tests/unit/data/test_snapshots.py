"""Snapshot layout: dataset names, data roots, snapshot URIs, manifests, ids and results."""

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


@pytest.mark.parametrize("name", ["churn", "churn-v2", "customers_2024.q1", "A1"])
def test_valid_dataset_names(name):
    assert check_dataset_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/b",
        "..",
        "../etc",
        "/abs/path",
        "a..b",
        ".hidden",
        "x" * 200,
        None,
        "churn\n",
        "churn\r\n",
        "\nchurn",
    ],
)
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
