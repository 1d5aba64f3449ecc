"""What a runtime receives: the spec survives a deferral without its credentials; entrypoints are parsed."""

from __future__ import annotations

import json
import sys

import pytest

from airflow_mlops.training.entrypoint import entrypoint_command, parse_entrypoint
from airflow_mlops.training.spec import TrainingSpec


def make_spec(**overrides) -> TrainingSpec:
    values = dict(
        entrypoint=("python", "train.py"), dag_id="d", dag_run_id="r", task_id="t", map_index=-1, try_number=2,
        mlflow_run_id="abc", experiment_id="1", experiment_name="churn", instance_uri="/runs/d/r/t",
        contract_env={"MLFLOW_RUN_ID": "abc"}, env={"EPOCHS": "3"}, connection_env={"AWS_REGION": "eu-west-3"},
        secret_names=("AWS_ACCESS_KEY_ID",), timeout=60.0,
        process_env={"AWS_ACCESS_KEY_ID": "AKIA-SECRET", "MLFLOW_RUN_ID": "abc"},
    )  # fmt: skip
    return TrainingSpec(**{**values, **overrides})


def test_a_spec_round_trips_through_json_and_never_carries_the_credentials():
    spec = make_spec()

    data = json.loads(json.dumps(spec.to_dict()))
    back = TrainingSpec.from_dict(data)

    assert "AKIA-SECRET" not in json.dumps(data)
    assert "AKIA-SECRET" not in repr(spec)
    assert back == spec
    assert back.process_env == {}
    assert back.next_attempt().attempt == 2
    assert back.description == "training entrypoint ['python', 'train.py'] of task 't'"


@pytest.mark.parametrize(
    ("entrypoint", "parsed", "command"),
    [
        ("pkg.train", ("pkg.train", []), [sys.executable, "-m", "pkg.train"]),
        ("-m pkg.train --epochs 3", ("pkg.train", ["--epochs", "3"]), [sys.executable, "-m", "pkg.train", "--epochs", "3"]),
        (["python", "train.py"], (None, ["python", "train.py"]), ["python", "train.py"]),
    ],
)  # fmt: skip
def test_entrypoints(entrypoint, parsed, command):
    assert parse_entrypoint(entrypoint) == parsed
    assert entrypoint_command(entrypoint) == command


@pytest.mark.parametrize("entrypoint", ["python train.py", "train.py", "", []])
def test_unsupported_entrypoints_name_the_accepted_forms(entrypoint):
    with pytest.raises(ValueError, match=r"is not supported: give a Python module \('pkg.module'\)"):
        parse_entrypoint(entrypoint)
