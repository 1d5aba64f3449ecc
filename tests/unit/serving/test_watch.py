"""
The release watch's judgement: live requests captured by the real capture writer (real Parquet files), measured
per version and judged against the policy. No server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_mlops.serving.capture import CaptureWriter
from airflow_mlops.serving.watch import FAIL, INCONCLUSIVE, PASS, WatchPolicy, measure

START = datetime.now(UTC) - timedelta(minutes=5)


def scoring(*rows: dict) -> bytes:
    return json.dumps({"dataframe_records": list(rows)}).encode()


def captured(tmp_path, requests: list[tuple[str, int, float | None]]) -> dict:
    """Capture *requests* ``(version, status, latency_ms)`` of two rows each; measure version 2."""
    writer = CaptureWriter(str(tmp_path), flush_seconds=60)
    for index, (version, status, latency) in enumerate(requests):
        body = b'{"predictions": [0, 1]}' if status == 200 else b'{"error_code": "BAD_REQUEST"}'
        rows = scoring(
            {"tenure_months": index, "monthly_spend": 1.0}, {"tenure_months": index, "monthly_spend": 2.0}
        )
        writer.submit("churn", version, f"r{index}", status, rows, body, latency_ms=latency)
    assert writer.flush()
    writer.close()
    return measure(str(tmp_path), "churn", "2", START, datetime.now(UTC) + timedelta(seconds=1))


def test_requests_of_the_watched_version_are_counted_once_with_their_errors_and_latency(tmp_path):
    requests = [("2", 200, float(ms)) for ms in range(1, 97)]  # 96 good requests of 1-96 ms
    requests += [("2", 400, 5.0), ("2", 400, 5.0), ("2", 503, 5.0), ("2", 500, None)]  # 4 failed
    requests += [("1", 500, 1.0)] * 20  # the previous version's failures are not this version's

    measured = captured(tmp_path, requests)

    assert measured["requests"] == 100  # two rows each, one request
    assert (measured["errors"], measured["server_errors"]) == (4, 2)
    assert 90.0 <= measured["p95_latency_ms"] <= 92.0


def test_captures_without_latency_measure_no_latency(tmp_path):
    measured = captured(tmp_path, [("2", 200, None)] * 5)
    assert (measured["requests"], measured["errors"], measured["p95_latency_ms"]) == (5, 0, None)


def test_no_captures_measure_nothing(tmp_path):
    assert measure(str(tmp_path), "churn", "2", START, datetime.now(UTC)) == {
        "requests": 0, "errors": 0, "server_errors": 0, "p95_latency_ms": None, "prediction_drift": None,
    }  # fmt: skip


def test_the_verdict_fails_early_on_broken_limits_and_judges_the_rest_at_the_window_end():
    policy = WatchPolicy(
        max_error_rate=0.02, min_requests=50, max_p95_latency_ms=100, max_unavailable_checks=3
    )

    def judge(requests, errors, p95=None, down=0, final=False):
        measured = {"requests": requests, "errors": errors, "server_errors": 0, "p95_latency_ms": p95}
        return policy.judge({**measured, "unavailable_checks": down, "health": "connection refused"}, final)

    # Too few requests to judge: wait, and at the end say so rather than roll back.
    assert judge(10, 5) == (None, "watching")
    verdict, why = judge(10, 5, final=True)
    assert verdict == INCONCLUSIVE
    assert "only 10 live requests in the window (50 needed" in why
    # Enough requests: a broken limit fails at once, before the window ends.
    verdict, why = judge(200, 9)
    assert verdict == FAIL
    assert "failed 9 of 200 live requests (4.5%; at most 2.0% allowed" in why
    verdict, why = judge(200, 1, p95=250.0)
    assert verdict == FAIL
    assert "p95 latency 250.0 ms over 200 live requests (at most 100 ms" in why
    verdict, why = judge(0, 0, down=3)
    assert verdict == FAIL
    assert "failed 3 health checks in a row (connection refused)" in why
    # Within the limits: keep watching, and pass at the end.
    assert judge(200, 2, p95=80.0, down=2) == (None, "watching")
    verdict, why = judge(200, 2, p95=80.0, final=True)
    assert verdict == PASS
    assert "2 of 200 live requests failed (1.0%)" in why


def test_live_predictions_that_drift_from_those_on_the_holdout_fail_the_release_when_asked(tmp_path):
    # Live requests answered 1 for most rows; on the holdout the version answered 0.
    requests = [("2", 200, 3.0)] * 60
    measured = captured(tmp_path, requests)
    assert measured["prediction_drift"] is None  # no reference: not measured
    drifted = measure(str(tmp_path), "churn", "2", START, datetime.now(UTC), reference=[0] * 50)
    kept = measure(str(tmp_path), "churn", "2", START, datetime.now(UTC), reference=[0, 1] * 25)

    assert "linf" in drifted["prediction_drift"]["exceeded"]
    assert kept["prediction_drift"]["exceeded"] == []
    watching = WatchPolicy(min_requests=50, prediction_drift=True)
    verdict, why = watching.judge({**drifted, "unavailable_checks": 0}, final=False)
    assert verdict == FAIL
    assert "the live predictions of 60 requests drifted from the predictions on the holdout (" in why
    assert "linf 0.500 > " in why
    assert watching.judge({**kept, "unavailable_checks": 0}, final=False) == (None, "watching")
    # Not asked for: measured, but it fails nothing.
    assert WatchPolicy(min_requests=50).judge({**drifted, "unavailable_checks": 0}, final=False)[0] is None


def test_a_policy_says_what_is_wrong_with_it():
    assert WatchPolicy.coerce({"window": timedelta(minutes=10)}).window_seconds == 600
    assert WatchPolicy.coerce(None) == WatchPolicy()
    with pytest.raises(ValueError, match="unknown setting\\(s\\) max_errors; allowed: interval_seconds"):
        WatchPolicy.coerce({"max_errors": 3})
    with pytest.raises(ValueError, match="max_error_rate must be a share from 0 to below 1, got 5"):
        WatchPolicy(max_error_rate=5)
    with pytest.raises(ValueError, match="window_seconds must be a positive number of seconds, got 0"):
        WatchPolicy(window_seconds=0)
    with pytest.raises(ValueError, match="watch must be a WatchPolicy or a dict of its fields, got 'soon'"):
        WatchPolicy.coerce("soon")
