"""
Demo trainer: a scikit-learn classifier that follows the training contract.

Run by a training runtime (``TrainModelOperator(entrypoint="airflow_mlops.trainer.examples.sklearn_classifier")``)
or by hand with the contract variables set: ``python -m airflow_mlops.trainer.examples.sklearn_classifier``.

Hyper-parameters (``MLOPS_PARAMS``):

- ``target``: label column (default ``"label"``); every other numeric column is a feature. A column that is
  not numeric is left out, logged as a warning and listed in the result's ``dropped_features`` (the training
  operator refuses a model that leaves a column out without saying so).
- ``C``, ``max_iter``: passed to :class:`sklearn.linear_model.LogisticRegression` (defaults 1.0 and 200).
- ``seed``: seed of the validation split taken from the training data when ``MLOPS_VALID_DATA`` is unset.

The fitted pipeline is checkpointed under ``MLOPS_CHECKPOINT_URI``; a retry of the same task reuses it
instead of fitting again.
"""

from __future__ import annotations

import logging
import pickle
import sys
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.snapshots import read_snapshot
from airflow_mlops.trainer.contract import DROPPED_FEATURES, TARGET, TrainingContext, dropped_features

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger("airflow_mlops.trainer")

CHECKPOINT = "sklearn_pipeline.pkl"


def split_features(frame: pd.DataFrame, target: str, source: str) -> tuple[pd.DataFrame, pd.Series]:
    """Return ``(X, y)``: every numeric column except *target* as features, *target* as the label."""
    if target not in frame.columns:
        raise ValueError(
            f"Label column {target!r} is not in {source} (columns: {list(frame.columns)}); "
            "set the 'target' hyper-parameter to the label column"
        )
    features = frame.drop(columns=[target]).select_dtypes(include="number")
    if features.shape[1] == 0:
        raise ValueError(f"{source} has no numeric feature column besides the label {target!r}")
    return features, frame[target]


def build_model(params: dict[str, Any]) -> Pipeline:
    """The scikit-learn pipeline *params* ask for: optional column selection, scaling, a classifier."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = []
    if params.get("features"):
        # Use only these columns; the model still accepts (and ignores) the others, so it can be
        # evaluated and served on the same tables as a model that uses them all.
        steps.append(("select", ColumnTransformer([("keep", "passthrough", list(params["features"]))])))
    return Pipeline(
        [
            *steps,
            ("scale", StandardScaler()),
            (
                "classifier",
                LogisticRegression(C=float(params.get("C", 1.0)), max_iter=int(params.get("max_iter", 200))),
            ),
        ]
    )


def evaluate(model: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Accuracy, F1 and ROC AUC on *X*, *y* (macro F1 and one-vs-rest AUC with more than two classes)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    predicted = model.predict(X)
    classes = list(model.classes_)
    binary = len(classes) == 2
    metrics = {"accuracy": float(accuracy_score(y, predicted))}
    metrics["f1"] = float(
        f1_score(y, predicted, pos_label=classes[1], average="binary")
        if binary
        else f1_score(y, predicted, average="macro")
    )
    if y.nunique() > 1:
        proba = model.predict_proba(X)
        metrics["roc_auc"] = float(
            roc_auc_score(y, proba[:, 1])
            if binary
            else roc_auc_score(y, proba, multi_class="ovr", labels=classes)
        )
    return metrics


def train(ctx: TrainingContext) -> dict[str, Any]:
    """Fit, evaluate and log the model to the run of *ctx*; return the contract's result."""
    import mlflow
    import mlflow.sklearn

    params = ctx.params
    target = params.get("target", "label")
    train_frame = read_snapshot(ctx.train_data)
    X_train, y_train = split_features(train_frame, target, ctx.train_data)
    dropped = dropped_features(train_frame, list(X_train.columns), target)
    if dropped:
        log.warning("Left out of the model (not numeric): %s", dropped)
    missing = sorted(set(params.get("features") or []) - set(X_train.columns))
    if missing:
        raise ValueError(
            f"Hyper-parameter 'features' names columns that are not numeric features of {ctx.train_data}: "
            f"{missing}; available: {list(X_train.columns)}"
        )
    if ctx.valid_data:
        X_valid, y_valid = split_features(read_snapshot(ctx.valid_data), target, ctx.valid_data)
        X_valid = X_valid.reindex(columns=X_train.columns)
    else:
        from sklearn.model_selection import train_test_split

        X_train, X_valid, y_train, y_valid = train_test_split(
            X_train, y_train, test_size=0.2, random_state=int(params.get("seed", 0))
        )
    log.info("Training on %d rows, %d features; validating on %d rows", *X_train.shape, len(X_valid))

    with mlflow.start_run(run_id=ctx.run_id):
        mlflow.log_params(
            {
                "target": target,
                "C": float(params.get("C", 1.0)),
                "max_iter": int(params.get("max_iter", 200)),
                "features": ",".join(map(str, params.get("features") or X_train.columns))[:6000],
            }
        )
        saved = ctx.load_checkpoint(CHECKPOINT)
        if saved is not None:
            # Written by an earlier try of this very task instance (same checkpoint URI): resume from it.
            log.info("Resuming from checkpoint %s", ctx.checkpoint_path(CHECKPOINT))
            model = pickle.loads(saved)  # noqa: S301 - our own checkpoint, written by this task
        else:
            model = build_model(params).fit(X_train, y_train)
            ctx.save_checkpoint(pickle.dumps(model), CHECKPOINT)

        metrics = evaluate(model, X_valid, y_valid)
        mlflow.log_metrics(metrics)
        log.info("Validation metrics: %s", metrics)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=X_valid.head(5),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        )
    result = {
        "run_id": ctx.run_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "metrics": metrics,
        TARGET: target,
        DROPPED_FEATURES: dropped,
    }
    ctx.write_result(result)
    log.info("Logged model %s", info.model_uri)
    return result


def main() -> int:
    """Train from the contract in the environment; the process's exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    train(TrainingContext.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
