"""Slice checks: the spec normalised or refused, and each segment decided per metric. No Airflow."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.evaluation.slices import check_slices, parse_slices
from tests.support.evaluation import BAD_SLICES


def test_slices_are_normalised_with_defaults_and_directions():
    assert parse_slices(None, "classifier") == []
    parsed = parse_slices({"column": "region", "metrics": {"f1_score": {"max_regression": 0}}}, "classifier")
    assert parsed == [
        {
            "column": "region",
            "metrics": {"f1_score": {"max_regression": 0.0, "greater_is_better": True}},
            "min_rows": 30,
        }
    ]
    from_json = parse_slices(
        '[{"column": "plan", "metrics": {"mean_absolute_error": {"max_regression": 2}}, "min_rows": 5}]',
        "regressor",
    )
    assert from_json[0]["metrics"]["mean_absolute_error"] == {
        "max_regression": 2.0,
        "greater_is_better": False,
    }


@pytest.mark.parametrize(("slices", "message"), BAD_SLICES)
def test_bad_slices_say_what_is_allowed(slices, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_slices(slices, "classifier")


_Y = [1, 1, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize(
    ("regions", "candidate", "champion", "min_rows", "expected"),
    [
        pytest.param(
            ["a"] * 4 + ["b"] * 4, _Y, [1, 1, 0, 0, 0, 0, 1, 1], 2,
            {"a": ("pass", 1.0, 1.0), "b": ("pass", 1.0, 0.0)}, id="better everywhere",
        ),
        pytest.param(
            ["a"] * 4 + ["b"] * 4, [1, 1, 0, 0, 0, 0, 1, 1], _Y, 2,
            {"a": ("pass", 1.0, 1.0), "b": ("fail", 0.0, 1.0)}, id="worse on one slice",
        ),
        pytest.param(
            ["a"] * 6 + ["b"] * 2, [1, 1, 0, 0, 1, 1, 1, 1], _Y, 3,
            {"a": ("pass", 1.0, 1.0), "b": ("not enough rows", None, None)}, id="slices with too few rows",
        ),
        pytest.param(
            ["a"] * 4 + [None] * 4, _Y, None, 1,
            {"a": ("no champion", 1.0, None), "(missing)": ("no champion", 1.0, None)}, id="no champion",
        ),
    ],
)  # fmt: skip
def test_slice_segments_are_decided_per_metric(regions, candidate, champion, min_rows, expected):
    import pandas as pd

    data = pd.DataFrame({"region": regions, "label": _Y})
    spec = parse_slices({"column": "region", "metrics": {"accuracy_score": {"max_regression": 0.1}},
                         "min_rows": min_rows}, "classifier")  # fmt: skip
    rows = check_slices(spec, data, "label", candidate, champion)
    assert {row["segment"]: (row["status"], row["candidate"], row["champion"]) for row in rows} == expected
    assert all(row["passed"] is (row["status"] != "fail") for row in rows)
