"""
Validating a Parquet file batch by batch with Arrow gives what Great Expectations gives on the whole frame.

Real GX on both sides: the whole file read by pandas and validated by GX's pandas engine, and
``validate_parquet`` reading record batches of 7 rows (so every column check spans several batches and the
first unexpected values come from more than one). The summaries, the failure messages and every
expectation's result must be equal.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.data.expectations import (
    build_suite,
    dataframe_batch,
    ephemeral_context,
    failure_message,
    summarize,
    table_suite,
)
from airflow_mlops.data.parquet_validation import arrow_computed, validate_parquet

ROWS = 60


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """60 rows: numbers with NaN, text with nulls and stray values, integers with nulls, an all-NaN column."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "id": np.arange(ROWS, dtype="int64"),
        "score": np.where(np.arange(ROWS) % 11 == 0, np.nan, rng.normal(0, 2, ROWS)),
        "ratio": rng.random(ROWS),
        "count": pd.array([None if i % 13 == 5 else i % 9 for i in range(ROWS)], dtype="Int64"),
        "kind": [None if i % 17 == 2 else ("zzz" if i % 7 == 3 else "abc"[i % 3]) for i in range(ROWS)],
        "flag": [bool(i % 2) for i in range(ROWS)],
        "when": pd.date_range("2024-01-01", periods=ROWS, freq="h"),
        "amount": [f"{i},000" if i % 10 == 4 else str(i) for i in range(ROWS)],
        "empty": np.full(ROWS, np.nan),
    })  # fmt: skip
    path = tmp_path_factory.mktemp("parquet") / "data.parquet"
    frame.to_parquet(path, index=False)
    return path


