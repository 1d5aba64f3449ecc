"""Drift statistics without Airflow: PSI, numeric and categorical distances, the report and its message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.data.drift import (
    check_thresholds,
    compute_drift,
    drift_message,
    psi,
    report_folder,
    to_markdown,
)


def test_psi_of_identical_samples_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=5000)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-9)
    assert psi(base, base + 0.5) < psi(base, base + 1.0)


def test_shifted_feature_drifts_and_the_message_names_metric_and_limit():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"income": rng.normal(50, 10, 2000), "plan": rng.choice(["a", "b"], 2000)})
    current = pd.DataFrame({"income": rng.normal(70, 10, 2000), "plan": rng.choice(["a", "b"], 2000)})
    report = {"dataset": "/d/cur", "reference": "/d/ref", **compute_drift(reference, current)}

    assert report["drift"] is True
    assert report["drifted_features"] == ["income"]
    assert report["features"]["income"]["kind"] == "numeric"
    assert report["features"]["plan"]["kind"] == "categorical"
    assert "psi" in report["features"]["income"]["exceeded"]
    message = drift_message(report, "/d/cur/_drift/x/report.json")
    assert message.startswith("Dataset /d/cur drifted from /d/ref:\n- income: ")
    assert "psi=" in message
    assert "> 0.2" in message
    assert message.endswith("Report: /d/cur/_drift/x/report.json")
    assert "| income | numeric | psi |" in to_markdown(report)


def test_a_missing_feature_is_drift():
    reference = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    report = {"dataset": "cur", "reference": "ref", **compute_drift(reference, reference[["a"]])}
    assert report["drift"] is True
    assert report["missing_features"] == ["b"]
    assert drift_message(report).endswith("- missing from cur: b")


def test_report_folder_names_split_and_reference():
    assert report_folder("/r/datasets/x/abc#valid", "/r/datasets/x/ref#train", "f" * 64) == (
        "/r/datasets/x/abc/_drift/valid-" + "f" * 16 + "-train"
    )
    assert report_folder("s3://b/d/abc", "s3://b/d/ref", None).startswith("s3://b/d/abc/_drift/")


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ([0.2], "must be a dict"),
        ({"chi2": 1}, "unknown drift metric 'chi2'"),
        ({"psi": -1}, "non-negative number"),
        ({"psi": True}, "non-negative number"),
    ],
)
def test_thresholds_are_checked(thresholds, message):
    with pytest.raises(ValueError, match=message):
        check_thresholds(thresholds)


def test_a_column_that_became_all_null_drifts_on_its_null_rate():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"income": rng.normal(50, 10, 500), "plan": rng.choice(["a", "b"], 500)})
    current = reference.assign(income=np.nan, plan=None)
    report = {"dataset": "cur", "reference": "ref", **compute_drift(reference, current)}

    assert report["drifted_features"] == ["income", "plan"]
    assert report["features"]["income"]["exceeded"] == ["null_rate"]
    assert report["features"]["income"]["null_rate"] == {"reference": 0.0, "current": 1.0}
    assert "- income: null_rate=1 > 0.1 (nulls 0% -> 100%)" in drift_message(report)
    assert "| income | numeric | null_rate | 1 | 0.1 | **yes** |" in to_markdown(report)


def test_a_small_null_rate_change_passes_and_its_limit_is_configurable():
    reference = pd.DataFrame({"x": np.arange(100.0)})
    current = reference.assign(x=reference["x"].where(reference.index % 20 != 0))  # 5% nulls
    assert compute_drift(reference, current)["drift"] is False
    assert compute_drift(reference, current, thresholds={"null_rate": 0.01})["drifted_features"] == ["x"]


def test_added_columns_are_drift_unless_excluded_or_not_asked_for():
    reference = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    current = reference.assign(notes="x", row_id=[1, 2, 3])
    report = {"dataset": "cur", "reference": "ref", **compute_drift(reference, current)}
    assert report["drift"] is True
    assert report["added_features"] == ["notes", "row_id"]
    assert drift_message(report).endswith("- not in the reference: notes, row_id")
    assert "- not in the reference: notes, row_id" in to_markdown(report)
    assert compute_drift(reference, current, exclude_columns=["notes", "row_id"])["drift"] is False
    assert compute_drift(reference, current, columns=["a"])["drift"] is False


def test_hundreds_of_added_columns_are_counted_not_listed():
    reference = pd.DataFrame({"a": [1.0, 2.0]})
    current = pd.concat([reference, pd.DataFrame({f"junk_{i}": [0, 1] for i in range(300)})], axis=1)
    message = drift_message({"dataset": "cur", "reference": "ref", **compute_drift(reference, current)})
    assert message.endswith("junk_19 and 280 more")
