"""Reference and current data of the drift tests, where several features drifted in known ways."""

from __future__ import annotations

import numpy as np
import pandas as pd


def frames(seed: int = 0, rows: int = 100_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current table: one shifted number, one widened integer, a new category, more nulls."""
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame(
        {
            "tenure": rng.normal(24, 6, rows),
            "calls": rng.integers(0, 10, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows, p=[0.5, 0.3, 0.2]),
            "spend": rng.gamma(2.0, 30.0, rows),
            "active": rng.random(rows) < 0.7,
        }
    )
    current = pd.DataFrame(
        {
            "tenure": rng.normal(30, 6, rows // 2),
            "calls": rng.integers(0, 14, rows // 2),
            "plan": rng.choice(["basic", "plus", "pro", "max"], rows // 2, p=[0.3, 0.3, 0.2, 0.2]),
            "spend": rng.gamma(2.0, 30.0, rows // 2),
            "active": rng.random(rows // 2) < 0.7,
        }
    )
    current.loc[::4, "spend"] = None
    return reference, current
