"""
The kill-point DAGs' trainer: the demo classifier of ``airflow_mlops.trainer.examples.sklearn_classifier`` (same
pipeline, features, metrics and training contract), logged in MLflow's cloudpickle format instead of skops.

Why: ``import skops.io`` looks up every scipy ufunc in every loaded module, which in an Airflow task process
(3,000+ modules, Airflow's deprecation shims among them) takes 10-25 seconds on a 2-core machine. The kill-point
tests load the model in every evaluate and deploy try and check nothing of its file format; the skops format
itself is tested in tests/integration/operators/test_training.py and the live example-DAG tests.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from airflow_mlops.data.snapshots import read_snapshot
from airflow_mlops.trainer.contract import DROPPED_FEATURES, TARGET, TrainingContext, dropped_features
from airflow_mlops.trainer.examples.sklearn_classifier import build_model, evaluate, split_features

log = logging.getLogger("airflow_mlops.trainer")


def train(ctx: TrainingContext) -> dict[str, Any]:
    """Fit, evaluate and log the classifier to the run of *ctx*; return the contract's result."""
    import mlflow
    import mlflow.sklearn

    from airflow_mlops.trainer.models import log_model

    params = ctx.params
    target = params.get("target", "label")
    train_frame = read_snapshot(ctx.train_data)
    X_train, y_train = split_features(train_frame, target, ctx.train_data)
    X_valid, y_valid = split_features(read_snapshot(ctx.valid_data), target, ctx.valid_data)
    X_valid = X_valid.reindex(columns=X_train.columns)
    with mlflow.start_run(run_id=ctx.run_id):
        mlflow.log_params({"target": target, "C": float(params.get("C", 1.0))})
        model = build_model(params).fit(X_train, y_train)
        metrics = evaluate(model, X_valid, y_valid)
        mlflow.log_metrics(metrics)
        info = log_model(model, X_train, serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    result = {
        "run_id": ctx.run_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "metrics": metrics,
        TARGET: target,
        DROPPED_FEATURES: dropped_features(train_frame, list(X_train.columns), target),
    }
    ctx.write_result(result)
    log.info("Logged model %s: %s", info.model_uri, metrics)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    train(TrainingContext.from_env())