SUITE = [
    {"type": "expect_table_row_count_to_equal", "kwargs": {"value": ROWS}},
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": ROWS + 1}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "score"}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "kind"}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "count"}, "severity": "warning"},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "score", "min_value": -1, "max_value": 1}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "score", "min_value": -1.5, "strict_min": True, "mostly": 0.5}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "ratio", "max_value": 0.5, "strict_max": True}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "id", "min_value": 0, "max_value": 99}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "count", "min_value": 1, "max_value": 7}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "kind", "value_set": ["a", "b", "c"]}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "id", "value_set": list(range(0, 80, 2))}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "ratio", "value_set": [0, 1]}},
    {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "flag", "value_set": [True]}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "empty"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "empty", "min_value": 0, "max_value": 1}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "kind"}},
    {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "ratio", "min_value": 0.9}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}},
    {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["id", "score"], "exact_match": True}},
    {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": "amount", "type_list": ["int64"]}},
    {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": "ratio", "type_list": ["int64"]}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "when", "min_value": "2024-01-02", "max_value": "2024-01-03"}},
]  # fmt: skip


def _whole(path, suite, result_format):
    frame = pd.read_parquet(path)
    return dataframe_batch(ephemeral_context(), "data", frame).validate(suite, result_format=result_format)


def _comparable(result):
    """A result's JSON, without what differs between any two runs (times, tracebacks, the frame's fingerprint)."""
    out = []
    for item in result.to_json_dict()["results"]:
        item["exception_info"] = _raised(item.get("exception_info") or {})
        out.append(_nan_safe(item))
    return out


def _raised(info):
    """The message of the exception an expectation raised (GX keys it by metric, or not), or None."""
    infos = [info, *(value for value in info.values() if isinstance(value, dict))]
    return next((item["exception_message"] for item in infos if item.get("raised_exception")), None)


def _nan_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {key: _nan_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_safe(item) for item in value]
    return value


@pytest.mark.parametrize("result_format", ["BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE"])
def test_batches_give_the_whole_frame_result(parquet, result_format):
    suite = build_suite(SUITE, "expectations", "suite")
    whole = _whole(parquet, suite, result_format)
    batched, rows = validate_parquet(parquet, suite, "data", result_format, batch_rows=7)

    assert rows == ROWS
    assert _comparable(batched) == _comparable(whole)
    assert batched.statistics == whole.statistics
    assert summarize(batched) == summarize(whole)
    assert failure_message("'data'", summarize(batched)) == failure_message("'data'", summarize(whole))
    assert summarize(batched, "continue")["blocking"] is True


def test_the_suite_of_a_training_table_gives_the_same_verdict(parquet):
    """A table suite with pinned types fails on the text column where numbers are expected, as it does whole."""
    expectations = table_suite(
        ["score", "ratio", "amount"],
        "id",
        label_values=list(range(50)),
        types={"ratio": "number", "amount": "number"},
    )
    suite = build_suite(expectations, "expectations", "suite")
    whole = _whole(parquet, suite, "SUMMARY")
    batched, _ = validate_parquet(parquet, suite, "data", "SUMMARY", batch_rows=16)

    assert _comparable(batched) == _comparable(whole)
    assert failure_message("'data'", summarize(batched)) == failure_message("'data'", summarize(whole))
    assert "column 'amount' must hold numbers" in failure_message("'data'", summarize(batched))


def test_passing_suite_on_one_batch_and_many(parquet):
    expectations = [
        SUITE[0],
        SUITE[2],
        SUITE[9],
        SUITE[11] | {"kwargs": {"column": "kind", "value_set": ["a", "b", "c", "zzz"]}},
    ]
    suite = build_suite(expectations, "expectations", "suite")
    one, _ = validate_parquet(parquet, suite, "data", "SUMMARY")
    many, _ = validate_parquet(parquet, suite, "data", "SUMMARY", batch_rows=5)

    assert summarize(one) == summarize(many) == {
        "success": True, "blocking": False, "evaluated": 4, "successful": 4, "unsuccessful": 0, "failed": []
    }  # fmt: skip


def test_only_what_arrow_computes_exactly_is_computed_with_arrow(parquet):
    """Row counts, not-null, between and in-set on number and text columns; the rest is left to GX."""
    suite = build_suite(SUITE, "expectations", "suite")
    configs = suite.expectation_configurations
    by_arrow = [
        f"{configs[i].type}:{configs[i].kwargs.get('column')}" for i in arrow_computed(suite, parquet)
    ]
    assert by_arrow == [
        "expect_table_row_count_to_equal:None",
        "expect_table_row_count_to_be_between:None",
        "expect_column_values_to_not_be_null:id",
        "expect_column_values_to_not_be_null:score",
        "expect_column_values_to_not_be_null:kind",
        "expect_column_values_to_not_be_null:count",
        "expect_column_values_to_be_between:score",
        "expect_column_values_to_be_between:score",
        "expect_column_values_to_be_between:ratio",
        "expect_column_values_to_be_between:id",
        "expect_column_values_to_be_between:count",
        "expect_column_values_to_be_in_set:kind",
        "expect_column_values_to_be_in_set:id",
        "expect_column_values_to_be_in_set:ratio",
        "expect_column_values_to_not_be_null:empty",
        "expect_column_values_to_be_between:empty",
    ]


def test_a_split_of_a_snapshot_is_validated_from_its_own_file(tmp_path):
    from airflow_mlops.data.parquet_validation import validate_snapshot
    from tests.support.snapshots import write_frames_snapshot

    frame = pd.DataFrame({"x": np.arange(30, dtype="int64"), "label": [0, 1, 7] * 10})
    uri = write_frames_snapshot(tmp_path, "demo", frame.iloc[:20], frame.iloc[20:])
    suite = build_suite(
        [{"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}}],
        "expectations",
        "suite",
    )
    result, rows = validate_snapshot(f"{uri}#holdout", suite, "demo", batch_rows=4)
    whole = dataframe_batch(ephemeral_context(), "demo", frame.iloc[20:].reset_index(drop=True)).validate(
        suite, result_format="SUMMARY"
    )

    assert rows == 10
    assert summarize(result) == summarize(whole)
    assert summarize(result)["failed"][0]["observed"]["unexpected_count"] == 4
    with pytest.raises(ValueError, match=r"has no split 'valid'; it has \['holdout', 'train'\]"):
        validate_snapshot(f"{uri}#valid", suite, "demo")
