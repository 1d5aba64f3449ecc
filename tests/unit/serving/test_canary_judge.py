"""The live judge of a canary: canary vs baseline requests to pass, fail or inconclusive, with its numbers."""

from __future__ import annotations

import random

import pytest

from airflow_mlops.serving.canary import FAIL, INCONCLUSIVE, PASS, CanaryPolicy, judge_canary


def requests(count, *, failing=0.0, latency=10.0, prediction=lambda i: 0, seed=0):
    """*count* captured requests: every 1/failing-th one failed (500), latencies around *latency* ms."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        failed = failing and i % round(1 / failing) == round(1 / failing) - 1
        out.append(
            {
                "status": 500 if failed else 200,
                "latency_ms": latency * (0.8 + 0.4 * rng.random()),
                "prediction": None if failed else prediction(i),
            }
        )
    return out


def test_a_canary_like_its_baseline_passes_with_its_counts():
    judged = judge_canary(requests(100, seed=1), requests(400, seed=2), CanaryPolicy())

    assert judged["verdict"] == PASS
    assert judged["reasons"] == []
    assert (judged["canary"]["requests"], judged["canary"]["errors"]) == (100, 0)
    assert judged["baseline"]["requests"] == 400
    assert judged["latency"]["test"] == "mann-whitney-u"
    assert judged["predictions"]["test"] == "chi-square"


def test_a_canary_failing_5_percent_of_its_requests_fails():
    judged = judge_canary(requests(100, failing=0.05), requests(400), CanaryPolicy())

    assert judged["verdict"] == FAIL
    assert judged["canary"]["errors"] == 5
    assert (
        "the canary failed 5 of 100 live requests (5.0%), the baseline 0 of 400 (0.0%)"
        in judged["reasons"][0]
    )


def test_an_error_rate_no_worse_than_the_baselines_passes():
    """Both fail the same requests (bad input, say): the canary is not to blame."""
    judged = judge_canary(
        requests(100, failing=0.05), requests(400, failing=0.05), CanaryPolicy(max_error_rate=0.01)
    )

    assert judged["verdict"] == PASS


def test_too_few_requests_is_inconclusive_never_a_guess():
    judged = judge_canary(requests(10, failing=0.5), requests(400), CanaryPolicy(min_requests=50))

    assert judged["verdict"] == INCONCLUSIVE
    assert judged["reasons"] == [
        "too few live requests to judge: canary 10, baseline 400 (50 needed on each side)"
    ]


def test_a_significantly_slower_canary_fails_on_mann_whitney():
    judged = judge_canary(requests(200, latency=40.0), requests(200, latency=10.0), CanaryPolicy())

    assert judged["verdict"] == FAIL
    assert judged["latency"]["p_value"] < 0.01
    assert judged["latency"]["median_ratio"] > 3
    assert "the canary is slower" in judged["reasons"][0]


def test_a_few_milliseconds_slower_is_within_the_latency_tolerance():
    """A fresh server's 3 ms against 1.5 ms: significant and twice as slow, yet no user notices."""
    judged = judge_canary(requests(200, latency=3.0), requests(200, latency=1.5), CanaryPolicy())

    assert judged["latency"]["p_value"] < 0.01
    assert judged["verdict"] == PASS


def test_shifted_class_predictions_fail_on_chi_square_and_jensen_shannon():
    judged = judge_canary(
        requests(200, prediction=lambda i: int(i % 100 > 12)), requests(200), CanaryPolicy()
    )

    assert judged["verdict"] == FAIL
    assert judged["predictions"]["test"] == "chi-square"
    assert judged["predictions"]["js_distance"] > 0.5
    assert "predictions differ from the baseline's (chi-square" in judged["reasons"][0]


def test_shifted_numeric_predictions_fail_on_kolmogorov_smirnov():
    judged = judge_canary(
        requests(200, prediction=lambda i: 5.0 + (i % 10) * 0.1),
        requests(200, prediction=lambda i: 1.0 + (i % 10) * 0.1),
        CanaryPolicy(),
    )

    assert judged["verdict"] == FAIL
    assert judged["predictions"]["test"] == "kolmogorov-smirnov"
    assert judged["predictions"]["js_distance"] == 1.0


def test_an_old_policy_dict_still_loads_and_new_fields_are_checked():
    old = {"percent": 20, "bake_seconds": 600, "interval": 5, "max_error_rate": 0.01, "max_p95_ms": 250}

    policy = CanaryPolicy.from_dict(old)

    assert (policy.min_requests, policy.failure_limit, policy.max_extensions) == (50, 0, 1)
    assert policy.longest_bake == 1200.0
    with pytest.raises(ValueError, match="failure_limit must be a whole number of at least 0"):
        CanaryPolicy(failure_limit=-1)
    with pytest.raises(ValueError, match="alpha must be a significance level"):
        CanaryPolicy(alpha=1.5)


def test_with_labels_a_canary_worse_on_its_labelled_requests_fails_and_one_as_good_passes():
    import pandas as pd

    def labelled(count, offset, prediction):
        out = requests(count, prediction=lambda i: prediction)
        for index, request in enumerate(out):
            request["request_id"] = f"r{offset + index}"
        return out

    canary, baseline = labelled(100, 0, 1), labelled(400, 1000, 0)
    truth = pd.DataFrame(
        {"_request_id": [f"r{i}" for i in range(100)] + [f"r{i}" for i in range(1000, 1400)], "label": 0}
    )
    policy = CanaryPolicy(max_js_distance=None)  # only the labels tell the sides apart

    worse = judge_canary(canary, baseline, policy, truth)
    alike = judge_canary(labelled(100, 0, 0), baseline, policy, truth)
    unlabelled = judge_canary(canary, baseline, policy)

    assert worse["verdict"] == FAIL
    assert worse["performance"] == {
        "metric": "accuracy_score", "canary": 0.0, "baseline": 1.0, "drop": 1.0,
        "canary_labelled": 100, "baseline_labelled": 400,
    }  # fmt: skip
    assert "accuracy_score on 100 labelled live requests is 0.0" in worse["reasons"][0]
    assert (alike["verdict"], alike["performance"]["drop"]) == (PASS, 0.0)
    assert (unlabelled["verdict"], unlabelled["performance"]) == (PASS, None)


def test_label_settings_are_checked():
    with pytest.raises(ValueError, match="performance_metric must be one of accuracy_score"):
        CanaryPolicy(performance_metric="auc")
    with pytest.raises(ValueError, match="min_labels must be a whole number of at least 1"):
        CanaryPolicy(min_labels=0)
