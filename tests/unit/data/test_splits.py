"""Row splits without Airflow: fractions checked, seeded, every row in exactly one split."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.data.splits import check_split, check_split_seed, split_rows


def test_split_is_put_in_the_fixed_order():
    assert list(check_split({"holdout": 0.2, "train": 0.8}) or {}) == ["train", "holdout"]
    assert check_split(None) is None


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"train": 0.8, "test": 0.2}, "Unknown split name"),
        ({"train": 0.8, "valid": 0.3}, "must sum to 1"),
        ({"train": True}, r"must be a number in \(0, 1\]"),
        ({}, "must be a dict"),
    ],
)
def test_bad_splits_are_named(split, message):
    with pytest.raises(ValueError, match=message):
        check_split(split)


def test_rows_are_split_by_a_seeded_permutation_keeping_source_order():
    df = pd.DataFrame({"row_id": range(100)})
    split = check_split({"train": 0.7, "valid": 0.15, "holdout": 0.15})
    parts = split_rows(df, split, 42)
    assert {name: len(part) for name, part in parts.items()} == {"train": 70, "valid": 15, "holdout": 15}
    assert sorted(pd.concat(parts.values())["row_id"]) == list(range(100))
    assert all(part["row_id"].is_monotonic_increasing for part in parts.values())
    again = split_rows(df, split, 42)
    assert all(again[name].equals(parts[name]) for name in parts)
    assert not split_rows(df, split, 7)["train"].equals(parts["train"])
    assert split_rows(df, None, 42) == {}


def test_a_split_without_rows_is_refused():
    with pytest.raises(ValueError, match="split 'valid' would get no rows"):
        split_rows(pd.DataFrame({"x": range(4)}), check_split({"train": 0.7, "valid": 0.15, "holdout": 0.15}), 1)
    with pytest.raises(ValueError, match="split_seed must be a non-negative integer"):
        check_split_seed(-1)
