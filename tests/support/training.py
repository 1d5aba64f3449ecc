"""
Builders for the training tests: a dataset snapshot as ingest writes it, the part of a task context the training
operator reads.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def write_snapshot(root: Path, name: str = "moons", rows: int = 200) -> str:
    """A dataset snapshot laid out as the ingest stage writes it; returns its URI."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "noise": rng.normal(size=rows),
            "city": rng.choice(["paris", "lima"], size=rows),  # not numeric: not a feature
            "label": (x1 + 0.5 * x2 > 0).astype(int),
        }
    )
    raw = frame.to_csv(index=False).encode()
    sha = hashlib.sha256(raw).hexdigest()
    snapshot = root / "datasets" / name / sha
    snapshot.mkdir(parents=True)
    n_train = int(rows * 0.7)
    parts = {"data": frame, "train": frame.iloc[:n_train], "valid": frame.iloc[n_train:]}
    for part, df in parts.items():
        df.to_parquet(snapshot / f"{part}.parquet", index=False)
    manifest = {
        "name": name,
        "snapshot_id": sha,
        "uri": str(snapshot),
        "source": "generated",
        "format": "csv",
        "rows": rows,
        "schema": {col: str(dtype) for col, dtype in frame.dtypes.items()},
        "bytes": len(raw),
        "sha256": sha,
        "split": {
            "seed": 7,
            "fractions": {"train": 0.7, "valid": 0.3},
            "rows": {"train": n_train, "valid": rows - n_train},
        },
        "files": {part: f"{part}.parquet" for part in parts},
        "created_at": datetime.now(UTC).isoformat(),
    }
    (snapshot / "_manifest.json").write_text(json.dumps(manifest))
    return str(snapshot)


def context(dag_id: str, try_number: int = 1, run_id: str = "manual__2025-01-01T00:00:00+00:00") -> dict:
    """The part of an Airflow context the operator reads."""
    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id="train", try_number=try_number, map_index=-1)
    return {"ti": ti, "run_id": run_id, "dag_run": SimpleNamespace(run_id=run_id)}


def runs_of(experiment_name: str) -> list:
    from airflow_mlops.hooks.mlflow import MLflowHook

    client = MLflowHook().client
    exp = client.get_experiment_by_name(experiment_name)
    return client.search_runs([exp.experiment_id]) if exp else []
