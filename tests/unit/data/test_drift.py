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
