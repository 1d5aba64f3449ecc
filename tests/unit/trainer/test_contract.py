"""The training contract as a trainer sees it: reading the environment, results and checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_mlops.trainer import contract
from airflow_mlops.trainer.contract import ContractError, TrainingContext


@pytest.fixture
def environ(tmp_path) -> dict[str, str]:
    return {
        contract.TRACKING_URI: "http://127.0.0.1:5000",
        contract.EXPERIMENT_NAME: "churn",
        contract.RUN_ID: "0123456789abcdef",
        contract.TRAIN_DATA: "s3://bucket/datasets/churn/abc#train",
        contract.VALID_DATA: "s3://bucket/datasets/churn/abc#valid",
        contract.OUTPUT_URI: str(tmp_path / "output"),
        contract.CHECKPOINT_URI: str(tmp_path / "checkpoints"),
        contract.PARAMS: json.dumps({"C": 0.5, "target": "churned"}),
        contract.RESULT_PATH: str(tmp_path / "xcom" / "return.json"),
    }


def test_from_env_reads_every_contract_variable(environ):
    ctx = TrainingContext.from_env(environ)

    assert ctx.run_id == "0123456789abcdef"
    assert ctx.experiment_name == "churn"
    assert ctx.train_data.endswith("#train")
    assert ctx.valid_data.endswith("#valid")
    assert ctx.params == {"C": 0.5, "target": "churned"}


def test_from_env_reads_os_environ_by_default(environ, monkeypatch):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    assert TrainingContext.from_env().run_id == "0123456789abcdef"


def test_valid_data_is_optional(environ):
    del environ[contract.VALID_DATA]

    assert TrainingContext.from_env(environ).valid_data is None


def test_missing_variables_are_all_named(environ):
    del environ[contract.RUN_ID]
    environ[contract.RESULT_PATH] = ""

    with pytest.raises(ContractError, match="MLFLOW_RUN_ID, MLOPS_RESULT_PATH are not set"):
        TrainingContext.from_env(environ)


@pytest.mark.parametrize(
    ("raw", "problem"), [("{C: 1}", "is not valid JSON"), ("[1, 2]", "must be a JSON object")]
)
def test_bad_params_name_the_variable(environ, raw, problem):
    environ[contract.PARAMS] = raw

    with pytest.raises(ContractError, match=f"MLOPS_PARAMS {problem}"):
        TrainingContext.from_env(environ)


def test_write_result_writes_json_and_leaves_no_temporary_file(environ, tmp_path):
    ctx = TrainingContext.from_env(environ)

    ctx.write_result({"run_id": ctx.run_id, "model_uri": "models:/m-1", "metrics": {"accuracy": 0.9}})
    ctx.write_result({"run_id": ctx.run_id, "model_uri": "models:/m-2", "metrics": {"accuracy": 0.95}})

    written = json.loads((tmp_path / "xcom" / "return.json").read_text())
    assert written == {"run_id": ctx.run_id, "model_uri": "models:/m-2", "metrics": {"accuracy": 0.95}}
    assert [p.name for p in (tmp_path / "xcom").iterdir()] == ["return.json"]


def test_checkpoint_is_none_before_the_first_save_and_round_trips(environ):
    ctx = TrainingContext.from_env(environ)
    assert ctx.load_checkpoint() is None
    assert not ctx.has_checkpoint()

    uri = ctx.save_checkpoint(b"epoch=3")

    assert uri == f"{environ[contract.CHECKPOINT_URI]}/checkpoint"
    assert ctx.load_checkpoint() == b"epoch=3"
    # A later process of the same task instance (a retry) sees what the first one saved.
    assert TrainingContext.from_env(environ).load_checkpoint() == b"epoch=3"


def test_checkpoint_from_a_file_and_a_directory(environ, tmp_path):
    ctx = TrainingContext.from_env(environ)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01")
    state = tmp_path / "state"
    (state / "optim").mkdir(parents=True)
    (state / "model.pt").write_bytes(b"model")
    (state / "optim" / "adam.pt").write_bytes(b"adam")

    ctx.save_checkpoint(weights, "weights.bin")
    ctx.save_checkpoint(state, "state")

    assert ctx.load_checkpoint("weights.bin") == b"\x00\x01"
    restored = ctx.download_checkpoint("state", tmp_path / "restored")
    assert (restored / "model.pt").read_bytes() == b"model"
    assert (restored / "optim" / "adam.pt").read_bytes() == b"adam"
    assert ctx.download_checkpoint("weights.bin", tmp_path / "w.bin").read_bytes() == b"\x00\x01"
    assert ctx.download_checkpoint("nothing-here", tmp_path / "nothing") is None


def test_checkpoint_names_stay_inside_the_checkpoint_uri(environ):
    ctx = TrainingContext.from_env(environ)

    with pytest.raises(ValueError, match="relative path inside the checkpoint URI"):
        ctx.save_checkpoint(b"x", "../escape")


def test_saving_a_missing_path_is_an_error(environ, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrainingContext.from_env(environ).save_checkpoint(tmp_path / "missing.bin", "missing.bin")


def test_runtime_imports_neither_airflow_nor_heavy_libraries():
    code = (
        "import sys\n"
        "import airflow_mlops.trainer.contract, airflow_mlops.trainer.examples.sklearn_classifier\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'airflow', 'mlflow', 'pandas', 'sklearn', 'boto3'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "[]"
