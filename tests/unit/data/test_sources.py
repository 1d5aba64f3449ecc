"""Sources without Airflow: which files a source names, and their fingerprints."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from airflow_mlops.data.sources import (
    combined_sha256,
    fetch_sources,
    frame_sha256,
    normalize_source,
    object_sha256,
    resolve_sources,
    visible_files,
)
from airflow_mlops.data.storage import Storage


def test_directory_listing_skips_markers_and_hidden_files(tmp_path):
    for name in ("b.csv", "a.csv", "_SUCCESS", ".a.csv.crc", "_tmp/c.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n1\n")
    assert resolve_sources(Storage(), str(tmp_path)) == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert visible_files(["s3://b/p/x.csv", "s3://b/p/_SUCCESS"], "s3://b/p") == ["s3://b/p/x.csv"]


@pytest.mark.parametrize(
    ("source", "message"),
    [("missing.csv", "does not exist"), ("nothing-*.csv", "no files match"), ("empty", "holds no data files")],
)
def test_a_source_that_names_nothing_says_so(tmp_path, source, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=message):
        resolve_sources(Storage(), str(tmp_path / source))


def test_fingerprints_hash_the_bytes(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"x\n1\n")
    (tmp_path / "b.csv").write_bytes(b"x\n2\n")
    files = fetch_sources(Storage(), str(tmp_path), tmp_path / "tmp")
    assert [f.describe()["bytes"] for f in files] == [4, 4]
    assert files[0].sha256 == hashlib.sha256(b"x\n1\n").hexdigest()
    assert combined_sha256(files) == hashlib.sha256(b"x\n1\nx\n2\n").hexdigest()
    assert combined_sha256(files[:1]) == files[0].sha256
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.csv is empty \(0 bytes\)"):
        fetch_sources(Storage(), str(tmp_path / "empty.csv"), tmp_path / "tmp")


def test_row_and_object_hashes():
    df = pd.DataFrame({"a": [1, 2]})
    assert frame_sha256(df) == frame_sha256(df.copy())
    assert frame_sha256(df) != frame_sha256(pd.DataFrame({"a": [2, 1]}))
    assert object_sha256({"sha256": "ab" * 32, "etag": "e", "size": 1}) == ("ab" * 32, "bytes")
    digest, of = object_sha256({"sha256": None, "etag": "e", "size": 1})
    assert (digest, of) == (hashlib.sha256(b"s3-etag:e\nsize:1").hexdigest(), "s3-etag+size")


def test_local_sources_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_source(" raw/ ") == str(tmp_path / "raw")
    assert normalize_source("s3://b/raw/") == "s3://b/raw/"
