"""
The canary policy of a deployment (one small, JSON-serialisable object) and the bake that applies it.

A canary rollout serves the new version at ``percent`` % of the traffic next to the one serving now, then
**bakes** it: for ``bake_seconds`` one sample row every ``interval`` seconds goes to the canary revision, and
its error rate and p95 latency are compared with ``max_error_rate`` and ``max_p95_ms``. Passing promotes it to
100%; failing rolls it back. No Airflow import: the policy travels through XCom, triggers and the registry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.base import ERROR_MAX, PredictionError, canary_percent_for
from airflow_mlops.serving.verification import percentile

if TYPE_CHECKING:
    import logging

    from airflow_mlops.serving.base import DeployTarget
    from airflow_mlops.serving.status import Deployment

#: Seconds a canary is baked by default, and seconds between its bake requests.
DEFAULT_BAKE_SECONDS = 60.0
DEFAULT_BAKE_INTERVAL = 1.0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class CanaryPolicy:
    """
    How a new version is rolled out next to the one serving: N% of the traffic, a bake, then 100% or back.

    Validated when built (``ValueError`` saying what is allowed), JSON round-trip through :meth:`to_dict` /
    :meth:`from_dict`.

    :param percent: Percent of traffic (1-99) the new version gets during its bake; None uses the target's
        own setting (KServe ``canary_traffic_percent``), and no setting there means no canary.
    :param bake_seconds: How long the canary is baked (the task holds its worker slot meanwhile).
    :param interval: Seconds between bake requests.
    :param max_error_rate: Highest share (0-1) of failed bake requests that still promotes the canary; 0 ends
        the bake at the first error.
    :param max_p95_ms: Highest p95 latency (milliseconds) of the bake requests; None: no limit.
    """

    percent: int | None = None
    bake_seconds: float = DEFAULT_BAKE_SECONDS
    interval: float = DEFAULT_BAKE_INTERVAL
    max_error_rate: float = 0.0
    max_p95_ms: float | None = None

    def __post_init__(self) -> None:
        percent = self.percent
        if percent is not None and (
            isinstance(percent, bool) or not isinstance(percent, int) or not 0 < percent < 100
        ):
            raise ValueError(
                f"canary percent must be an integer from 1 to 99 (the canary's share of traffic) or None, "
                f"got {percent!r}"
            )
        if not _number(self.bake_seconds) or self.bake_seconds < 0:
            raise ValueError(
                f"bake_seconds must be a non-negative number of seconds, got {self.bake_seconds!r}"
            )
        if not _number(self.interval) or self.interval <= 0:
            raise ValueError(f"canary interval must be a positive number of seconds, got {self.interval!r}")
        if not _number(self.max_error_rate) or not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"max_error_rate must be a share from 0 to 1, got {self.max_error_rate!r}")
        if self.max_p95_ms is not None and (not _number(self.max_p95_ms) or self.max_p95_ms <= 0):
            raise ValueError(
                f"max_p95_ms must be a positive number of milliseconds or None, got {self.max_p95_ms!r}"
            )
        object.__setattr__(self, "bake_seconds", float(self.bake_seconds))
        object.__setattr__(self, "interval", float(self.interval))
        object.__setattr__(self, "max_error_rate", float(self.max_error_rate))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for XCom, trigger kwargs and the registry)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryPolicy:
        """The inverse of :meth:`to_dict`; an unknown key is a ``ValueError`` naming the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"Unknown canary setting(s) {unknown}: use {sorted(allowed)}")
        return cls(**dict(data))

    @classmethod
    def coerce(cls, value: CanaryPolicy | Mapping[str, Any] | None) -> CanaryPolicy:
        """A policy from a policy, a dict of its fields, or None (the defaults)."""
        if isinstance(value, CanaryPolicy):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ValueError(
            f"canary must be a CanaryPolicy, a dict of its settings or None, got {type(value).__name__}"
        )

    def percent_for(self, target: DeployTarget) -> int | None:
        """The canary percent a deployment on *target* uses: this policy's, else the target's; None: no canary."""
        return canary_percent_for(self.percent, target)


def bake(
    target: DeployTarget,
    deployment: Deployment,
    records: list[dict[str, Any]],
    policy: CanaryPolicy,
    *,
    request_timeout: float = 30.0,
    log: logging.Logger | Any | None = None,
) -> dict[str, Any]:
    """
    Bake a canary: judge its error rate and p95 latency under a trickle of requests.

    One of *records* goes to the canary every ``policy.interval`` seconds for ``policy.bake_seconds`` (at
    least one request); with ``max_error_rate`` 0 the first error ends the bake.

    :return: ``{"canary_percent", "endpoint", "requests", "errors", "error_rate", "p95_ms",
        "max_error_rate", "max_p95_ms"}``, plus ``"failure"`` (why) if the canary failed.
    """
    endpoint = target.canary_endpoint(deployment)
    if log is not None:
        log.info(
            "Baking version %s at %s for %ss (one request every %ss)",
            deployment.version, endpoint, policy.bake_seconds, policy.interval,
        )  # fmt: skip
    deadline = time.monotonic() + policy.bake_seconds
    latencies: list[float] = []
    errors, last_error = 0, ""
    while True:
        record = records[len(latencies) % len(records)]
        started = time.perf_counter()
        try:
            predictions = target.predict_canary(deployment, [record], timeout=request_timeout)
            if len(predictions) != 1:
                raise PredictionError(f"1 row sent, {len(predictions)} predictions received")
        except PredictionError as err:
            errors, last_error = errors + 1, str(err)
        latencies.append((time.perf_counter() - started) * 1000)
        if (errors and not policy.max_error_rate) or time.monotonic() + policy.interval > deadline:
            break
        time.sleep(policy.interval)
    requests = len(latencies)
    result: dict[str, Any] = {
        "canary_percent": deployment.details.get("canary_traffic_percent"),
        "endpoint": endpoint,
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4),
        "p95_ms": round(percentile(latencies, 95), 2),
        "max_error_rate": policy.max_error_rate,
        "max_p95_ms": policy.max_p95_ms,
    }
    if result["error_rate"] > policy.max_error_rate:
        result["failure"] = (
            f"canary bake failed: error rate {result['error_rate']} > max_error_rate {policy.max_error_rate} "
            f"({errors} of {requests} requests); last error: {last_error[:ERROR_MAX]}"
        )
        details = target.diagnostics(deployment)
        if details:
            result["failure"] += f"\n{details}"
    elif policy.max_p95_ms is not None and result["p95_ms"] > policy.max_p95_ms:
        result["failure"] = (
            f"canary bake failed: p95 latency {result['p95_ms']} ms > max_p95_ms {policy.max_p95_ms} "
            f"({requests} requests)"
        )
    return result
