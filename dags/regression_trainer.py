"""
The trainer of ``mlops_regression``: a scikit-learn gradient-boosting regressor on the columns it is told.

A user's own trainer, outside the package: ``TrainModelOperator(entrypoint=[sys.executable, <this file>])``
starts it with the training contract in its environment. Hyper-parameters (``MLOPS_PARAMS``): ``target``
(default ``"target"``), ``features`` (default: every other column), ``n_estimators``, ``max_depth``,
``learning_rate``. The model is logged with the columns it was fitted on as its signature, so evaluation and
serving send it exactly those.
"""

from __future__ import annotations


def main() -> None:
    import mlflow
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    from airflow_mlops.data.snapshots import read_snapshot
    from airflow_mlops.trainer.contract import TrainingContext
    from airflow_mlops.trainer.models import log_model

    ctx = TrainingContext.from_env()
    params = ctx.params
    target = params.get("target", "target")
    train, valid = read_snapshot(ctx.train_data), read_snapshot(ctx.valid_data or ctx.train_data)
    features = params.get("features") or [c for c in train.columns if c != target]
    model = GradientBoostingRegressor(
        n_estimators=int(params.get("n_estimators", 100)),
        max_depth=int(params.get("max_depth", 2)),
        learning_rate=float(params.get("learning_rate", 0.1)),
        random_state=0,
    ).fit(train[features], train[target])
    predicted = model.predict(valid[features])
    metrics = {
        "valid_rmse": float(root_mean_squared_error(valid[target], predicted)),
        "valid_mae": float(mean_absolute_error(valid[target], predicted)),
    }
    with mlflow.start_run(run_id=ctx.run_id):
        mlflow.log_params({"features": ",".join(features), "n_estimators": model.n_estimators})
        mlflow.log_metrics(metrics)
        info = log_model(model, train[features])  # the signature: exactly these columns
    ctx.write_result({"run_id": ctx.run_id, "model_uri": info.model_uri, "metrics": metrics})


if __name__ == "__main__":
    main()
