"""
A watch after release: the live traffic a newly released version served, measured against service levels.

:class:`WatchPolicy` says how long to watch and what breaks the release: the share of live requests the model
server did not answer with a 2xx status, the 95th percentile of its latency, and the endpoint's availability.
:func:`measure` reads the captured requests of the version (production traffic and the requests it refused,
see :mod:`airflow_mlops.serving.capture`); :meth:`WatchPolicy.judge` turns measurements into a verdict:
``fail`` as soon as a limit is broken on enough requests, ``pass`` at the window's end, ``inconclusive`` when
the window ended with too few requests to say. No Airflow here: the trigger and the operator use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.data.storage import Storage

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


@dataclass(frozen=True)
class WatchPolicy:
    """
    How long a release is watched and what breaks it.

    :param window_seconds: How long after the version began to serve its traffic is watched.
    :param max_error_rate: Largest share of live requests the model server may fail, 0-1: any answer but a
        2xx (MLflow's scoring server answers 400 when the model raises, so a refused request counts).
    :param min_requests: Requests needed before the error rate or latency may fail the release; a window that
        ends with fewer is ``inconclusive`` (nothing rolled back).
    :param max_p95_latency_ms: Largest 95th percentile of the model server's latency, in milliseconds (None:
        not checked). Needs captures that record latency (the local target's proxy does).
    :param max_unavailable_checks: Consecutive failed health checks of the endpoint that fail the release.
    :param interval_seconds: Seconds between two measurements.
    :param prediction_drift: Fail the release when its live predictions drift from its predictions on the
        holdout (``sample_data``), by the package's drift thresholds (PSI, KS for numbers; L-infinity,
        Jensen-Shannon for classes); with at least ``min_requests`` requests.
    :param reference_rows: Holdout rows whose predictions are the reference of ``prediction_drift``.
    """

    window_seconds: float = 1800.0
    max_error_rate: float = 0.01
    min_requests: int = 100
    max_p95_latency_ms: float | None = None
    max_unavailable_checks: int = 3
    interval_seconds: float = 30.0
    prediction_drift: bool = False
    reference_rows: int = 1000

    def __post_init__(self) -> None:
        if not _positive(self.window_seconds):
            raise ValueError(
                f"window_seconds must be a positive number of seconds, got {self.window_seconds!r}"
            )
        if not (isinstance(self.max_error_rate, int | float) and 0 <= self.max_error_rate < 1):
            raise ValueError(f"max_error_rate must be a share from 0 to below 1, got {self.max_error_rate!r}")
        if (
            not isinstance(self.min_requests, int)
            or isinstance(self.min_requests, bool)
            or self.min_requests < 1
        ):
            raise ValueError(f"min_requests must be a whole number of at least 1, got {self.min_requests!r}")
        if self.max_p95_latency_ms is not None and not _positive(self.max_p95_latency_ms):
            raise ValueError(
                f"max_p95_latency_ms must be a positive number of milliseconds or None, got {self.max_p95_latency_ms!r}"
            )
        if not isinstance(self.max_unavailable_checks, int) or self.max_unavailable_checks < 1:
            raise ValueError(
                f"max_unavailable_checks must be a whole number of at least 1, got {self.max_unavailable_checks!r}"
            )
        if not isinstance(self.prediction_drift, bool):
            raise ValueError(f"prediction_drift must be True or False, got {self.prediction_drift!r}")
        if (
            not isinstance(self.reference_rows, int)
            or isinstance(self.reference_rows, bool)
            or self.reference_rows < 1
        ):
            raise ValueError(
                f"reference_rows must be a whole number of at least 1, got {self.reference_rows!r}"
            )
        if not _positive(self.interval_seconds):
            raise ValueError(
                f"interval_seconds must be a positive number of seconds, got {self.interval_seconds!r}"
            )

    @classmethod
    def coerce(cls, value: WatchPolicy | Mapping[str, Any] | None) -> WatchPolicy:
        """A policy from a policy, a dict of its fields (``window`` may be a timedelta), or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"watch must be a WatchPolicy or a dict of its fields, got {value!r}")
        known = {f.name for f in fields(cls)}
        given = dict(value)
        if isinstance(given.get("window"), timedelta):
            given["window_seconds"] = given.pop("window").total_seconds()
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(
                f"watch: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def judge(self, measured: Mapping[str, Any], final: bool) -> tuple[str | None, str]:
        """
        The verdict on *measured* (:func:`measure`, plus ``unavailable_checks``) and why.

        None while the window runs and nothing is broken; *final*: the window has ended.
        """
        requests, errors = int(measured["requests"]), int(measured["errors"])
        down = int(measured.get("unavailable_checks") or 0)
        if down >= self.max_unavailable_checks:
            return FAIL, f"the endpoint failed {down} health checks in a row ({measured.get('health')})"
        if requests >= self.min_requests:
            rate = errors / requests
            if rate > self.max_error_rate:
                return FAIL, (
                    f"the model server failed {errors} of {requests} live requests ({rate:.1%}; at most "
                    f"{self.max_error_rate:.1%} allowed; {measured.get('server_errors', 0)} of them 5xx)"
                )
            drift = measured.get("prediction_drift") or {}
            if self.prediction_drift and drift.get("exceeded"):
                shown = ", ".join(
                    f"{m} {drift['metrics'][m]:.3f} > {drift['thresholds'][m]:g}" for m in drift["exceeded"]
                )
                return FAIL, (
                    f"the live predictions of {requests} requests drifted from the predictions on the holdout "
                    f"({shown})"
                )
            p95 = measured.get("p95_latency_ms")
            if self.max_p95_latency_ms is not None and p95 is not None and p95 > self.max_p95_latency_ms:
                return FAIL, (
                    f"p95 latency {p95:.1f} ms over {requests} live requests (at most "
                    f"{self.max_p95_latency_ms:g} ms allowed)"
                )
        if not final:
            return None, "watching"
        if requests < self.min_requests:
            return INCONCLUSIVE, (
                f"only {requests} live requests in the window ({self.min_requests} needed to judge): "
                "nothing rolled back"
            )
        rate = errors / requests
        return PASS, f"{errors} of {requests} live requests failed ({rate:.1%}); within the service levels"


def measure(
    root: str,
    model_name: str,
    version: str,
    start: datetime,
    end: datetime,
    storage: Storage | None = None,
    reference: list[Any] | None = None,
) -> dict[str, Any]:
    """
    The live requests *version* of *model_name* answered in ``[start, end)``, from the captures under *root*.

    ``{"requests", "errors", "server_errors", "p95_latency_ms"}``: requests counted once whatever their row
    count; ``errors`` those not answered with a 2xx status, ``server_errors`` the 5xx among them;
    ``p95_latency_ms`` is None when the captures record no latency. With *reference* (predictions on the
    holdout), also ``prediction_drift``: the drift of the live predictions from them (``metrics``,
    ``thresholds``, ``exceeded``), None without live predictions.
    """
    import pandas as pd

    from airflow_mlops.serving.capture import (
        LATENCY,
        PREDICTION,
        PRODUCTION,
        REJECTED,
        REQUEST_ID,
        STATUS,
        read_captures,
    )

    frames = [
        read_captures(
            root,
            model_name,
            start,
            end,
            columns=[],
            storage=storage,
            meta=[
                REQUEST_ID,
                STATUS,
                LATENCY,
                *([PREDICTION] if traffic == PRODUCTION and reference else []),
            ],
            version=str(version),
            traffic=traffic,
        )  # fmt: skip
        for traffic in (PRODUCTION, REJECTED)
    ]
    drift = _prediction_drift(reference, frames[0]) if reference else None
    frame = pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)
    requests = frame.drop_duplicates(REQUEST_ID) if not frame.empty else frame
    if requests.empty:
        return {
            "requests": 0,
            "errors": 0,
            "server_errors": 0,
            "p95_latency_ms": None,
            "prediction_drift": drift,
        }
    status = pd.to_numeric(requests[STATUS], errors="coerce")
    p95 = None
    if LATENCY in requests.columns:
        latency = pd.to_numeric(requests[LATENCY], errors="coerce").dropna()
        if len(latency):
            p95 = float(latency.quantile(0.95))
    return {
        "requests": len(requests),
        "errors": int(((status < 200) | (status >= 300)).sum()),
        "server_errors": int((status >= 500).sum()),
        "p95_latency_ms": round(p95, 3) if p95 is not None and math.isfinite(p95) else None,
        "prediction_drift": drift,
    }


def _prediction_drift(reference: list[Any], live: Any) -> dict[str, Any] | None:
    """The drift of the live predictions (a capture frame) from *reference*, by the default thresholds."""
    from airflow_mlops.data.drift import compute_drift
    from airflow_mlops.serving.capture import PREDICTION
    from airflow_mlops.serving.monitor import PREDICTION_FEATURE, prediction_frames

    if live.empty or PREDICTION not in live.columns or not live[PREDICTION].notna().any():
        return None
    ref, cur = prediction_frames(reference, live[PREDICTION].dropna())
    feature = compute_drift(ref, cur)["features"][PREDICTION_FEATURE]
    return {key: feature[key] for key in ("metrics", "thresholds", "exceeded")}
