"""Models and production traffic for the replay tests: threshold classifiers, captured requests by region."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

FEATURES = ["tenure_months", "monthly_spend"]
#: What the capture keeps of each request: the model's inputs and the region the request came from.
CAPTURED = {"tenure_months": "double", "monthly_spend": "double", "region": "string"}


def register_threshold_model(tracking_uri: str, model_name: str, months: float) -> str:
    """
    Register a classifier answering 1 when ``tenure_months`` is below *months*, else 0 (with a signature).

    :return: The new version.
    """
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(
        {"tenure_months": [float(m) for m in range(48)], "monthly_spend": [20.0 + m for m in range(48)]}
    )
    labels = (frame["tenure_months"] < months).astype(int)
    model = LogisticRegression().fit(frame[FEATURES], labels)
    # Exactly the threshold: 1 when months - 0.5 - tenure > 0, whatever the spend.
    model.coef_, model.intercept_ = np.array([[-1.0, 0.0]]), np.array([months - 0.5])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(f"replay-tests-{model_name}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=model_name, pip_requirements=["scikit-learn"],
            signature=infer_signature(frame[FEATURES], labels),
        )  # fmt: skip
    return str(info.registered_model_version)


def request_rows(index: int) -> list[dict]:
    """Production request *index*: one row; tenure 6-11 months comes from the east, the rest north or south."""
    tenure = float(index % 24)
    region = "east" if 6 <= tenure < 12 else ("north" if index % 2 else "south")
    return [{"tenure_months": tenure, "monthly_spend": 20.0 + index, "region": region}]


def wait_for_captures(root: str, model_name: str, rows: int, timeout: float = 60.0) -> None:
    """Wait until *rows* production rows of *model_name* are written under *root*."""
    from airflow_mlops.serving.capture import count_captures

    window = (datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC) + timedelta(hours=2))
    deadline = time.monotonic() + timeout
    while count_captures(root, model_name, *window) < rows:
        assert time.monotonic() < deadline, (
            f"fewer than {rows} rows captured for {model_name} in {timeout:g} s"
        )
        time.sleep(0.2)
