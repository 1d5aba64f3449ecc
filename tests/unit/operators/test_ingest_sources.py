"""
What an ingest may read, and how much, checked before any byte is downloaded or hashed.

``[mlops] allowed_sources``, ``max_source_files`` and ``max_source_bytes`` are set through Airflow's
environment configuration, as a deployment sets them.
"""

from __future__ import annotations

import gzip
import os
import time

import pandas as pd
import pytest

from airflow_mlops.data import sources
from airflow_mlops.data.snapshots import staging_owner
from airflow_mlops.exceptions import DatasetConfigurationError, DatasetError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from tests.support.context import context_for

CSV = "x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20))


@pytest.fixture
def landing(tmp_path, monkeypatch):
    """The one folder ingests may read (``[mlops] allowed_sources``), with one good CSV file."""
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a.csv").write_text(CSV)
    monkeypatch.setenv("AIRFLOW__MLOPS__ALLOWED_SOURCES", f"{folder},s3://ml-landing/churn")
    return folder


@pytest.fixture
def nothing_hashed(monkeypatch):
    """Fail the test if the ingest goes on to download or hash the source."""

    def refuse(*args, **kwargs):
        raise AssertionError("the source was downloaded or hashed before it was checked")

    monkeypatch.setattr(sources, "fetch_files", refuse)


def ingest(source, root, name: str = "landing", context=None, **kwargs) -> dict:
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name=name, source=str(source), data_root=str(root), **kwargs
    )
    return op.execute(context=context if context is not None else {})


def test_a_source_outside_the_allowed_sources_fails_at_once_naming_both(landing, tmp_path, data_root):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(CSV)

    with pytest.raises(DatasetConfigurationError) as info:
        ingest(outside, data_root)
    assert str(info.value) == (
        f"Dataset 'landing': source {outside} is outside the allowed sources ({landing}, s3://ml-landing/churn); "
        "an administrator allows more in [mlops] allowed_sources"
    )
    assert info.value.retryable is False
    assert (info.value.dataset, info.value.uri, info.value.reason) == (
        "landing",
        str(outside),
        "source not allowed",
    )
    assert not data_root.exists() or list(data_root.rglob("*.parquet")) == []
    assert ingest(landing / "a.csv", data_root)["rows"] == 20  # the allowed folder still works


def test_a_path_that_climbs_out_with_dot_dot_is_refused(landing, tmp_path, data_root):
    (tmp_path / "secret.csv").write_text(CSV)
    with pytest.raises(
        DatasetConfigurationError, match=r"\(resolved: .*/secret\.csv\) is outside the allowed"
    ):
        ingest(f"{landing}/../secret.csv", data_root)


def test_a_symlink_in_an_allowed_folder_that_points_outside_is_refused(
    landing, tmp_path, data_root, nothing_hashed
):
    (tmp_path / "secret.csv").write_text(CSV)
    os.symlink(tmp_path / "secret.csv", landing / "b.csv")

    with pytest.raises(DatasetConfigurationError, match=rf"source {landing / 'b.csv'} \(resolved: "):
        ingest(landing, data_root)  # the folder is allowed, one of its files is not


def test_an_s3_source_outside_the_patterns_is_refused_before_any_request(landing, data_root):
    # No S3 server and no connection exist: a request would fail differently.
    with pytest.raises(DatasetConfigurationError, match="source s3://ml-landing/other/x.csv is outside"):
        ingest("s3://ml-landing/other/x.csv", data_root, aws_conn_id=None)


def test_too_many_files_fail_from_the_listing(landing, data_root, monkeypatch, nothing_hashed):
    for name in ("b.csv", "c.csv"):
        (landing / name).write_text(CSV)
    monkeypatch.setenv("AIRFLOW__MLOPS__MAX_SOURCE_FILES", "2")

    with pytest.raises(DatasetError) as info:
        ingest(landing, data_root)
    assert f"source {landing} holds 3 files, more than [mlops] max_source_files = 2" in str(info.value)
    assert info.value.retryable is False


