"""
The canary policy of a deployment (one small, JSON-serialisable object), its judge, and the probe bake.

A canary rollout serves the new version at ``percent`` % of the traffic next to the one serving now, then
**bakes** it. Where the target captures its traffic (:mod:`airflow_mlops.serving.capture`), the bake is judged
on the live requests each version answered in the bake window (:func:`measure_live`, :func:`judge_canary`):
the canary against the baseline (the version serving before) on error rate, latency (Mann-Whitney U) and the
distribution of predictions (chi-square for classes, Kolmogorov-Smirnov for numbers, with the Jensen-Shannon
distance as the effect size). Every ``interval`` seconds one measurement is taken and judged; more than
``failure_limit`` failed measurements fail the bake, and a bake that ends with fewer than ``min_requests``
requests on either side is ``inconclusive``: it is extended (at most ``max_extensions`` times by
``bake_seconds``), then rolled back (see ``docs/deployment.md``). Where nothing is captured, the **probe bake**
(:func:`bake`) is the fallback: one sample row every ``interval`` seconds to the canary, its error rate and p95
latency compared with ``max_error_rate`` and ``max_p95_ms``. Passing promotes the canary to 100%; failing rolls
it back. No Airflow import: the policy travels through XCom, triggers and the registry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.base import ERROR_MAX, PredictionError, canary_percent_for
from airflow_mlops.serving.monitor import PERFORMANCE_METRICS
from airflow_mlops.serving.verification import percentile

if TYPE_CHECKING:
    import logging
    from datetime import datetime

    import pandas as pd

    from airflow_mlops.data.storage import Storage
    from airflow_mlops.serving.base import DeployTarget
    from airflow_mlops.serving.status import Deployment

#: Seconds a canary is baked by default, and seconds between its bake requests.
DEFAULT_BAKE_SECONDS = 60.0
DEFAULT_BAKE_INTERVAL = 1.0

#: Verdicts of a canary bake.
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
#: How a bake was judged: on captured live requests, or (no capture) on probe requests.
LIVE, PROBES = "live", "probes"


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
    :param min_requests: Live requests each side (canary and baseline) needs before it is judged; a bake that
        ends with fewer is ``inconclusive``.
    :param failure_limit: Failed measurements tolerated during a live bake (Argo Rollouts' ``failureLimit``):
        one more fails the bake at once.
    :param max_extensions: How many times an inconclusive live bake is extended by ``bake_seconds`` before it
        is rolled back as ``inconclusive``.
    :param alpha: Significance level of the statistical tests comparing canary and baseline.
    :param max_latency_ratio: Highest ratio of the canary's median latency to the baseline's when the canary
        is significantly slower (Mann-Whitney U); None: latency compared by ``max_p95_ms`` only.
    :param latency_tolerance_ms: A canary whose median latency is at most this many milliseconds above the
        baseline's is never failed for latency (a fresh server's 1.5 ms against 3 ms is no regression).
    :param max_js_distance: Highest Jensen-Shannon distance between the canary's and the baseline's
        predictions when they differ significantly (chi-square or Kolmogorov-Smirnov); None: not compared.
    :param labels_uri: Ground truth that arrives during the bake: a Parquet or CSV file (or glob) with
        ``_request_id`` and ``label_column``, as for monitoring; read at every measurement. None: no labels.
    :param label_column: The label column of ``labels_uri``.
    :param performance_metric: The metric of canary and baseline on their labelled live requests.
    :param max_performance_drop: Largest drop of the canary's metric below the baseline's; more fails the bake.
    :param min_labels: Labelled live requests each side needs before performance is compared (fewer: the
        bake is judged without it).
    """

    percent: int | None = None
    bake_seconds: float = DEFAULT_BAKE_SECONDS
    interval: float = DEFAULT_BAKE_INTERVAL
    max_error_rate: float = 0.0
    max_p95_ms: float | None = None
    min_requests: int = 50
    failure_limit: int = 0
    max_extensions: int = 1
    alpha: float = 0.01
    max_latency_ratio: float | None = 2.0
    latency_tolerance_ms: float = 10.0
    max_js_distance: float | None = 0.1
    labels_uri: str | None = None
    label_column: str = "label"
    performance_metric: str = "accuracy_score"
    max_performance_drop: float = 0.02
    min_labels: int = 30

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
        if self.labels_uri is not None and (
            not isinstance(self.labels_uri, str) or not self.labels_uri.strip()
        ):
            raise ValueError(
                f"labels_uri must be a file, folder or glob of labels or None, got {self.labels_uri!r}"
            )
        if not isinstance(self.label_column, str) or not self.label_column:
            raise ValueError(
                f"label_column must be the name of the labels' column, got {self.label_column!r}"
            )
        if self.performance_metric not in PERFORMANCE_METRICS:
            raise ValueError(
                f"performance_metric must be one of {', '.join(PERFORMANCE_METRICS)}, got {self.performance_metric!r}"
            )
        if not _number(self.max_performance_drop) or self.max_performance_drop < 0:
            raise ValueError(f"max_performance_drop must be a number >= 0, got {self.max_performance_drop!r}")
        for name in ("min_requests", "failure_limit", "max_extensions", "min_labels"):
            value, least = getattr(self, name), 1 if name in ("min_requests", "min_labels") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")
        if not _number(self.alpha) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be a significance level between 0 and 1, got {self.alpha!r}")
        if self.max_latency_ratio is not None and (
            not _number(self.max_latency_ratio) or self.max_latency_ratio < 1
        ):
            raise ValueError(
                f"max_latency_ratio must be a number >= 1 or None, got {self.max_latency_ratio!r}"
            )
        if not _number(self.latency_tolerance_ms) or self.latency_tolerance_ms < 0:
            raise ValueError(
                f"latency_tolerance_ms must be a non-negative number of milliseconds, got {self.latency_tolerance_ms!r}"
            )
        if self.max_js_distance is not None and (
            not _number(self.max_js_distance) or not 0 < self.max_js_distance <= 1
        ):
            raise ValueError(
                f"max_js_distance must be a number above 0 and at most 1 or None, got {self.max_js_distance!r}"
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

    @property
    def longest_bake(self) -> float:
        """Seconds a live bake may last, its extensions included."""
        return self.bake_seconds * (1 + self.max_extensions)


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


# -- the live judge ---------------------------------------------------------------------------------------


def _side(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of one side's requests (``{"status", "latency_ms", "prediction"}`` each)."""
    errors = sum(1 for r in requests if not 200 <= int(r.get("status") or 0) < 300)
    latencies = sorted(float(r["latency_ms"]) for r in requests if _number(r.get("latency_ms")))
    return {
        "requests": len(requests),
        "errors": errors,
        "error_rate": round(errors / len(requests), 4) if requests else None,
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 2) if latencies else None,
    }


def _is_class(value: Any) -> bool:
    return isinstance(value, str | bool) or (isinstance(value, int) and not isinstance(value, bool))


def _js_distance(p: list[float], q: list[float]) -> float:
    from scipy.spatial.distance import jensenshannon

    value = float(jensenshannon(p, q, base=2))
    return 0.0 if not math.isfinite(value) else value


def _predictions(canary: list[Any], baseline: list[Any]) -> dict[str, Any] | None:
    """The comparison of two sides' predictions: test, p-value and Jensen-Shannon distance; None if empty."""
    from scipy import stats

    canary = [v for v in canary if v is not None]
    baseline = [v for v in baseline if v is not None]
    if not canary or not baseline:
        return None
    if all(_is_class(v) for v in [*canary, *baseline]):
        classes = sorted({str(v) for v in [*canary, *baseline]})
        counts = [[sum(1 for v in side if str(v) == c) for c in classes] for side in (canary, baseline)]
        if len(classes) < 2:
            p_value = 1.0
        else:
            p_value = float(stats.chi2_contingency(counts).pvalue)
        shares = [[n / sum(row) for n in row] for row in counts]
        return {"test": "chi-square", "p_value": round(p_value, 6),
                "js_distance": round(_js_distance(shares[0], shares[1]), 4)}  # fmt: skip
    numbers = [[float(v) for v in side if _number(v)] for side in (canary, baseline)]
    if not numbers[0] or not numbers[1]:
        return None
    p_value = float(stats.ks_2samp(numbers[0], numbers[1]).pvalue)
    low, high = min(min(n) for n in numbers), max(max(n) for n in numbers)
    if high <= low:
        js = 0.0
    else:
        hist = []
        for side in numbers:
            counted = [0] * 10
            for v in side:
                counted[min(int((v - low) / (high - low) * 10), 9)] += 1
            hist.append([n / len(side) for n in counted])
        js = _js_distance(hist[0], hist[1])
    return {"test": "kolmogorov-smirnov", "p_value": round(p_value, 6), "js_distance": round(js, 4)}


def judge_canary(
    canary: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    policy: CanaryPolicy,
    labels: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """
    Compare the canary's live requests with the baseline's: one measurement and its verdict.

    Each request is ``{"status": int, "latency_ms": float | None, "prediction": Any}``. The canary fails on:
    an error rate above the baseline's by more than ``max_error_rate`` (a Fisher exact test at ``alpha``
    when the baseline fails some too), a p95 latency above ``max_p95_ms``, a median latency significantly
    higher (Mann-Whitney U at ``alpha``), more than ``max_latency_ratio`` times the baseline's and more than
    ``latency_tolerance_ms`` above it, or
    predictions significantly different (chi-square / Kolmogorov-Smirnov at ``alpha``) with a Jensen-Shannon
    distance above ``max_js_distance``; with *labels* (``_request_id`` and ``policy.label_column``), a
    ``performance_metric`` on its labelled requests more than ``max_performance_drop`` below the baseline's,
    once each side has ``min_labels`` of them. Fewer than ``min_requests`` requests on a side is
    ``inconclusive`` (never a guess).

    :param canary: Requests as :func:`measure_live` gives them (a ``request_id`` each, for the labels).
    :return: ``{"verdict", "reasons", "canary", "baseline", "latency", "predictions", "performance"}``; the
        sides are counts; ``performance`` is None without labels.
    """
    from scipy import stats

    result: dict[str, Any] = {
        "canary": _side(canary),
        "baseline": _side(baseline),
        "latency": None,
        "predictions": None,
        "performance": None,
        "reasons": [],
    }
    c, b = result["canary"], result["baseline"]
    reasons: list[str] = result["reasons"]
    if c["requests"] < policy.min_requests or b["requests"] < policy.min_requests:
        result["verdict"] = INCONCLUSIVE
        reasons.append(
            f"too few live requests to judge: canary {c['requests']}, baseline {b['requests']} "
            f"({policy.min_requests} needed on each side)"
        )
        return result
    excess = c["error_rate"] - b["error_rate"]
    if excess > policy.max_error_rate:
        significant = True
        if b["errors"]:
            table = [[c["errors"], c["requests"] - c["errors"]], [b["errors"], b["requests"] - b["errors"]]]
            significant = float(stats.fisher_exact(table, alternative="greater").pvalue) < policy.alpha
        if significant:
            reasons.append(
                f"the canary failed {c['errors']} of {c['requests']} live requests ({c['error_rate']:.1%}), the "
                f"baseline {b['errors']} of {b['requests']} ({b['error_rate']:.1%}); at most "
                f"{policy.max_error_rate:.1%} more allowed"
            )
    if policy.max_p95_ms is not None and c["p95_ms"] is not None and c["p95_ms"] > policy.max_p95_ms:
        reasons.append(f"the canary's p95 latency {c['p95_ms']} ms > max_p95_ms {policy.max_p95_ms:g}")
    latencies = [
        [float(r["latency_ms"]) for r in side if _number(r.get("latency_ms"))] for side in (canary, baseline)
    ]
    if latencies[0] and latencies[1]:
        p_value = float(stats.mannwhitneyu(latencies[0], latencies[1], alternative="greater").pvalue)
        ratio = (c["p50_ms"] / b["p50_ms"]) if b["p50_ms"] else None
        result["latency"] = {"test": "mann-whitney-u", "p_value": round(p_value, 6),
                             "median_ratio": round(ratio, 3) if ratio is not None else None}  # fmt: skip
        if (
            policy.max_latency_ratio is not None
            and ratio is not None
            and p_value < policy.alpha
            and ratio > policy.max_latency_ratio
            and c["p50_ms"] - b["p50_ms"] > policy.latency_tolerance_ms
        ):
            reasons.append(
                f"the canary is slower: median {c['p50_ms']} ms vs {b['p50_ms']} ms ({ratio:.2f}x; Mann-Whitney "
                f"p={p_value:.2g}; at most {policy.max_latency_ratio:g}x allowed)"
            )
    compared = _predictions(
        [r.get("prediction") for r in canary if 200 <= int(r.get("status") or 0) < 300],
        [r.get("prediction") for r in baseline if 200 <= int(r.get("status") or 0) < 300],
    )
    result["predictions"] = compared
    if (
        compared is not None
        and policy.max_js_distance is not None
        and compared["p_value"] < policy.alpha
        and compared["js_distance"] > policy.max_js_distance
    ):
        reasons.append(
            f"the canary's predictions differ from the baseline's ({compared['test']} p={compared['p_value']:.2g}, "
            f"Jensen-Shannon distance {compared['js_distance']} > {policy.max_js_distance:g})"
        )
    if labels is not None:
        result["performance"] = performance = _performance(canary, baseline, labels, policy)
        if performance["drop"] is not None and performance["drop"] > policy.max_performance_drop:
            reasons.append(
                f"the canary's {policy.performance_metric} on {performance['canary_labelled']} labelled live "
                f"requests is {performance['canary']}, the baseline's {performance['baseline']} on "
                f"{performance['baseline_labelled']} (a drop of {performance['drop']:g}; at most "
                f"{policy.max_performance_drop:g} allowed)"
            )
    result["verdict"] = FAIL if reasons else PASS
    return result


def _performance(
    canary: list[dict[str, Any]], baseline: list[dict[str, Any]], labels: pd.DataFrame, policy: CanaryPolicy
) -> dict[str, Any]:
    """Each side's metric on its answered requests that have a label; ``drop`` is None below ``min_labels``."""
    import pandas as pd

    from airflow_mlops.serving import monitor
    from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID

    values = []
    for side in (canary, baseline):
        answered = [r for r in side if 200 <= int(r.get("status") or 0) < 300 and r.get("request_id")]
        frame = pd.DataFrame(
            {
                REQUEST_ID: [str(r["request_id"]) for r in answered],
                PREDICTION: [r.get("prediction") for r in answered],
            }
        )
        values.append(
            monitor.live_performance(
                frame, labels, policy.label_column, policy.performance_metric, None, 0.0, policy.min_labels
            )
        )
    c, b = values[0]["value"], values[1]["value"]
    drop = None
    if c is not None and b is not None:
        drop = round((b - c) if PERFORMANCE_METRICS[policy.performance_metric] else (c - b), 6)
    return {
        "metric": policy.performance_metric, "canary": c, "baseline": b, "drop": drop,
        "canary_labelled": values[0]["labelled"], "baseline_labelled": values[1]["labelled"],
    }  # fmt: skip


def measure_live(
    root: str,
    model_name: str,
    version: str,
    start: datetime,
    end: datetime,
    storage: Storage | None = None,
) -> list[dict[str, Any]]:
    """
    The live requests *version* answered in ``[start, end)``, from the captures under *root*.

    Production traffic and the requests the model server refused, each once (by request id) as
    ``{"request_id", "status", "latency_ms", "prediction"}``; smoke tests and probes are not live traffic.
    """
    from airflow_mlops.serving.capture import (
        LATENCY,
        PREDICTION,
        PRODUCTION,
        REJECTED,
        REQUEST_ID,
        STATUS,
        read_captures,
    )

    seen: set[str] = set()
    requests: list[dict[str, Any]] = []
    for traffic in (PRODUCTION, REJECTED):
        frame = read_captures(
            root, model_name, start, end, columns=[], storage=storage,
            meta=[REQUEST_ID, STATUS, LATENCY, PREDICTION], version=str(version), traffic=traffic,
        )  # fmt: skip
        if frame.empty:
            continue
        for row in frame.to_dict("records"):
            rid = str(row.get(REQUEST_ID))
            if rid in seen:
                continue
            seen.add(rid)
            latency = row.get(LATENCY)
            prediction: Any = row.get(PREDICTION) if traffic == PRODUCTION else None
            if hasattr(prediction, "item"):  # a NumPy scalar
                prediction = prediction.item()
            requests.append(
                {
                    "request_id": rid,
                    "status": int(row.get(STATUS) or 0),
                    "latency_ms": float(latency) if _number(latency) and math.isfinite(latency) else None,
                    "prediction": prediction,
                }
            )
    return requests
