"""
Drift metrics and their limits, checked without Airflow and without the statistics (a DAG imports this).

Numeric features are gated on ``psi``, ``ks`` and ``wasserstein``, categorical ones on ``linf`` and
``jensen_shannon``, and every feature on ``null_rate``, the change in its share of nulls (computed by
:mod:`airflow_mlops.data.drift`). A feature drifts when a metric exceeds its limit.
"""

from __future__ import annotations

import math

NUMERIC_METRICS = ("psi", "ks", "wasserstein")
CATEGORICAL_METRICS = ("linf", "jensen_shannon")
#: Metrics of every feature, numeric or categorical: the absolute change of its null rate (0 to 1).
COMMON_METRICS = ("null_rate",)
METRICS = NUMERIC_METRICS + CATEGORICAL_METRICS + COMMON_METRICS
#: Gated by default; ``wasserstein`` is in the feature's own units, so it is reported but not gated.
DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.2, "linf": 0.2, "jensen_shannon": 0.2, "null_rate": 0.1}


def check_thresholds(thresholds: object, origin: str = "thresholds") -> dict[str, float]:
    """Validate ``{metric: limit}``; raise :class:`ValueError` naming what is allowed."""
    if not isinstance(thresholds, dict):
        raise ValueError(f"{origin} must be a dict of metric to limit, like {DEFAULT_THRESHOLDS}")
    out = {}
    for metric, limit in thresholds.items():
        if metric not in METRICS:
            raise ValueError(f"{origin}: unknown drift metric {metric!r}; allowed: {', '.join(METRICS)}")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or not math.isfinite(limit)
            or limit < 0
        ):
            raise ValueError(f"{origin}: limit of {metric!r} must be a non-negative number, got {limit!r}")
        out[metric] = float(limit)
    return out
