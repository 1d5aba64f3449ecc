"""IngestDatasetOperator on local files: snapshots, splits, idempotent retries, and bad input."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.data.snapshots import load_manifest, read_snapshot
from airflow_mlops.exceptions import ConfigurationError, DatasetError, ServiceUnavailableError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from tests.conftest import free_port
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

if TYPE_CHECKING:
    from pathlib import Path

SPLIT = {"train": 0.7, "valid": 0.15, "holdout": 0.15}


def demo_frame(rows: int = 100, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "f1": rng.normal(size=rows).round(6),
            "f2": rng.integers(0, 100, rows),
            "label": rng.integers(0, 2, rows),
        }
    )


@pytest.fixture
def demo_csv(tmp_path) -> Path:
    path = tmp_path / "raw" / "demo.csv"
    path.parent.mkdir()
    demo_frame().to_csv(path, index=False)
    return path


def ingest(source, root, name: str = "demo", **kwargs) -> dict:
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name=name, source=str(source), data_root=str(root), **kwargs
    )
    return op.execute(context={})


def snapshot_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_ingest_csv_with_split(demo_csv, data_root):
    result = ingest(demo_csv, data_root, split=SPLIT, label_column="label")

    assert set(result) == {"name", "snapshot_id", "uri", "sha256", "rows", "schema", "splits"}
    assert result["name"] == "demo"
    assert result["rows"] == 100
    assert result["uri"] == str(data_root / "datasets" / "demo" / result["snapshot_id"])
    assert result["sha256"] == hashlib.sha256(demo_csv.read_bytes()).hexdigest()
    assert result["schema"] == {"row_id": "int64", "f1": "float64", "f2": "int64", "label": "int64"}
    assert result["splits"] == {s: f"{result['uri']}#{s}" for s in ("train", "valid", "holdout")}
    json.dumps(result)  # XCom-safe

    parts = {s: read_snapshot(uri) for s, uri in result["splits"].items()}
    assert {s: len(df) for s, df in parts.items()} == {"train": 70, "valid": 15, "holdout": 15}
    ids = [set(df["row_id"]) for df in parts.values()]
    assert set().union(*ids) == set(range(100))
    assert sum(map(len, ids)) == 100
    pd.testing.assert_frame_equal(read_snapshot(result["uri"]), demo_frame())

    manifest = load_manifest(result["uri"])
    assert manifest["source"] == str(demo_csv)
    assert manifest["format"] == "csv"
    assert manifest["bytes"] == demo_csv.stat().st_size
    assert manifest["split"] == {
        "seed": 42,
        "fractions": SPLIT,
        "rows": {"train": 70, "valid": 15, "holdout": 15},
    }
    assert manifest["files"] == {
        "data": "data.parquet", "train": "train.parquet", "valid": "valid.parquet", "holdout": "holdout.parquet"
    }  # fmt: skip
    assert manifest["created_at"].endswith("+00:00")


def test_rerun_is_idempotent(demo_csv, data_root):
    first = ingest(demo_csv, data_root, split=SPLIT)
    files = snapshot_files(data_root)
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    second = ingest(demo_csv, data_root, split=SPLIT)

    assert second == first
    assert snapshot_files(data_root) == files  # no second snapshot, no leftovers
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes  # nothing rewritten


def test_split_is_deterministic_and_seeded(demo_csv, tmp_path):
    a = ingest(demo_csv, tmp_path / "root-a", split=SPLIT)
    b = ingest(demo_csv, tmp_path / "root-b", split=SPLIT)
    other_seed = ingest(demo_csv, tmp_path / "root-c", split=SPLIT, split_seed=7)

    assert a["snapshot_id"] == b["snapshot_id"]
    for split in SPLIT:
        pd.testing.assert_frame_equal(read_snapshot(a["splits"][split]), read_snapshot(b["splits"][split]))
    assert other_seed["snapshot_id"] != a["snapshot_id"]
    assert set(read_snapshot(other_seed["splits"]["train"])["row_id"]) != set(
        read_snapshot(a["splits"]["train"])["row_id"]
    )
    # Within a split, rows keep their source order.
    assert read_snapshot(a["splits"]["train"])["row_id"].is_monotonic_increasing


def test_snapshot_id_depends_on_content_and_split(demo_csv, data_root, tmp_path):
    no_split = ingest(demo_csv, data_root)
    with_split = ingest(demo_csv, data_root, split=SPLIT)
    changed = tmp_path / "changed.csv"
    demo_frame(seed=1).to_csv(changed, index=False)
    other_data = ingest(changed, data_root)

    assert len({no_split["snapshot_id"], with_split["snapshot_id"], other_data["snapshot_id"]}) == 3
    assert no_split["splits"] == {}
    assert sorted(load_manifest(no_split["uri"])["files"]) == ["data"]
    assert load_manifest(no_split["uri"])["split"] is None


def test_parquet_source_and_default_root(tmp_path, monkeypatch):
    source = tmp_path / "demo.parquet"
    demo_frame().to_parquet(source, index=False)
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path / "env-root"))

    op = IngestDatasetOperator(task_id="ingest", dataset_name="demo", source=str(source))
    result = op.execute(context={})

    assert result["uri"].startswith(str(tmp_path / "env-root" / "datasets" / "demo") + "/")
    assert load_manifest(result["uri"])["format"] == "parquet"
    pd.testing.assert_frame_equal(read_snapshot(result["uri"]), demo_frame())


def test_glob_and_directory_sources_concatenate_files(tmp_path, data_root):
    raw = tmp_path / "raw"
    raw.mkdir()
    frame = demo_frame(90)
    for i in range(3):
        frame.iloc[i * 30 : (i + 1) * 30].to_csv(raw / f"part-{i}.csv", index=False)
    (raw / "_SUCCESS").write_text("")  # a job marker: skipped in directory listings

    by_glob = ingest(raw / "part-*.csv", data_root, name="by-glob")
    by_dir = ingest(raw, data_root, name="by-dir")

    concatenated = b"".join((raw / f"part-{i}.csv").read_bytes() for i in range(3))
    for result in (by_glob, by_dir):
        assert result["rows"] == 90
        assert result["sha256"] == hashlib.sha256(concatenated).hexdigest()
        pd.testing.assert_frame_equal(read_snapshot(result["uri"]), frame)
    assert by_glob["snapshot_id"] == by_dir["snapshot_id"]
    assert len(load_manifest(by_dir["uri"])["source_files"]) == 3


def test_explicit_format_and_csv_options(tmp_path, data_root):
    source = tmp_path / "export.txt"
    source.write_bytes("name;score;label\ncafé;1.5;1\nnaïve;2.5;0\n".encode("latin-1"))

    with pytest.raises(DatasetError, match="cannot tell the format"):
        ingest(source, data_root)
    result = ingest(source, data_root, format="csv", csv_options={"sep": ";", "encoding": "latin-1"})

    assert read_snapshot(result["uri"])["name"].tolist() == ["café", "naïve"]
    assert load_manifest(result["uri"])["csv_options"] == {"sep": ";", "encoding": "latin-1"}


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make_source", "problem"),
    [
        pytest.param(lambda d: d / "missing.csv", "does not exist", id="missing-path"),
        pytest.param(lambda d: d / "nothing-*.csv", "no files match", id="glob-no-match"),
        pytest.param(lambda d: _write(d / "empty.csv", b""), r"is empty \(0 bytes\)", id="empty-file"),
        pytest.param(lambda d: _write(d / "header.csv", b"f1,f2,label\n"), "has no rows", id="header-only"),
        pytest.param(lambda d: _write(d / "fake.parquet", b"a,b\n1,2\n"), r"is not a Parquet file \(it does not start with PAR1", id="not-parquet"),
        pytest.param(lambda d: _write(d / "latin.csv", "a,label\ncafé,1\n".encode("latin-1")), "not valid utf-8", id="not-utf8"),
        pytest.param(lambda d: (d / "empty-dir").mkdir() or d / "empty-dir", "holds no data files", id="empty-dir"),
    ],
)  # fmt: skip
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, data_root, make_source, problem):
    source = make_source(tmp_path)
    with pytest.raises(DatasetError, match=problem) as info:
        ingest(source, data_root, name="bad-input")
    assert "'bad-input'" in str(info.value)
    assert info.value.retryable is False
    assert (info.value.dataset, info.value.uri) == ("bad-input", str(source))
    assert snapshot_files(data_root) == []


def test_missing_label_column_fails_before_writing(demo_csv, data_root):
    with pytest.raises(DatasetError, match="label column 'target' is missing") as info:
        ingest(demo_csv, data_root, label_column="target")
    assert "'demo'" in str(info.value)
    assert (info.value.dataset, info.value.uri, info.value.reason) == (
        "demo",
        str(demo_csv),
        "missing label column",
    )
    assert "label" in str(info.value)
    assert snapshot_files(data_root) == []


def test_files_with_different_columns_are_rejected(tmp_path, data_root):
    demo_frame(10).to_csv(tmp_path / "a.csv", index=False)
    demo_frame(10).drop(columns="f2").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DatasetError, match="must have the same columns"):
        ingest(tmp_path / "*.csv", data_root)
    assert snapshot_files(data_root) == []


def test_split_too_small_for_the_data(tmp_path, data_root):
    source = tmp_path / "tiny.csv"
    demo_frame(4).to_csv(source, index=False)
    with pytest.raises(DatasetError, match="split 'valid' would get no rows"):
        ingest(source, data_root, split=SPLIT)


def test_crash_mid_write_leaves_no_snapshot_and_retry_succeeds(demo_csv, data_root, monkeypatch):
    real_to_parquet = pd.DataFrame.to_parquet
    calls = []

    def crash_on_second_file(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_to_parquet(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        ingest(demo_csv, data_root, split=SPLIT)
    assert snapshot_files(data_root) == []  # no half snapshot, no staging leftovers

    monkeypatch.setattr(pd.DataFrame, "to_parquet", real_to_parquet)
    result = ingest(demo_csv, data_root, split=SPLIT)
    assert len(read_snapshot(result["splits"]["holdout"])) == 15


@pytest.mark.parametrize("name", ["a/b", "..", "../escape", "/abs/path", "demo\n"])
def test_unsafe_dataset_name_rejected_at_init(demo_csv, name):
    with pytest.raises(ValueError, match="Invalid dataset name"):
        IngestDatasetOperator(task_id="ingest", dataset_name=name, source=str(demo_csv))


def test_templated_dataset_name_is_checked_at_execute(demo_csv, data_root):
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="{{ params.name }}", source=str(demo_csv), data_root=str(data_root)
    )
    assert "dataset_name" in op.template_fields
    assert "source" in op.template_fields
    op.dataset_name = "../../etc"  # what the template rendered to
    with pytest.raises(DatasetError, match="Invalid dataset name") as info:
        op.execute(context={})
    assert snapshot_files(data_root) == []
    assert isinstance(info.value, ConfigurationError)  # and a ValueError: fix the DAG, do not retry
    assert isinstance(info.value, ValueError)
    assert info.value.retryable is False
    assert info.value.dataset == "../../etc"


def test_templated_source_that_renders_empty_fails_without_retries(data_root):
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="demo", source="{{ params.source }}", data_root=str(data_root)
    )
    op.source = " "  # what the template rendered to
    with pytest.raises(ConfigurationError, match="source must be a non-empty path") as info:
        op.execute(context={})
    assert info.value.retryable is False
    assert (info.value.dataset, info.value.uri) == ("demo", " ")


def test_unreachable_s3_is_retryable(data_root, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_TEST_UNREACHABLE", json.dumps({
        "conn_type": "aws", "login": "a", "password": "b",
        "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1",
                  "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}},
    }))  # fmt: skip
    with pytest.raises(ServiceUnavailableError, match="cannot read source s3://raw/demo.csv") as info:
        ingest("s3://raw/demo.csv", data_root, aws_conn_id="mlops_test_unreachable")
    assert info.value.retryable is True
    assert (info.value.dataset, info.value.uri) == ("demo", "s3://raw/demo.csv")
    assert snapshot_files(data_root) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": {"train": 0.8, "test": 0.2}}, "Unknown split name"),
        ({"split": {"train": 0.8, "valid": 0.3}}, "must sum to 1"),
        ({"split": {"train": 1.2, "valid": -0.2}}, r"must be a number in \(0, 1\]"),
        ({"split": {"train": 0.0, "valid": 1.0}}, r"must be a number in \(0, 1\]"),
        ({"split": [0.7, 0.3]}, "must be a dict"),
        ({"format": "json"}, "format must be one of"),
        ({"split_seed": -1}, "split_seed"),
        ({"csv_options": {"chunksize": 10}}, "csv_options may not set"),
        ({"csv_options": {"dtype": object}}, "JSON-serialisable"),
        ({"source": ""}, "source must be"),
    ],
)
def test_invalid_arguments_rejected_at_init(kwargs, message):
    arguments = {"task_id": "ingest", "dataset_name": "demo", "source": "data.csv", **kwargs}
    with pytest.raises(ValueError, match=message):
        IngestDatasetOperator(**arguments)
