"""Expectation suites without Airflow: shape checks, suite files, columns to read, compact summaries."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from airflow_mlops.data.expectations import (
    build_suite,
    check_expectations,
    columns_to_read,
    dataframe_batch,
    ephemeral_context,
    failure_message,
    parse_suite,
    safe_name,
    summarize,
)


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        pytest.param(
            [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "b"}},
             {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "d", "column_B": "a"}}],
            ["a", "b", "d"], id="only-the-named-columns-in-snapshot-order",
        ),
        pytest.param(
            [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}], ["a"],
            id="row-count-reads-one-column",
        ),
        pytest.param(
            [{"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["a"]}}], None,
            id="table-shape-reads-everything",
        ),
        pytest.param(
            [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "missing"}}], ["a"],
            id="a-missing-column-is-not-read",
        ),
    ],
)  # fmt: skip
def test_only_the_columns_a_suite_looks_at_are_read(suite, expected):
    assert columns_to_read(suite, ["a", "b", "c", "d", "e"]) == expected


def test_well_formed_expectations_are_copied_and_bad_ones_named():
    good = [{"type": "expect_column_to_exist", "kwargs": {"column": "a"}, "severity": "warning"}]
    checked = check_expectations(good)
    assert checked == good
    assert checked[0] is not good[0]
    with pytest.raises(ValueError, match=r"suite\.json: expectations\[1\] \(expect_x\) needs a dict 'kwargs'"):
        check_expectations([*good, {"type": "expect_x", "kwargs": None}], origin="suite.json: expectations")


def test_suite_file_name_and_expectations_are_read():
    raw = json.dumps({"name": "churn", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a"}}]})
    expectations, name = parse_suite(raw.encode(), "/s/suite.json")
    assert name == "churn"
    assert expectations[0]["type"] == "expect_column_to_exist"
    assert parse_suite(b'{"name": " ", "expectations": [{"type": "expect_a", "kwargs": {}}]}', "p")[1] is None
    with pytest.raises(ValueError, match="Expectation suite file /s/bad.json is not valid JSON"):
        parse_suite(b"{", "/s/bad.json")


def test_safe_name_keeps_one_path_segment():
    assert safe_name("churn suite/v2") == "churn_suite_v2"
    assert safe_name("../..") == "suite"


def test_summary_of_a_failed_suite_holds_counts_and_examples_not_rows():
    frame = pd.DataFrame({"label": [0, 1, 7, 7, 1] * 40, "secret": ["row data"] * 200})
    expectations = [
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": [0, 1]}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}, "severity": "warning"},
    ]
    suite = build_suite(check_expectations(expectations), "expectations", "demo-suite")
    result = dataframe_batch(ephemeral_context(), "demo", frame).validate(suite, result_format="SUMMARY")

    summary = summarize(result)
    assert (summary["success"], summary["blocking"]) == (False, True)
    assert (summary["evaluated"], summary["successful"], summary["unsuccessful"]) == (2, 1, 1)
    (failure,) = summary["failed"]
    assert failure["expectation"] == "expect_column_values_to_be_in_set"
    assert failure["severity"] == "critical"
    assert failure["observed"]["unexpected_count"] == 80
    assert failure["observed"]["unexpected_examples"] == [7, 7, 7, 7, 7]
    assert "row data" not in json.dumps(summary)
    message = failure_message("'demo'", summary)
    assert message.startswith("Dataset 'demo' failed 1 of 2 expectations:\n- expect_column_values_to_be_in_set(")


def test_unknown_expectation_type_is_named_before_anything_runs():
    with pytest.raises(ValueError, match="Unknown expectation type 'expect_the_moon' in expectations\\[0\\]"):
        build_suite([{"type": "expect_the_moon", "kwargs": {}}], "expectations", "s")


def test_a_numeric_suite_validates_and_renders_data_docs_without_gx_noise_in_the_log():
    """Run in a fresh process with every log record and warning shown, as a task log would show them."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import logging, sys, warnings
        warnings.simplefilter("default")
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
        logging.captureWarnings(True)
        import numpy as np, pandas as pd
        from airflow_mlops.data import expectations as E
        print("--- start")
        frame = pd.DataFrame({"x": np.linspace(0, 1, 50), "n": np.arange(50)})
        suite = E.build_suite(E.check_expectations([
            {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "x", "min_value": 0.1, "max_value": 0.9}},
            {"type": "expect_column_median_to_be_between", "kwargs": {"column": "n", "min_value": 1, "max_value": 99}},
        ]), "test", "numeric")
        result = E.dataframe_batch(E.ephemeral_context(), "numeric", frame).validate(suite)
        html = E.render_data_docs(result)
        print("--- end", result.success, "0.5" in html, "24.5" in html)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    logged = out.stdout.split("--- start", 1)[1] + out.stderr
    assert "--- end True True True" in logged  # both passed; the observed mean and median are on the page
    assert "num_to_str" not in logged
    noise = [line for line in logged.splitlines() if "great_expectations" in line or "Warning" in line]
    assert noise == []
