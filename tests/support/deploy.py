"""Helpers shared by the deployment tests: test models, a holdout snapshot, task contexts, process cleanup."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from airflow_mlops.serving.base import Deployment, DeployTarget, Health, PredictionError

SERVING_MODELS_FILE = Path(__file__).parents[1] / "data" / "serving_models.py"
FEATURES = ["tenure_months", "monthly_spend"]


def holdout_frame(rows: int = 8):
    import pandas as pd

    return pd.DataFrame(
        {
            "tenure_months": [float(i % 24) for i in range(rows)],
            "monthly_spend": [20.0 + 3.5 * i for i in range(rows)],
            "label": [i % 2 for i in range(rows)],
        }
    )


def write_holdout_snapshot(root: Path, name: str = "deploy-tests", rows: int = 8) -> str:
    """A snapshot with a ``holdout`` split in the shared layout; returns ``<snapshot-uri>#holdout``."""
    frame = holdout_frame(rows)
    snapshot = root / "datasets" / name / ("0" * 64)
    snapshot.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(snapshot / "data.parquet", index=False)
    frame.to_parquet(snapshot / "holdout.parquet", index=False)
    manifest = {
        "name": name,
        "snapshot_id": "0" * 64,
        "uri": str(snapshot),
        "rows": rows,
        "schema": {column: str(dtype) for column, dtype in frame.dtypes.items()},
        "split": {"seed": 0, "fractions": {"holdout": 1.0}, "rows": {"holdout": rows}},
        "files": {"data": "data.parquet", "holdout": "holdout.parquet"},
    }
    (snapshot / "_manifest.json").write_text(json.dumps(manifest))
    return f"{snapshot}#holdout"


def serving_models():
    """tests/data/serving_models.py, imported under the name the model server will import it by."""
    if "serving_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("serving_models", SERVING_MODELS_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["serving_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["serving_models"]


def register_version(tracking_uri: str, model_name: str, kind: str) -> str:
    """
    Log a tiny model to MLflow and register it as the next version of *model_name*; return the version.

    *kind*: ``zeros`` / ``ones`` (scikit-learn classifiers that always predict 0 / 1), ``raises`` (fails
    every prediction), ``one_prediction`` (one prediction whatever the number of rows), ``fails_sometimes``
    (fails a request with a row whose ``tenure_months`` is 19 modulo 20), ``by_tenure`` (1 for a tenure over 12).
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(f"deploy-tests-{model_name}")
    with mlflow.start_run():
        if kind in ("zeros", "ones"):
            from sklearn.dummy import DummyClassifier

            frame = holdout_frame()
            model = DummyClassifier(strategy="constant", constant=1 if kind == "ones" else 0)
            model.fit(frame[FEATURES], frame["label"])
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=model_name, pip_requirements=["scikit-learn"]
            )
        else:
            module = serving_models()
            python_model = {
                "raises": module.RaisesOnPredict,
                "one_prediction": module.OnePredictionPerRequest,
                "fails_sometimes": module.FailsOnSomeRows,
                "by_tenure": module.LongTenureIsOne,
            }[kind]()
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                code_paths=[str(SERVING_MODELS_FILE)],
                registered_model_name=model_name,
                pip_requirements=["mlflow"],
            )
    return str(info.registered_model_version)


def stop_local_processes() -> None:
    """Stop every process the local deploy target started from this test process (and its children)."""
    import os
    import signal

    from airflow_mlops.serving import local

    for pid, proc in list(local._CHILDREN.items()):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=15)
                break
            except Exception:
                continue
        proc.poll()
        local._CHILDREN.pop(pid, None)


def approve_version(client, model_name: str, version, approver: str = "reviewer") -> None:
    """What the gate and a person's approval leave on a version: a passed gate and an approval, signed."""
    from tests.support.signing import approve_version as signed_approval

    signed_approval(client, model_name, version, approver)


def http_predict(endpoint: str, records: list[dict[str, Any]]) -> tuple[list[Any], str | None]:
    """What a user of the endpoint sees: the predictions and the version header."""
    import requests

    response = requests.post(f"{endpoint}/invocations", json={"dataframe_records": records}, timeout=30)
    response.raise_for_status()
    return response.json()["predictions"], response.headers.get("X-MLOps-Model-Version")


class EchoTarget(DeployTarget):
    """
    A user's own target, defined outside the package (the documented extension point), serving in memory:
    a version answers ``[int(version)] * rows``, unless it is listed in ``broken``.

    Its short name ``echo`` is used once registered (``register_target_kind``); until then it cannot be rebuilt
    from a config.
    """

    kind = "echo"
    served: dict[str, Deployment] = {}
    broken: set[str] = set()

    def __init__(self, *, region: str = "eu-west-1") -> None:
        self.region = region

    def settings(self) -> dict[str, Any]:
        return {"region": self.region}

    def deploy(self, model_name: str, version: str, model_uri: str) -> Deployment:
        deployment = Deployment(
            model_name, str(version), model_uri, self.config_kind(), f"echo://{model_name}", ""
        )
        self.served[model_name] = deployment
        return deployment

    def current(self, model_name: str) -> Deployment | None:
        return self.served.get(model_name)

    def stop(self, model_name: str) -> None:
        self.served.pop(model_name, None)

    def health(self, deployment: Deployment, timeout: float = 10.0) -> Health:
        served = self.served.get(deployment.model_name)
        ok = served is not None and served.version == deployment.version
        return Health(ok, f"serving {served.version if served else 'nothing'}")

    def predict(self, deployment: Deployment, records, timeout: float = 30.0) -> list[Any]:
        if deployment.version in self.broken:
            raise PredictionError(f"version {deployment.version} raised: ValueError", status_code=500)
        return [int(deployment.version)] * len(records)
