"""
Monitoring a window of captures batch by batch gives what the whole-frame computation gives on the same rows.

The captures are written by the real capture writer (several files, a bad value it marks, another version's
rows) plus an older file without one of the columns and with text in a number column; the window is read a few
rows at a time. Feature drift, prediction drift (class labels, continuous values, text labels), the
data-quality suite, live performance and the verdict are compared with :func:`read_captures` +
:func:`compute_drift` + :func:`run_quality` + :func:`live_performance` on frames. Tolerance: the drift metrics
agree to 1e-9 (both are rounded to 6 decimals, so they are equal unless a value sits on a rounding boundary);
row counts, null rates, drifted features, the quality summary, the live metric and the verdict are equal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_mlops.data.drift import compute_drift
from airflow_mlops.serving import monitor, monitor_captures
from airflow_mlops.serving.capture import (
    PREDICTION,
    REQUEST_ID,
    CaptureWriter,
    hour_of,
    parquet_bytes,
    read_captures,
)
from airflow_mlops.utils.results import json_safe

MODEL = "batched_churn"
SIGNATURE = {"tenure": "double", "spend": "double", "visits": "long", "plan": "string", "active": "boolean"}
FEATURES = list(SIGNATURE)
PLANS = ["basic", "plus", "pro"]


def customers(rows: int, seed: int, shift: float = 0.0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.uniform(0, 60, rows).round(1),
            "spend": (rng.normal(60, 15, rows) + shift).round(2),
            "visits": rng.integers(0, 30, rows),
            "plan": rng.choice(PLANS, rows, p=[0.6, 0.3, 0.1] if shift else [0.34, 0.33, 0.33]),
            "active": rng.random(rows) < 0.7,
        }
    )
    frame["label"] = (frame["spend"] > 60).astype(int)
    return frame


def predictions_of(frame, kind: str) -> list:
    if kind == "classes":
        return [float(v) for v in frame["label"]]
    if kind == "continuous":
        return [round(v / 100, 4) for v in frame["spend"]]
    return ["churn" if v else "stays" for v in frame["label"]]


@pytest.fixture
def window(tmp_path):
    """The window's bounds, the reference snapshot's Parquet file, and the capture root."""
    reference = customers(2000, seed=0)
    path = tmp_path / "reference.parquet"
    reference.to_parquet(path, index=False)
    now = datetime.now(UTC)
    return {"root": tmp_path / "data", "reference": path, "frame": reference, "start": now - timedelta(hours=1),
            "end": now + timedelta(hours=1)}  # fmt: skip


def write_captures(root, kind: str) -> list[str]:
    """Shifted traffic through the real capture writer, a bad value, another version, an older file; its ids."""
    traffic = customers(700, seed=1, shift=12.0)
    writer = CaptureWriter(str(root), signature=SIGNATURE, batch_rows=150)
    ids = []
    for index, (row, prediction) in enumerate(
        zip(traffic[FEATURES].to_dict("records"), predictions_of(traffic, kind), strict=True)
    ):
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        if index % 50 == 7:
            row["spend"] = None
        if index == 11:
            row["visits"] = "many"  # not of the signature's type: the writer marks the row
        version = "2" if index % 100 == 3 else "1"
        body = json.dumps({"dataframe_records": [row]}).encode()
        answer = json.dumps({"predictions": [prediction]}).encode()
        writer.submit(MODEL, version, f"req-{index}", 200, body, answer)
        ids.append(f"req-{index}")
    writer.close()
    # A file from before the signature: no "visits" column, text in a number column (one value not a number).
    now = datetime.now(UTC)
    older = [
        {"tenure": value, "spend": 61.5, "plan": "basic", "active": True, REQUEST_ID: f"old-{i}", "_row": 0,
         "_timestamp": now, "_model": MODEL, "_version": "1", "_status": 200,
         PREDICTION: predictions_of(traffic.head(3), kind)[i]}
        for i, value in enumerate(["12", "ten", "7.5"])
    ]  # fmt: skip
    folder = root / "captures" / f"model={MODEL}" / f"hour={hour_of(now)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0000-older.parquet").write_bytes(parquet_bytes(older))
    return ids


def whole_frame(window, holdout_predictions, labels, expectations):
    """The checks as computed on frames."""
    captured = read_captures(
        str(window["root"]), MODEL, window["start"], window["end"], columns=FEATURES, meta=[PREDICTION, REQUEST_ID],
        version="1", types=SIGNATURE,
    )  # fmt: skip
    inputs = captured[monitor.feature_columns(captured)]
    return captured, {
        "feature_drift": compute_drift(window["frame"][FEATURES], inputs),
        "prediction_drift": compute_drift(
            *monitor.prediction_frames(holdout_predictions, captured[PREDICTION])
        ),
        "data_quality": monitor.run_quality(inputs, expectations, MODEL),
        "performance": monitor.live_performance(captured, labels, "label", "accuracy_score", 0.95, 0.05, 50),
    }


def batched(window, holdout_predictions, labels, expectations, batch_rows: int):
    """The checks as the operator computes them, the captures read *batch_rows* rows at a time."""
    import pyarrow.parquet as pq

    reference = pq.ParquetFile(window["reference"])
    with monitor_captures.staged_window(
        str(window["root"]), MODEL, window["start"], window["end"], FEATURES, meta=[PREDICTION, REQUEST_ID],
        version="1", types=SIGNATURE, batch_rows=batch_rows,
    ) as staged:  # fmt: skip
        return staged, {
            "feature_drift": monitor_captures.feature_drift(reference, staged, FEATURES),
            "prediction_drift": monitor_captures.prediction_drift(holdout_predictions, staged),
            "data_quality": monitor_captures.data_quality(staged, expectations, MODEL),
            "performance": monitor_captures.live_performance(
                staged, labels, "label", "accuracy_score", 0.95, 0.05, 50
            ),
        }


def assert_same_drift(batch: dict, frame: dict) -> None:
    assert batch["drift"] == frame["drift"]
    for key in ("drifted_features", "missing_features", "added_features"):
        assert batch[key] == frame[key], key
    assert list(batch["features"]) == list(frame["features"])
    for feature, info in frame["features"].items():
        mine = batch["features"][feature]
        assert mine["kind"] == info["kind"], feature
        assert mine["rows"] == info["rows"], feature
        assert mine["null_rate"] == info["null_rate"], feature
        assert mine["exceeded"] == info["exceeded"], feature
        assert mine["metrics"] == pytest.approx(info["metrics"], abs=1e-9, rel=0), feature


def test_the_batched_window_gives_the_whole_frame_verdict_and_statistics(window):
    import pandas as pd

    ids = write_captures(window["root"], "classes")
    holdout = predictions_of(window["frame"].tail(300), "classes")
    labels = pd.DataFrame(
        {REQUEST_ID: [*ids, ids[0]], "label": [*([1] * len(ids)), 0]}
    )  # the last label counts
    expectations = [
        *monitor.quality_suite(FEATURES),
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "spend", "min_value": 0, "max_value": 90}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "plan", "value_set": ["basic", "plus"]}},
    ]  # fmt: skip

    captured, expected = whole_frame(window, holdout, labels, expectations)
    staged, got = batched(window, holdout, labels, expectations, batch_rows=64)

    assert staged.rows == len(captured) == 694  # 700 served, 7 by version 2, 1 marked bad; 3 older, 1 "ten"
    assert (staged.bad_rows, staged.bad_columns) == (
        captured.attrs["bad_rows"],
        captured.attrs["bad_columns"],
    )
    assert staged.bad_columns == ["tenure", "visits"]
    assert_same_drift(got["feature_drift"], expected["feature_drift"])
    assert {"spend", "plan"} <= set(got["feature_drift"]["drifted_features"])
    assert got["feature_drift"]["features"]["visits"]["rows"]["current"] == 692  # null in the older file
    assert_same_drift(got["prediction_drift"], expected["prediction_drift"])
    assert got["prediction_drift"]["features"]["prediction"]["kind"] == "categorical"
    assert got["data_quality"] == expected["data_quality"]
    assert [(f["expectation"], f["column"]) for f in got["data_quality"]["failed"]] == [
        ("expect_column_values_to_not_be_null", "spend"), ("expect_column_values_to_be_between", "spend"),
        ("expect_column_values_to_not_be_null", "visits"), ("expect_column_values_to_be_in_set", "plan"),
    ]  # fmt: skip
    assert got["performance"] == expected["performance"]
    assert got["performance"]["labelled"] == 692  # the older file's requests have no label
    assert got["performance"]["degraded"] is True
    verdicts = [
        monitor.verdict(
            694, 100, r["feature_drift"], r["prediction_drift"], r["data_quality"], r["performance"]
        )
        for r in (got, expected)
    ]
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][0] == "degraded"
    json.dumps(json_safe(got), allow_nan=False)  # as the operator returns it (GX lists missing values as NaN)


@pytest.mark.parametrize("kind", ["continuous", "labels"])
def test_prediction_drift_of_continuous_values_and_text_labels_is_the_whole_frame_one(window, kind):
    write_captures(window["root"], kind)
    holdout = predictions_of(window["frame"].tail(300), kind)
    captured = read_captures(
        str(window["root"]), MODEL, window["start"], window["end"], columns=FEATURES, meta=[PREDICTION],
        version="1", types=SIGNATURE,
    )  # fmt: skip
    expected = compute_drift(*monitor.prediction_frames(holdout, captured[PREDICTION]))

    with monitor_captures.staged_window(
        str(window["root"]), MODEL, window["start"], window["end"], FEATURES, version="1", types=SIGNATURE,
        batch_rows=100,
    ) as staged:  # fmt: skip
        got = monitor_captures.prediction_drift(holdout, staged)

    assert_same_drift(got, expected)
    assert got["features"]["prediction"]["kind"] == ("numeric" if kind == "continuous" else "categorical")
    assert got["drift"] is True
    json.dumps(got, allow_nan=False)
