"""
Bad data of the kinds users send, each stopped with a message naming the dataset and the problem.

Data that parses is caught by validation: a suite of the kind a team writes once for its table (schema,
types, nulls, uniqueness), and the example DAG's own suite on its demo data. Data that changed since the
champion's is caught by the drift check; files that are not what their names say by the ingest.
"""

from __future__ import annotations

import gzip
import json
import runpy
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.data.expectations import table_suite, types_of_snapshot
from airflow_mlops.demo.data import make_demo_data
from airflow_mlops.exceptions import DataDriftError, DatasetError, DataValidationError, RetryableError
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

HEADER = "customer_id,tenure_months,monthly_spend,label"
GOOD_ROWS = [f"{i},{i % 60 + 1},{20 + i % 50}.5,{i % 2}" for i in range(40)]
SUITE = [
    {"type": "expect_table_columns_to_match_set",
     "kwargs": {"column_set": ["customer_id", "tenure_months", "monthly_spend", "label"], "exact_match": True}},
    {"type": "expect_column_values_to_be_in_type_list",
     "kwargs": {"column": "monthly_spend", "type_list": ["float64", "int64", "float", "int"]}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "monthly_spend"}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}},
]  # fmt: skip


def _csv(rows: list[str], header: str = HEADER, sep: str = ",") -> str:
    return "\n".join(line.replace(",", sep) for line in [header, *rows]) + "\n"


CASES = {
    "wrong-delimiter": (_csv(GOOD_ROWS, sep=";"), "expect_table_columns_to_match_set"),
    "strings-where-numbers-expected": (
        _csv([*GOOD_ROWS[:-1], "39,12,twelve dollars,1"]),
        "expect_column_values_to_be_in_type_list",
    ),
    "all-null-column": (
        _csv([row.rsplit(",", 2)[0] + ",," + row.rsplit(",", 1)[1] for row in GOOD_ROWS]),
        "expect_column_values_to_not_be_null",
    ),
    "unexpected-extra-column": (
        _csv([row + ",x" for row in GOOD_ROWS], header=HEADER + ",notes"),
        "expect_table_columns_to_match_set",
    ),
    "duplicated-rows": (_csv([*GOOD_ROWS, GOOD_ROWS[3], GOOD_ROWS[7]]), "expect_column_values_to_be_unique"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_stopped_with_the_dataset_and_the_problem_named(case, tmp_path):
    content, failing = CASES[case]
    source = tmp_path / f"{case}.csv"
    source.write_text(content)
    name = f"customers_{case.replace('-', '_')}"
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name=name, source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})
    with pytest.raises(DataValidationError) as info:
        ValidateDatasetOperator(task_id="validate", dataset_uri=snapshot["uri"], expectations=SUITE).execute(
            context={}
        )
    message = str(info.value)
    assert repr(name) in message
    assert failing in message


def test_the_suite_passes_on_good_data(tmp_path):
    source = tmp_path / "good.csv"
    source.write_text(_csv(GOOD_ROWS))
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name="customers", source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})
    summary = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"], expectations=SUITE
    ).execute(context={})
    assert summary["success"] is True


# -- the example DAG's own checks, on its demo data -------------------------------------------------------

DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "continuous_training.py"


@pytest.fixture(scope="module")
def example_suite() -> list[dict]:
    """The validation suite of ``mlops_continuous_training``, rendered for the label column ``label``."""
    task = runpy.run_path(str(DAG_FILE))["dag"].get_task("validate")
    return json.loads(json.dumps(task.expectations).replace("{{ params.target }}", "label"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pd.DataFrame:
    return pd.read_csv(make_demo_data(tmp_path_factory.mktemp("demo") / "customers.csv", rows=300))


def _ingest_frame(tmp_path, name: str, frame: pd.DataFrame) -> dict:
    source = tmp_path / f"{name}.csv"
    frame.to_csv(source, index=False)
    return IngestDatasetOperator(
        task_id="ingest", dataset_name=name, source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})


def _junk_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, pd.DataFrame({f"junk_{i}": 1 for i in range(300)}, index=frame.index)], axis=1)


EXAMPLE_CASES = {
    "all-null-label": (
        lambda df: df.assign(label=None),
        'expect_column_values_to_not_be_null(column="label")',
    ),
    "unexpected-extra-column": (lambda df: df.assign(notes="x"), "expect_table_columns_to_match_set"),
    "hundreds-of-junk-columns": (_junk_columns, "expect_table_columns_to_match_set"),
    "missing-feature-column": (
        lambda df: df.drop(columns=["discount_rate"]),
        "expect_table_columns_to_match_set",
    ),
    "boolean-label": (
        lambda df: df.assign(label=df["label"].map({0: "false", 1: "true"})),
        "column 'label' must hold numbers (number), it holds booleans (true/false); true/false are not taken "
        "for 1/0",
    ),
}


