"""
The replay's comparison, sample and summary, on frames shaped like captures: what a reviewer reads and what
the gate decides.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from airflow_mlops.serving.base import PredictionError
from airflow_mlops.serving.replay import (
    CLASSIFICATION,
    REGRESSION,
    ReplayLimits,
    compare,
    gate_failures,
    latency,
    prediction_kind,
    render_markdown,
    replay_requests,
    replay_seed,
    sample_requests,
)

T0 = datetime(2026, 12, 5, tzinfo=UTC)


def captures(predictions, regions=None, rows_per_request=1) -> pd.DataFrame:
    rows = []
    for index, prediction in enumerate(predictions):
        rows.append({
            "tenure_months": float(index), "region": (regions or ["north"] * len(predictions))[index],
            "_request_id": f"r{index // rows_per_request:03d}", "_row": index % rows_per_request,
            "_timestamp": T0 + timedelta(seconds=index // rows_per_request), "_prediction": prediction,
        })  # fmt: skip
    return pd.DataFrame(rows)


def test_the_same_seed_draws_the_same_requests_whatever_order_the_files_were_read_in():
    frame = captures(list(range(200)), rows_per_request=2)
    seed = replay_seed("mlops_continuous_training/scheduled__2026-12-05/replay/-1")

    first = sample_requests(frame, 30, seed)
    again = sample_requests(frame.sample(frac=1, random_state=3), 30, seed)
    other = sample_requests(
        frame, 30, replay_seed("mlops_continuous_training/scheduled__2026-12-06/replay/-1")
    )

    assert first["_request_id"].nunique() == 30
    assert len(first) == 60  # whole requests, both rows of each
    assert first.equals(again)
    assert list(first["_request_id"]) != list(other["_request_id"])
    assert list(first["_request_id"]) == sorted(first["_request_id"])  # in the order they were served
    assert len(sample_requests(frame, 500, seed)) == 200  # fewer requests than asked: all of them


def test_class_labels_are_compared_row_by_row_with_the_changed_answers_and_per_segment():
    frame = captures([1, 1.0, "0", 0, 1, 0], regions=["east", "east", "west", "west", "west", None])
    result = compare(frame, [0, 0, 0, 0.0, 1, 0], CLASSIFICATION, "region")

    assert result["overall"] == {
        "rows": 6, "disagreeing_rows": 2, "disagreement": round(2 / 6, 6),
        "changes": [{"champion": "1", "candidate": "0", "rows": 2}],
    }  # fmt: skip
    segments = {s["segment"]: (s["sampled_rows"], s["disagreement"]) for s in result["segments"]["values"]}
    assert segments == {"east": (2, 1.0), "west": (3, 0.0), "(null)": (1, 0.0)}


def test_numbers_are_compared_as_a_regression_by_their_absolute_difference():
    frame = captures([10.5, 20.25, 30.0, 40.75])
    result = compare(frame, [11.5, 20.25, 27.0, None], REGRESSION)

    assert result["overall"] == {
        "rows": 3, "median_abs_diff": 1.0, "p95_abs_diff": 2.8, "max_abs_diff": 3.0, "mean_diff": round(-2 / 3, 6),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("values", "kind"),
    [([0, 1, 1.0, None], CLASSIFICATION), (["yes", "no"], CLASSIFICATION), ([0.5, 1.25], REGRESSION),
     (list(range(50)), REGRESSION), ([], CLASSIFICATION)],
)  # fmt: skip
def test_the_kind_of_answers_is_told_from_the_champions_answers(values, kind):
    assert prediction_kind(values) == kind


def test_failed_and_short_answers_count_as_failed_requests_and_their_rows_get_no_answer():
    frame = captures([1, 1, 0, 0, 1, 1], rows_per_request=2)
    answers = iter([[1, 1], PredictionError("POST /invocations answered HTTP 500: boom", 500), [0]])

    def predict(records):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    run = replay_requests(frame, ["tenure_months"], predict)

    assert (run.requests, run.failed_requests) == (3, 2)
    assert run.answers == [1, 1, None, None, None, None]
    assert run.errors == ["POST /invocations answered HTTP 500: boom", "2 rows sent, 1 predictions received"]
    assert len(run.latencies_ms) == 2


def test_the_gate_names_each_figure_beyond_its_limit():
    comparison = {"kind": CLASSIFICATION, "overall": {"rows": 40, "disagreement": 0.3}}
    errors = {"requests": 2, "rate": 0.05}
    limits = ReplayLimits(max_disagreement=0.1, max_error_rate=0.01, max_p95_latency_ms=100)

    failures = gate_failures(limits, comparison, errors, {"candidate": {"p50": 3.0, "p95": 12.5}})

    assert failures == ["disagreement 30% > max_disagreement 10%", "error rate 5% > max_error_rate 1%"]
    assert gate_failures(ReplayLimits(), comparison, errors, latency([3.0])) == []


@pytest.mark.parametrize(
    ("limits", "message"),
    [({"max_disagreement": 1.5}, "between 0 and 1"), ({"max_p95_abs_diff": -1}, ">= 0"),
     ({"max_error_rate": "5%"}, "must be a number"), ({"max_p95_latency_ms": float("nan")}, "must be a number")],
)  # fmt: skip
def test_limits_out_of_range_are_refused(limits, message):
    with pytest.raises(ValueError, match=message):
        ReplayLimits(**limits)


def test_a_limit_of_the_other_kind_of_answers_is_refused_rather_than_never_checked():
    with pytest.raises(ValueError, match="max_disagreement applies to class labels"):
        ReplayLimits(max_disagreement=0.1).check_kind(REGRESSION)
    with pytest.raises(ValueError, match="max_p95_abs_diff applies to numbers"):
        ReplayLimits(max_p95_abs_diff=1.0).check_kind(CLASSIFICATION)


def test_the_summary_shows_the_figures_against_their_limits_and_the_outcome():
    result = {
        "model_name": "churn", "version": "4", "champion_version": "3", "target": "local", "outcome": "failed",
        "window": {"start": "2026-12-04T00:00:00+00:00", "end": "2026-12-05T00:00:00+00:00"},
        "captured": {"requests": 120, "rows": 130, "bad_rows": 2},
        "sample": {"requests": 100, "rows": 108, "seed": 7},
        "comparison": {
            "kind": CLASSIFICATION,
            "overall": {"rows": 108, "disagreeing_rows": 27, "disagreement": 0.25,
                        "changes": [{"champion": "1", "candidate": "0", "rows": 27}]},
            "segments": {"column": "region", "values": [
                {"segment": "east", "sampled_rows": 27, "rows": 27, "disagreeing_rows": 27, "disagreement": 1.0},
            ]},
        },  # fmt: skip
        "errors": {"requests": 0, "rate": 0.0, "examples": []},
        "latency_ms": {"candidate": {"p50": 2.5, "p95": 4.0, "max": 9.0}, "champion": None},
        "limits": {"max_disagreement": 0.1},
        "failures": ["disagreement 25% > max_disagreement 10%"],
    }  # fmt: skip

    text = render_markdown(result)

    assert text.startswith("### Replay of production traffic: `churn` v4 against v3 (champion)")
    assert "100 of 120 production requests (108 rows)" in text
    assert "2 captured rows with values not of the signature's types were left out" in text
    assert "| disagreement | 25% (27 of 108 rows) | <= 10% |" in text
    assert "| candidate latency p50 / p95 | 2.5 / 4 ms |" in text
    assert "| champion latency p50 / p95 | not captured | |" in text
    assert "`1 -> 0` 27" in text
    assert "| east | 27 | 100% |" in text
    assert text.endswith("**Failed**: disagreement 25% > max_disagreement 10%.")


def test_a_shadow_with_no_mirrored_answers_in_the_window_has_nothing_to_compare(tmp_path):
    from airflow_mlops.serving.replay import compare_shadow

    result = compare_shadow(str(tmp_path), "churn", "4", T0, T0 + timedelta(hours=1))

    assert result["outcome"] == "nothing_to_replay"
    assert result["compared"] == {"requests": 0, "rows": 0}
    assert "Nothing to compare: no production request mirrored to v4" in result["markdown"]
