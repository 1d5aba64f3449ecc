"""
The PyTorch demo trainer for real, on CPU: one process, two processes with DDP (gloo), and a run stopped by
a signal that resumes from its checkpoint and ends where an uninterrupted run ends.

Needs torch (CPU build): ``python -m pip install torch`` into the test environment; skipped without it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_mlops.trainer import contract
from tests.support.training import context, write_snapshot

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.integration

MODULE = "airflow_mlops.trainer.examples.torch_mlp"
TRAIN_ROWS = 140  # write_snapshot's train split
PARAMS = {"epochs": 6, "batch_size": 32, "checkpoint_every": 5, "hidden": [16], "seed": 3}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> str:
    return write_snapshot(tmp_path_factory.mktemp("torch-data"))


def contract_env(
    mlflow_server, snapshot: str, workdir: Path, params: dict, run_id: str | None = None
) -> dict:
    """The environment a training runtime gives the trainer, with a fresh (or the given) MLflow run."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    experiment = "torch-trainer-tests"
    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run_id = run_id or client.create_run(experiment_id).info.run_id
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(workdir)),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        contract.TRACKING_URI: mlflow_server.uri,
        contract.EXPERIMENT_NAME: experiment,
        contract.RUN_ID: run_id,
        contract.TRAIN_DATA: f"{snapshot}#train",
        contract.VALID_DATA: f"{snapshot}#valid",
        contract.OUTPUT_URI: str(workdir / "output"),
        contract.CHECKPOINT_URI: str(workdir / "checkpoints"),
        contract.PARAMS: json.dumps(params),
        contract.RESULT_PATH: str(workdir / "result.json"),
    }


def run_trainer(env: dict, command: list[str] | None = None, timeout: float = 240) -> tuple[dict, str]:
    out = subprocess.run(
        command or [sys.executable, "-m", MODULE], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(Path(env[contract.RESULT_PATH]).read_text()), out.stdout + out.stderr


def checkpoint_step(env: dict) -> int:
    state = torch.load(Path(env[contract.CHECKPOINT_URI]) / "torch_mlp.pt", weights_only=True)
    return int(state["step"])


@pytest.fixture(scope="module")
def uninterrupted(mlflow_server, snapshot, tmp_path_factory) -> dict:
    env = contract_env(mlflow_server, snapshot, tmp_path_factory.mktemp("reference"), PARAMS)
    return run_trainer(env)[0]


def test_one_process_through_the_operator_logs_a_model_that_predicts_labels(
    mlflow_server, snapshot, tmp_path
):
    import mlflow

    from airflow_mlops.data.snapshots import read_snapshot
    from airflow_mlops.operators.training import TrainModelOperator

    result = TrainModelOperator(
        task_id="train", entrypoint=MODULE, train_data=f"{snapshot}#train", valid_data=f"{snapshot}#valid",
        experiment_name="torch-through-operator", hyperparameters=PARAMS, output_root=str(tmp_path / "runs"),
        env={"OMP_NUM_THREADS": "1"},
    ).execute(context("torch_dag"))  # fmt: skip

    assert result["steps"] == PARAMS["epochs"] * math.ceil(TRAIN_ROWS / PARAMS["batch_size"])
    assert result["world_size"] == 1
    assert result["metrics"]["accuracy"] > 0.8
    assert set(result["metrics"]) == {"accuracy", "f1", "roc_auc"}
    valid = read_snapshot(f"{snapshot}#valid")
    predictions = mlflow.pyfunc.load_model(result["model_uri"]).predict(valid)
    assert set(predictions) <= {0, 1}
    assert (predictions == valid["label"].to_numpy()).mean() == pytest.approx(result["metrics"]["accuracy"])
    run = mlflow.MlflowClient(mlflow_server.uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "1"
    assert "train_loss" in run.data.metrics


def test_two_processes_train_one_model_with_ddp(mlflow_server, snapshot, tmp_path):
    env = contract_env(mlflow_server, snapshot, tmp_path, PARAMS)
    torchrun = str(Path(sys.executable).with_name("torchrun"))

    result, output = run_trainer(env, [torchrun, "--standalone", "--nproc-per-node", "2", "--module", MODULE])

    assert result["world_size"] == 2
    # each process sees half of the data, so an epoch has half the steps
    assert result["steps"] == PARAMS["epochs"] * math.ceil(math.ceil(TRAIN_ROWS / 2) / PARAMS["batch_size"])
    assert result["metrics"]["accuracy"] > 0.8
    assert "rank 0/2 on cpu" in output
    assert "rank 1/2 on cpu" in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["preemption-notice", "killed"])
def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(
    mlflow_server, snapshot, tmp_path, uninterrupted, signum
):
    slow = contract_env(mlflow_server, snapshot, tmp_path, {**PARAMS, "step_delay": 0.1})
    process = subprocess.Popen(
        [sys.executable, "-m", MODULE], env=slow, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    checkpoint = Path(slow[contract.CHECKPOINT_URI]) / "torch_mlp.pt"
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0].decode()

    total = uninterrupted["steps"]
    stopped_at = checkpoint_step(slow)
    assert 0 < stopped_at < total
    if signum == signal.SIGTERM:  # a final checkpoint at the step it stopped, then exit code 143
        assert process.returncode == 143, output[-2000:]
        assert "stopping after this step" in output
    else:  # no notice: the last periodic checkpoint
        assert process.returncode == -signal.SIGKILL
        assert stopped_at % PARAMS["checkpoint_every"] == 0
    assert not Path(slow[contract.RESULT_PATH]).exists()

    resumed = {**slow, contract.PARAMS: json.dumps(PARAMS)}  # the retry: same run, same checkpoint URI
    result, output = run_trainer(resumed)

    assert result["resumed_from_step"] == stopped_at
    assert result["steps"] == total
    assert f"Resuming from checkpoint {checkpoint} at step {stopped_at} of {total}" in output
    for name, value in uninterrupted["metrics"].items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-6)
