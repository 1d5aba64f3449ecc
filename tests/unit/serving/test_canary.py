"""A canary policy is one validated, JSON-serialisable object; the bake judges a canary by it."""

from __future__ import annotations

import json
import time

import pytest

from airflow_mlops.serving.base import Deployment, PredictionError
from airflow_mlops.serving.canary import CanaryPolicy, bake
from airflow_mlops.serving.kserve import KServeTarget
from airflow_mlops.serving.local import LocalServerTarget
from tests.support.deploy import EchoTarget

ROWS = [{"x": 1.0}, {"x": 2.0}]


class CanaryEcho(EchoTarget):
    """The user target with a canary: ``failing`` lists the request numbers that fail."""

    supports_canary = True

    def __init__(self, *, region: str = "eu-west-1", failing: tuple[int, ...] = (), delay: float = 0) -> None:
        super().__init__(region=region)
        self.failing = failing
        self.delay = delay
        self.calls = 0

    def canary_percent(self):
        return 10

    def predict_canary(self, deployment, records, timeout=30.0):
        self.calls += 1
        time.sleep(self.delay)
        if self.calls in self.failing:
            raise PredictionError(f"request {self.calls}: upstream connect error", status_code=503)
        return [int(deployment.version)] * len(records)


def canary_deployment() -> Deployment:
    return Deployment("m", "2", "models:/m/2", "echo", "echo://m", "", details={"canary_traffic_percent": 10})


def test_a_policy_round_trips_through_json():
    policy = CanaryPolicy(percent=20, bake_seconds=600, interval=5, max_error_rate=0.01, max_p95_ms=250)

    data = json.loads(json.dumps(policy.to_dict()))

    assert data == {"percent": 20, "bake_seconds": 600.0, "interval": 5.0, "max_error_rate": 0.01,
                    "max_p95_ms": 250, "min_requests": 50, "failure_limit": 0, "max_extensions": 1,
                    "alpha": 0.01, "max_latency_ratio": 2.0, "latency_tolerance_ms": 10.0,
                    "max_js_distance": 0.1, "labels_uri": None, "label_column": "label",
                    "performance_metric": "accuracy_score", "max_performance_drop": 0.02,
                    "min_labels": 30}  # fmt: skip
    assert CanaryPolicy.from_dict(data) == policy
    assert CanaryPolicy.coerce(data) == policy
    assert CanaryPolicy.coerce(policy) is policy
    assert CanaryPolicy.coerce(None) == CanaryPolicy()


def test_the_policys_percent_wins_over_the_targets():
    assert CanaryPolicy(percent=30).percent_for(KServeTarget(canary_traffic_percent=10)) == 30
    assert CanaryPolicy().percent_for(KServeTarget(canary_traffic_percent=10)) == 10
    assert CanaryPolicy().percent_for(KServeTarget(canary_traffic_percent=100)) is None
    assert CanaryPolicy().percent_for(KServeTarget()) is None
    assert CanaryPolicy().percent_for(LocalServerTarget()) is None


def test_a_clean_bake_passes_with_its_numbers():
    target = CanaryEcho()

    result = bake(target, canary_deployment(), ROWS, CanaryPolicy(bake_seconds=0.05, interval=0.01))

    assert "failure" not in result
    assert result["requests"] == target.calls >= 2
    assert (result["errors"], result["error_rate"], result["canary_percent"]) == (0, 0.0, 10)
    assert result["endpoint"] == "echo://m"
    assert result["max_p95_ms"] is None


def test_with_no_error_allowed_the_first_error_ends_the_bake():
    target = CanaryEcho(failing=(2,))

    result = bake(target, canary_deployment(), ROWS, CanaryPolicy(bake_seconds=30, interval=0.01))

    assert result["requests"] == 2
    assert result["errors"] == 1
    assert result["failure"].startswith("canary bake failed: error rate 0.5 > max_error_rate 0.0")
    assert "upstream connect error" in result["failure"]


def test_an_error_rate_within_the_limit_promotes_and_a_slow_canary_fails():
    target = CanaryEcho(failing=(1,))
    policy = CanaryPolicy(bake_seconds=0.2, interval=0.01, max_error_rate=0.5)

    assert "failure" not in bake(target, canary_deployment(), ROWS, policy)

    slow = CanaryPolicy(bake_seconds=0, interval=0.01, max_p95_ms=5)
    result = bake(CanaryEcho(delay=0.02), canary_deployment(), ROWS, slow)

    assert result["requests"] == 1
    assert result["p95_ms"] >= 20
    assert result["failure"].startswith("canary bake failed: p95 latency")
    assert "ms > max_p95_ms 5 (1 requests)" in result["failure"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"percent": 0}, "from 1 to 99"),
        ({"percent": 99.5}, "from 1 to 99"),
        ({"bake_seconds": "60"}, "bake_seconds"),
        ({"interval": -1}, "interval"),
        ({"max_error_rate": -0.1}, "max_error_rate"),
        ({"max_p95_ms": False}, "max_p95_ms"),
    ],
)
def test_invalid_policies_say_what_is_allowed(settings, message):
    with pytest.raises(ValueError, match=message):
        CanaryPolicy(**settings)
