"""Source formats without Airflow: names, CSV options, reading files, Parquet footers."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.data.formats import (
    canonical_json,
    check_csv_options,
    check_format,
    detect_format,
    format_from_name,
    parquet_footer,
    read_files,
)
from airflow_mlops.data.storage import Storage


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.parquet", "parquet"), ("A.PQ", "parquet"), ("x/y.csv.gz", "csv"), ("d.csv", "csv"), ("d.txt", None)],
)
def test_format_from_the_file_name(name, expected):
    assert format_from_name(name) == expected


def test_detect_format_needs_one_known_format():
    assert detect_format("auto", ["/a.csv", "/b.csv.gz"]) == "csv"
    assert detect_format("csv", ["/export.txt"]) == "csv"  # an explicit format is not second-guessed
    with pytest.raises(ValueError, match="cannot tell the format of /export.txt"):
        detect_format("auto", ["/export.txt"])
    with pytest.raises(ValueError, match="mixes formats"):
        detect_format("auto", ["/a.csv", "/b.parquet"])


def test_format_and_csv_options_are_checked():
    assert check_format("parquet") == "parquet"
    with pytest.raises(ValueError, match="format must be one of auto, csv, parquet"):
        check_format("json")
    assert check_csv_options(None) == {}
    assert check_csv_options({"sep": ";"}) == {"sep": ";"}
    with pytest.raises(ValueError, match="may not set"):
        check_csv_options({"chunksize": 1})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        check_csv_options({"dtype": object})
    assert canonical_json({"b": 1, "a": [1]}) == '{"a":[1],"b":1}'


def test_read_files_concatenates_and_names_the_bad_file(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("x,y\n1,2\n")
    b.write_text("x,y\n3,4\n")
    c.write_text("x,z\n5,6\n")
    frame = read_files([(a, "s3://b/a.csv"), (b, "s3://b/b.csv")], "csv")
    assert frame.to_dict("list") == {"x": [1, 3], "y": [2, 4]}
    with pytest.raises(ValueError, match=r"s3://b/c.csv has other columns than s3://b/a.csv \(1 of its columns missing, 1 others\)"):
        read_files([(a, "s3://b/a.csv"), (c, "s3://b/c.csv")], "csv")
    with pytest.raises(ValueError, match="s3://b/a.csv is not a readable Parquet file"):
        read_files([(a, "s3://b/a.csv")], "parquet")


def test_parquet_footer_gives_rows_and_dtypes_without_reading_the_data(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"x": range(7), "name": ["a"] * 7}).to_parquet(path, index=False)
    rows, schema = parquet_footer(Storage(), str(path), path.stat().st_size)
    assert rows == 7
    assert schema == {column: str(dtype) for column, dtype in pd.read_parquet(path).dtypes.items()}
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        parquet_footer(Storage(), str(fake), fake.stat().st_size)