@pytest.mark.parametrize("case", list(EXAMPLE_CASES))
def test_the_example_suite_stops_bad_data_on_the_first_run(case, tmp_path, demo, example_suite):
    spoil, failing = EXAMPLE_CASES[case]
    name = f"first_run_{case.replace('-', '_')}"
    snapshot = _ingest_frame(tmp_path, name, spoil(demo))

    with pytest.raises(DataValidationError) as info:
        ValidateDatasetOperator(
            task_id="validate", dataset_uri=snapshot["uri"], expectations=example_suite
        ).execute(context={})
    message = str(info.value)
    assert repr(name) in message
    assert failing in message
    assert len(message) < 4000  # hundreds of columns do not flood the log


def test_the_example_suite_passes_the_demo_data(tmp_path, demo, example_suite):
    snapshot = _ingest_frame(tmp_path, "first_run_good", demo)
    summary = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"], expectations=example_suite
    ).execute(context={})
    assert summary["success"] is True


# The example DAG's features, with their types pinned from a good snapshot (what the DAG's suite does).
FEATURES = ["tenure_months", "monthly_spend", "support_calls", "usage_hours", "discount_rate"]

TYPE_CASES = {
    "thousands-separators": (
        lambda df: df.assign(monthly_spend=(df["monthly_spend"] * 100).map("{:,.2f}".format)),
        "monthly_spend",
        "it holds text (a CSV column is read as text when a value is not a plain number",
    ),
    "timestamp-in-a-feature": (
        lambda df: df.assign(usage_hours=pd.Timestamp("2026-12-05 10:00") + pd.to_timedelta(df.index, "h")),
        "usage_hours",
        "it holds text",
    ),
    "list-column": (
        lambda df: df.assign(support_calls=df["support_calls"].map(lambda n: [n, n + 1])),
        "support_calls",
        "it holds text",
    ),
}


@pytest.fixture(scope="module")
def pinned_suite(tmp_path_factory, demo) -> list[dict]:
    """The example suite with every column's type derived from a good snapshot of the demo data."""
    good = _ingest_frame(tmp_path_factory.mktemp("good"), "good", demo)
    types = types_of_snapshot(good["uri"])
    assert types == dict.fromkeys([*FEATURES, "label"], "number")
    return table_suite(FEATURES, "label", label_values=[0, 1], min_rows=100, types=types)


# The suite built from a good snapshot's types, and the example DAG's own suite (its features pinned to numbers),
# each stop the spoilt column on a first run, naming it and nothing else.
@pytest.mark.parametrize("suite", ["pinned_suite", "example_suite"])
@pytest.mark.parametrize("case", list(TYPE_CASES))
def test_pinned_types_refuse_text_timestamps_and_lists_naming_the_column(case, suite, tmp_path, demo, request):
    spoil, column, holds = TYPE_CASES[case]
    name = f"typed_{case.replace('-', '_')}"
    snapshot = _ingest_frame(tmp_path, name, spoil(demo))

    with pytest.raises(DataValidationError) as info:
        ValidateDatasetOperator(
            task_id="validate", dataset_uri=snapshot["uri"], expectations=request.getfixturevalue(suite)
        ).execute(context={})
    message = str(info.value)
    assert repr(name) in message
    assert f"column {column!r} must hold numbers (number), {holds}" in message
    assert message.count("must hold") == 1  # only the spoilt column


def test_pinned_types_pass_the_good_data_and_parquet(tmp_path, demo, pinned_suite):
    source = tmp_path / "good.parquet"
    demo.to_parquet(source)
    snapshot = IngestDatasetOperator(
        task_id="ingest", dataset_name="typed_good", source=str(source), data_root=str(tmp_path / "root")
    ).execute(context={})
    summary = ValidateDatasetOperator(
        task_id="validate", dataset_uri=snapshot["uri"], expectations=pinned_suite
    ).execute(context={})
    assert summary["success"] is True


def test_a_type_that_cannot_be_pinned_is_refused_when_the_suite_is_built():
    with pytest.raises(ValueError, match="type 'text' cannot be pinned; use one of number, integer"):
        table_suite(FEATURES, "label", types={"monthly_spend": "text"})
    with pytest.raises(
        ValueError, match=r"types names columns that are not features or the label: \['notes'\]"
    ):
        table_suite(FEATURES, "label", types={"notes": "number"})


# -- headers that are not what they seem ------------------------------------------------------------------


def _ingest_text(tmp_path, name: str, text: str) -> dict:
    source = tmp_path / f"{name}.csv"
    source.write_text(text)
    return IngestDatasetOperator(
        task_id="ingest", dataset_name=name, source=str(source), data_root=str(tmp_path / "root"),
        label_column="label",
    ).execute(context={})  # fmt: skip


def test_a_padded_header_is_named_as_padded(tmp_path):
    with pytest.raises(DatasetError) as info:
        _ingest_text(
            tmp_path, "padded", _csv(GOOD_ROWS, header="customer_id,tenure_months,monthly_spend, label ")
        )
    message = str(info.value)
    assert "has padded headers, with spaces around the name: ' label '; remove the spaces" in message
    assert "other columns" not in message
    assert not (tmp_path / "root" / "datasets" / "padded").exists()


