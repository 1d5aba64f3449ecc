"""
The kill-point DAGs' trainer through TrainModelOperator (local runtime) against a real MLflow server: it logs
the demo classifier, and the model loads and predicts in a process that never imports skops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.training import context, write_snapshot

pytestmark = pytest.mark.integration

LOAD_AND_PREDICT = """
import json, sys
import mlflow
from airflow_mlops.data.snapshots import read_snapshot
model = mlflow.pyfunc.load_model(sys.argv[1])
valid = read_snapshot(sys.argv[2])
predictions = model.predict(valid[["x1", "x2", "noise"]])
print(json.dumps({"accuracy": float((predictions == valid["label"]).mean()), "skops": "skops.io" in sys.modules}))
"""


def test_the_kill_point_trainer_logs_a_classifier_that_loads_without_skops(mlflow_server, data_root, request):
    from airflow_mlops.operators.training import TrainModelOperator

    snapshot = write_snapshot(data_root)
    op = TrainModelOperator(
        task_id="train",
        entrypoint="tests.kill.trainer",
        train_data=f"{snapshot}#train",
        valid_data=f"{snapshot}#valid",
        experiment_name=f"kill-trainer-{request.node.name}",
        hyperparameters={"C": 1.0, "target": "label"},
        output_root=str(data_root / "runs"),
    )
    result = op.execute(context("mlops_kill_training"))

    assert set(result["metrics"]) == {"accuracy", "f1", "roc_auc"}
    assert result["metrics"]["accuracy"] > 0.8
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, result["model_uri"], f"{snapshot}#valid"],
        capture_output=True, text=True, check=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri},
    )  # fmt: skip
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert answer["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert answer["skops"] is False