def test_too_many_bytes_fail_from_the_listing(landing, data_root, monkeypatch, nothing_hashed):
    monkeypatch.setenv("AIRFLOW__MLOPS__MAX_SOURCE_BYTES", "50")
    with pytest.raises(DatasetError, match=r"more than \[mlops\] max_source_bytes = 50 bytes"):
        ingest(landing / "a.csv", data_root)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        pytest.param("b.csv", gzip.compress(CSV.encode()), "is gzip-compressed, not CSV text (name it .csv.gz", id="gzip"),
        pytest.param("b.csv", b"PK\x03\x04" + b"\x00" * 40, "is a zip archive (an Excel .xlsx workbook is one), not CSV text", id="xlsx"),
        pytest.param("b.csv", b"PAR1" + b"\x00" * 40, "is a Parquet file, not CSV text (name it .parquet", id="parquet"),
        pytest.param("b.csv.gz", CSV.encode(), "should be gzip-compressed (its name or csv_options say gzip) but it is not compressed", id="not-gzip"),
        pytest.param("b.csv", b"x,label\n\xff\xfe,1\n", "is not valid utf-8 text (invalid start byte at byte 8)", id="not-utf8"),
    ],
)  # fmt: skip
def test_the_format_is_checked_from_the_first_bytes_before_hashing(
    landing, data_root, nothing_hashed, name, content, problem
):
    (landing / name).write_bytes(content)
    with pytest.raises(DatasetError) as info:
        ingest(landing, data_root)
    assert f"{landing / name} {problem}" in str(info.value)


def test_a_rejected_files_columns_are_not_echoed(landing, data_root):
    (landing / "b.csv").write_text("x,ssn_of_customer,label\n1,078-05-1120,0\n")
    with pytest.raises(DatasetError) as info:
        ingest(landing, data_root)
    assert (
        f"{landing / 'b.csv'} has other columns than {landing / 'a.csv'} (0 of its columns missing, 1 others)"
        in str(info.value)
    )
    assert "ssn" not in str(info.value)

    (landing / "b.csv").unlink()
    with pytest.raises(DatasetError) as info:
        ingest(landing, data_root, label_column="target")
    assert str(info.value).endswith(
        f"label column 'target' is missing from {landing} (it has 2 other columns)"
    )


def _staging(folder, name: str, age_s: float = 0.0):
    """A staging folder as a killed ingest leaves it: a partial data file, no rename."""
    path = folder / name
    path.mkdir(parents=True)
    (path / "data.parquet").write_bytes(b"PAR1 half written")
    if age_s:
        past = time.time() - age_s
        for item in (path / "data.parquet", path):
            os.utime(item, (past, past))
    return path


def test_a_retry_removes_the_staging_folder_its_killed_try_left(landing, data_root):
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="landing", source=str(landing), data_root=str(data_root)
    )
    context = context_for(op, try_number=2)
    owner = staging_owner("mlops_tests", "manual__1", "ingest")
    folder = data_root / "datasets" / "landing"
    killed = _staging(folder, f".{'a' * 64}.tmp-{owner}-1-0123456789ab")  # try 1, killed mid-write
    other_run = _staging(folder, f".{'b' * 64}.tmp-{'f' * 12}-1-0123456789ab")  # another run, still writing
    abandoned = _staging(folder, f".{'c' * 64}.tmp-0123456789ab", age_s=2 * 3600)  # untouched for 2 hours

    result = op.execute(context=context)

    assert not killed.exists()
    assert not abandoned.exists()
    assert other_run.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([other_run.name, result["snapshot_id"]])


def test_a_retry_after_a_kill_before_the_rename_leaves_one_snapshot_and_no_staging(landing, data_root):
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="landing", source=str(landing), data_root=str(data_root)
    )
    expected = op.execute(context=context_for(op, run_id="manual__0"))["snapshot_id"]
    folder = data_root / "datasets" / "landing"
    (folder / expected).rename(
        folder / f".{expected}.tmp-{staging_owner('mlops_tests', 'manual__1', 'ingest')}-1-0123456789ab"
    )

    result = op.execute(context=context_for(op, try_number=2))

    assert result["snapshot_id"] == expected
    assert [p.name for p in folder.iterdir()] == [expected]
    assert len(pd.read_parquet(folder / expected / "data.parquet")) == 20


def test_a_dataset_name_with_a_trailing_newline_is_refused(landing, data_root):
    with pytest.raises(ValueError, match="Invalid dataset name 'landing\\\\n'"):
        IngestDatasetOperator(task_id="ingest", dataset_name="landing\n", source=str(landing))
    op = IngestDatasetOperator(
        task_id="ingest", dataset_name="{{ params.name }}", source=str(landing), data_root=str(data_root)
    )
    op.dataset_name = "landing\n"  # as rendered from a params form
    with pytest.raises(DatasetConfigurationError, match="Invalid dataset name"):
        op.execute(context={})
    assert not (data_root / "datasets").exists()