def test_a_duplicate_header_is_named_as_duplicate(tmp_path):
    rows = [row + f",{i % 60 + 2}" for i, row in enumerate(GOOD_ROWS)]
    with pytest.raises(DatasetError) as info:
        _ingest_text(tmp_path, "dup", _csv(rows, header=HEADER + ",tenure_months"))
    message = str(info.value)
    assert "has duplicate headers: 'tenure_months' (pandas would read the second 'tenure_months' as " \
        "'tenure_months.1'); give every column its own name" in message  # fmt: skip
    assert not (tmp_path / "root" / "datasets" / "dup").exists()


# -- a file still being written ---------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["while-it-is-hashed", "while-it-is-parsed"])
def test_a_file_still_being_written_is_refused_retryable_and_nothing_is_published(
    when, tmp_path, monkeypatch
):
    from airflow_mlops.data import formats, sources

    source = tmp_path / "growing.csv"
    source.write_text(_csv(GOOD_ROWS[:20]))
    more = "".join(row + "\n" for row in GOOD_ROWS[20:])
    module, function = (
        (sources, "fingerprint_file") if when == "while-it-is-hashed" else (formats, "read_file")
    )
    original = getattr(module, function)

    def the_writer_goes_on(*args, **kwargs):  # fault: the producer appends rows while the ingest reads
        with source.open("a") as stream:
            stream.write(more)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, function, the_writer_goes_on)
    ingest = IngestDatasetOperator(
        task_id="ingest", dataset_name="growing", source=str(source), data_root=str(tmp_path / "root")
    )
    with pytest.raises(RetryableError) as info:
        ingest.execute(context={})
    assert f"Dataset 'growing': {source} changed while it was read" in str(info.value)
    assert "it is still being written; nothing was published" in str(info.value)
    assert info.value.retryable is True
    assert not (tmp_path / "root" / "datasets" / "growing").exists() or not any(
        (tmp_path / "root" / "datasets" / "growing").iterdir()
    )

    monkeypatch.setattr(module, function, original)  # the writer finished: the retry snapshots the whole file
    assert ingest.execute(context={})["rows"] == len(GOOD_ROWS)


# -- drift against the champion's data --------------------------------------------------------------------

DRIFT_CASES = {
    "column-became-all-null": (
        lambda df: df.assign(usage_hours=None),
        "- usage_hours: null_rate=1 > 0.1 (nulls 0% -> 100%)",
    ),
    "null-rate-grew": (
        lambda df: df.assign(support_calls=df["support_calls"].where(df.index % 3 != 0)),
        "- support_calls: null_rate=0.3333 > 0.1 (nulls 0% -> 33%)",
    ),
    "added-columns": (
        lambda df: df.assign(notes="x", promo_code="y"),
        "- not in the reference: notes, promo_code",
    ),
    "missing-column": (lambda df: df.drop(columns=["discount_rate"]), ": discount_rate"),
}


@pytest.mark.parametrize("case", list(DRIFT_CASES))
def test_drift_flags_nulls_and_changed_columns(case, tmp_path, demo):
    spoil, shown = DRIFT_CASES[case]
    reference = _ingest_frame(tmp_path, "reference", demo)
    current = _ingest_frame(tmp_path, "current", spoil(demo))

    with pytest.raises(DataDriftError) as info:
        DriftCheckOperator(
            task_id="drift", dataset_uri=current["uri"], reference_uri=reference["uri"]
        ).execute(context={})
    assert f"Dataset {current['uri']} drifted from {reference['uri']}" in str(info.value)
    assert shown in str(info.value)


# -- files that are not what their names say --------------------------------------------------------------


def test_a_gzip_file_named_csv_is_named_as_gzip(tmp_path):
    source = tmp_path / "customers.csv"
    source.write_bytes(gzip.compress(_csv(GOOD_ROWS).encode()))

    with pytest.raises(DatasetError) as info:
        IngestDatasetOperator(
            task_id="ingest", dataset_name="gz", source=str(source), data_root=str(tmp_path / "root")
        ).execute(context={})
    message = str(info.value)
    assert f"{source} is gzip-compressed, not CSV text (name it .csv.gz" in message
    assert ".csv.gz, .csv.bz2" in message
    assert "Parquet" in message
    assert "utf-8" not in message


def test_the_undecodable_byte_is_reported_at_its_offset_in_the_file(tmp_path):
    rows = [f"{i},{i % 60 + 1},{20 + i % 50}.5,{i % 2}" for i in range(60_000)]
    text = _csv(rows).encode()
    offset = 700_001  # beyond the first bytes checked up front and beyond pandas' first read block
    assert offset < len(text)
    source = tmp_path / "latin.csv"
    source.write_bytes(text[:offset] + b"\xe9" + text[offset + 1 :])

    with pytest.raises(DatasetError) as info:
        IngestDatasetOperator(
            task_id="ingest", dataset_name="latin", source=str(source), data_root=str(tmp_path / "root")
        ).execute(context={})
    assert f"{source} is not valid utf-8 text (invalid continuation byte at byte {offset})" in str(info.value)
