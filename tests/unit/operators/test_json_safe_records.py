"""
What the operators write beside their results is strict JSON too: registry tag values and the drift report
hold null where a statistic is NaN or infinite, numpy values as plain numbers. No server.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.registry import tag_value
from tests.support.snapshots import write_frames_snapshot


def test_tag_values_are_strict_json_whatever_the_numbers():
    summary = {
        "latency_ms": {"p50": np.float64(3.5), "p95": float("nan"), "max": math.inf},
        "rows": np.int64(20),
        "pair": (1, -math.inf),
        "passed": np.bool_(True),
    }

    text = tag_value(summary)

    assert json.loads(text) == {
        "latency_ms": {"max": None, "p50": 3.5, "p95": None},
        "pair": [1, None],
        "passed": True,
        "rows": 20,
    }
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a tag value"))
    assert tag_value(float("nan")) == ""  # as None: an empty tag, never the text "nan"
    assert tag_value(np.bool_(False)) == "false"
    assert tag_value(np.float32(0.5)) == "0.5"


def test_a_drift_report_with_an_infinite_statistic_is_strict_json(tmp_path):
    # Values near the float limits: the Wasserstein distance of the two columns overflows to infinity.
    reference = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 10, "big": [1e308, -1e308] * 20})
    current = pd.DataFrame({"x": [1.0, 2.0, 3.0, 5.0] * 10, "big": [1e308, 1e308] * 20})
    ref_uri = write_frames_snapshot(tmp_path, "reference", reference, reference.head(4))
    cur_uri = write_frames_snapshot(tmp_path, "current", current, current.head(4))

    result = DriftCheckOperator(
        task_id="drift", dataset_uri=cur_uri, reference_uri=ref_uri, on_drift="continue",
        thresholds={"psi": 0.2, "ks": 0.9},
    ).execute(context={})  # fmt: skip

    report_text = open(result["report"]).read()
    report = json.loads(report_text, parse_constant=lambda name: pytest.fail(f"{name} in report.json"))
    assert report["features"]["big"]["metrics"]["wasserstein"] is None
    assert result["features"]["big"]["metrics"]["wasserstein"] is None
    assert report["features"]["x"]["metrics"]["psi"] == result["features"]["x"]["metrics"]["psi"]
