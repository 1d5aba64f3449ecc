"""
Train/valid/holdout splits of a snapshot's rows, without Airflow.

A split is ``{name: fraction}`` with names from :data:`~airflow_mlops.data.snapshots.SPLIT_NAMES`. Rows are
assigned by a seeded permutation, so the same rows, fractions and seed always give the same splits, and each
split keeps the source row order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from airflow_mlops.data.snapshots import SPLIT_NAMES

if TYPE_CHECKING:
    import pandas as pd

_EXAMPLE = '{"train": 0.7, "valid": 0.15, "holdout": 0.15}'


def check_split(split: object) -> dict[str, float] | None:
    """
    Validate split fractions; return them in the fixed order train, valid, holdout (None for no split).

    :raises ValueError: naming the bad name or fraction and what is allowed.
    """
    if split is None:
        return None
    if not isinstance(split, dict) or not split:
        raise ValueError(f"split must be a dict of split name to fraction, like {_EXAMPLE}; got {split!r}")
    unknown = sorted(str(name) for name in split if name not in SPLIT_NAMES)
    if unknown:
        raise ValueError(f"Unknown split name(s) {unknown}: allowed names are {', '.join(SPLIT_NAMES)}")
    for name, fraction in split.items():
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not math.isfinite(fraction)
            or not 0 < fraction <= 1
        ):
            raise ValueError(f"split fraction of {name!r} must be a number in (0, 1], got {fraction!r}")
    total = sum(split.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} from {split!r}")
    return {name: float(split[name]) for name in SPLIT_NAMES if name in split}


def check_split_seed(seed: object) -> int:
    """Return *seed* if it is a non-negative integer, else raise :class:`ValueError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"split_seed must be a non-negative integer, got {seed!r}")
    return seed


def split_rows(df: pd.DataFrame, split: dict[str, float] | None, seed: int) -> dict[str, pd.DataFrame]:
    """
    Assign the rows of *df* to the splits of *split* (checked by :func:`check_split`) with a seeded permutation.

    :returns: ``{split name: rows}`` in the order of *split*; empty for no split.
    :raises ValueError: if a split would get no rows.
    """
    if not split:
        return {}
    import numpy as np

    rows = len(df)
    order = np.random.default_rng(seed).permutation(rows)
    names = list(split)
    parts: dict[str, pd.DataFrame] = {}
    start, cumulative = 0, 0.0
    for position, name in enumerate(names):
        cumulative += split[name]
        end = rows if position == len(names) - 1 else min(rows, round(cumulative * rows))
        if end <= start:
            raise ValueError(
                f"split {name!r} would get no rows ({rows} rows x {split[name]:g}); ingest more rows or "
                "change split"
            )
        parts[name] = df.iloc[np.sort(order[start:end])].reset_index(drop=True)
        start = end
    return parts
