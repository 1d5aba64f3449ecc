"""Demo data for the example DAGs: a small, learnable binary classification table (no downloads)."""

from __future__ import annotations

from pathlib import Path

FEATURES = ("tenure_months", "monthly_spend", "support_calls", "usage_hours", "discount_rate")


def make_demo_data(path: str | Path, rows: int = 3000, seed: int = 7) -> Path:
    """
    Write a churn-like CSV with numeric features and a binary ``label`` column.

    :param path: Where to write the CSV (parent folders are created).
    :param rows: Number of rows.
    :param seed: Random seed; the same seed gives the same bytes.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure_months": rng.integers(1, 72, rows),
            "monthly_spend": rng.normal(60, 20, rows).round(2),
            "support_calls": rng.poisson(2, rows),
            "usage_hours": rng.gamma(4, 10, rows).round(1),
            "discount_rate": rng.uniform(0, 0.3, rows).round(3),
        }
    )
    logit = (
        -0.06 * frame["tenure_months"]
        + 0.03 * frame["monthly_spend"]
        + 0.6 * frame["support_calls"]
        - 0.04 * frame["usage_hours"]
        + 4.0 * frame["discount_rate"]
        - 0.2
    )
    noise = rng.logistic(0, 1, rows)
    frame["label"] = (logit + noise > 0).astype(int)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
