"""
Builders for the monitoring tests: customers like the demo's training data, a snapshot of them, and a champion
trained on them with the tags the pipeline leaves.
"""

from __future__ import annotations

import json

from airflow_mlops import tags as T

FEATURES = ["tenure_months", "monthly_spend"]


def customers(rows: int, seed: int, spend_shift: float = 0.0):
    """Customers like the training data (or with their monthly spend shifted), labelled by the same rule."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure_months": rng.uniform(0, 60, rows).round(1),
            "monthly_spend": (rng.normal(60, 15, rows) + spend_shift).round(2),
        }
    )
    frame["label"] = (frame["monthly_spend"] > 60).astype(int)
    return frame


def write_snapshot(root, name: str, frame) -> str:
    """A snapshot in the shared layout with ``data`` and ``holdout`` files; returns its URI."""
    snapshot = root / "datasets" / name / ("a" * 64)
    snapshot.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(snapshot / "data.parquet", index=False)
    frame.tail(200).to_parquet(snapshot / "holdout.parquet", index=False)
    (snapshot / "_manifest.json").write_text(
        json.dumps({"name": name, "snapshot_id": "a" * 64, "rows": len(frame),
                    "files": {"data": "data.parquet", "holdout": "holdout.parquet"}})
    )  # fmt: skip
    return str(snapshot)


def make_champion(tracking_uri: str, root, model_name: str) -> str:
    """Train, register and promote a classifier with the tags the pipeline leaves (snapshot, evaluation)."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    frame = customers(1000, seed=0)
    snapshot = write_snapshot(root, model_name, frame)
    model = LogisticRegression().fit(frame[FEATURES], frame["label"])
    accuracy = float((model.predict(frame[FEATURES].tail(200)) == frame["label"].tail(200)).mean())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    # Not mlflow.set_experiment: it would leave this experiment active in the process for the next run started.
    experiment = client.get_experiment_by_name(f"{model_name}-training")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(f"{model_name}-training")
    )
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=model_name, pip_requirements=["scikit-learn"],
            input_example=frame[FEATURES].head(2),
        )  # fmt: skip
    version = str(info.registered_model_version)
    summary = {
        "passed": True,
        "holdout": f"{snapshot}#holdout",
        "metrics": {"accuracy_score": {"candidate": accuracy}},
    }
    for key, value in (
        (T.DATA_URI, snapshot),
        (T.EVALUATION_SUMMARY, json.dumps(summary)),
        (T.GATE_DECISION, "passed"),
        (T.APPROVAL_DECISION, "approved"),
        (T.APPROVAL_APPROVER, "reviewer"),
        (T.APPROVAL_TIME, "2026-12-01T10:00:00+00:00"),
    ):
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, T.CHAMPION, version)
    return version
