"""TrainModelOperator with the local runtime, against a real MLflow server."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_mlops import tags
from airflow_mlops.exceptions import DatasetError
from airflow_mlops.trainer import contract
from tests.support.dags import serialize_dag
from tests.support.training import context, runs_of, write_snapshot

SENTINEL = "MLOPS_TEST_WORKER_ONLY_SECRET"


@pytest.fixture
def snapshot(data_root) -> str:
    return write_snapshot(data_root)


@pytest.fixture
def experiment(request) -> str:
    return f"training-{request.node.name}"


def make_operator(**kwargs):
    from airflow_mlops.operators.training import TrainModelOperator

    return TrainModelOperator(task_id="train", **kwargs)


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


# A trainer that resumes from a checkpoint: the first try saves one and crashes, the next one finishes.
FLAKY_TRAINER = """
    import sys
    from airflow_mlops.trainer.contract import TrainingContext

    ctx = TrainingContext.from_env()
    attempt = int(ctx.load_checkpoint("attempts") or b"0") + 1
    ctx.save_checkpoint(str(attempt).encode(), "attempts")
    print(f"attempt {attempt}, checkpoints in {ctx.checkpoint_uri}")
    if attempt == 1:
        for i in range(30):
            print(f"progress line {i}")
        print("CUDA out of memory (simulated)", file=sys.stderr)
        sys.exit(3)
    ctx.write_result({
        "run_id": ctx.run_id,
        "model_uri": f"runs:/{ctx.run_id}/model",
        "metrics": {"attempt": attempt},
        "checkpoint_uri": ctx.checkpoint_uri,
    })
"""

# A trainer that records what it sees: its environment (to a file) and the MLflow run it was given.
ENV_DUMP_TRAINER = """
    import json, os
    ENV = dict(os.environ)  # before any library adds to it
    from pathlib import Path
    from mlflow import MlflowClient
    from airflow_mlops.trainer.contract import TrainingContext

    ctx = TrainingContext.from_env()
    run = MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"])
    Path(ctx.output_uri, "env.json").write_text(json.dumps(ENV))
    ctx.write_result({
        "run_id": ctx.run_id,
        "model_uri": f"runs:/{ctx.run_id}/model",
        "metrics": {},
        "run_status": run.info.status,
        "run_tags": {k: v for k, v in run.data.tags.items() if k.startswith("mlops.")},
    })
"""


# -- argument checks (no server) ----------------------------------------------------------------------------


def test_unknown_runtime_is_rejected_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"runtime must be one of 'local'; got 'kubernetes'"):
        make_operator(entrypoint="pkg.train", train_data="x", experiment_name="e", runtime="kubernetes")


@pytest.mark.parametrize(
    ("entrypoint", "command"),
    [
        ("airflow_mlops.trainer.examples.sklearn_classifier",
         [sys.executable, "-m", "airflow_mlops.trainer.examples.sklearn_classifier"]),
        ("-m pkg.train --epochs 3", [sys.executable, "-m", "pkg.train", "--epochs", "3"]),
        (["python", "train.py"], ["python", "train.py"]),
    ],
)  # fmt: skip
def test_entrypoint_forms(entrypoint, command):
    assert make_operator(entrypoint=entrypoint, train_data="x", experiment_name="e").command == command


@pytest.mark.parametrize("entrypoint", ["python train.py", "train.py", "", []])
def test_unsupported_entrypoint_is_rejected(entrypoint):
    with pytest.raises(ValueError, match="entrypoint .* is not supported"):
        make_operator(entrypoint=entrypoint, train_data="x", experiment_name="e")


def test_env_may_not_override_the_contract():
    with pytest.raises(ValueError, match="env may not set MLFLOW_RUN_ID"):
        make_operator(entrypoint="pkg.train", train_data="x", experiment_name="e", env={"MLFLOW_RUN_ID": "x"})


# -- with a real MLflow server ------------------------------------------------------------------------------


@pytest.mark.integration
def test_sklearn_trainer_logs_a_loadable_model_and_a_retry_does_not_train_again(
    mlflow_server, snapshot, data_root, experiment
):
    import mlflow
    from sklearn.metrics import accuracy_score

    from airflow_mlops.data.snapshots import ingest_result, load_manifest, read_snapshot
    from airflow_mlops.results import TrainingResult

    manifest = load_manifest(snapshot)
    op = make_operator(
        entrypoint="airflow_mlops.trainer.examples.sklearn_classifier",
        # The ingest's whole result: the operator takes its train and valid splits.
        train_data=ingest_result(manifest),
        valid_data=ingest_result(manifest),
        experiment_name=experiment,
        hyperparameters={"C": 0.5, "max_iter": 300},
        output_root=str(data_root / "runs"),
    )
    result = op.execute(context("sklearn_dag"))

    assert TrainingResult.__required_keys__ <= set(result) <= set(TrainingResult.__annotations__)
    assert set(result["metrics"]) == {"accuracy", "f1", "roc_auc"}
    assert result["metrics"]["accuracy"] > 0.8
    valid = read_snapshot(f"{snapshot}#valid")
    model = mlflow.pyfunc.load_model(result["model_uri"])
    predictions = model.predict(valid[["x1", "x2", "noise"]])
    assert accuracy_score(valid["label"], predictions) == pytest.approx(result["metrics"]["accuracy"])
    # The registry stage registers exactly this URI; the version points back at the training run.
    version = mlflow.register_model(result["model_uri"], f"{experiment}-model")
    assert version.run_id == result["run_id"]

    run = mlflow.MlflowClient(mlflow_server.uri).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.5"
    assert run.data.tags[tags.AIRFLOW_DAG_ID] == "sklearn_dag"
    assert run.data.tags[tags.DATA_URI] == f"{snapshot}#train"
    assert run.data.tags[tags.DATA_VALID_URI] == f"{snapshot}#valid"
    assert run.data.tags[tags.DATA_SHA256] == manifest["sha256"]  # the registration copies it
    assert json.loads(run.data.tags[tags.TRAINING_RESULT]) == result
    # The task page links to the training run in the MLflow UI.
    link = f"{mlflow_server.uri}/#/experiments/{run.info.experiment_id}/runs/{result['run_id']}"
    assert op.operator_extra_links[0].get_link(op, ti_key=None) == link

    # A retry after success (e.g. the worker died before recording the task as done): same result, no new run.
    again = make_operator(
        entrypoint=["false"],  # would fail if it were started
        train_data=f"{snapshot}#train",
        valid_data=f"{snapshot}#valid",
        experiment_name=experiment,
        output_root=str(data_root / "runs"),
    )
    assert again.execute(context("sklearn_dag", try_number=2)) == result
    assert again.mlflow_run_url == link
    assert [r.info.run_id for r in runs_of(experiment)] == [result["run_id"]]


@pytest.mark.integration
def test_trainer_sees_exactly_the_contract_and_an_existing_run(
    mlflow_server, snapshot, data_root, experiment, tmp_path, monkeypatch
):
    from airflow_mlops.hooks.mlflow import MLflowHook
    from airflow_mlops.utils.environment import BASE_ENV_VARS

    monkeypatch.setenv(SENTINEL, "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-own-secret")
    output_root = data_root / "runs"
    op = make_operator(
        entrypoint=script(tmp_path, "env_dump", ENV_DUMP_TRAINER),
        train_data=f"{snapshot}#train",
        experiment_name=experiment,
        hyperparameters="{'lr': 0.1}",  # as Jinja renders a dict from a template
        output_root=str(output_root),
        env={"OMP_NUM_THREADS": "1"},
        aws_conn_id=None,  # no AWS connection: the worker's own AWS identity stays with the worker
    )
    result = op.execute(context("env_dag"))

    instance = output_root / "env_dag" / "manual__2025-01-01T00:00:00+00:00" / "train"
    child_env = json.loads((instance / "output" / "env.json").read_text())
    assert SENTINEL not in child_env
    assert not any(name.startswith("AWS_") for name in child_env)
    expected_contract = {
        contract.TRACKING_URI: mlflow_server.uri,
        contract.EXPERIMENT_NAME: experiment,
        contract.RUN_ID: result["run_id"],
        contract.TRAIN_DATA: f"{snapshot}#train",
        contract.OUTPUT_URI: str(instance / "output"),
        contract.CHECKPOINT_URI: str(instance / "checkpoints"),
        contract.PARAMS: json.dumps({"lr": 0.1}),
    }
    assert {k: child_env[k] for k in expected_contract} == expected_contract
    assert contract.VALID_DATA not in child_env  # no validation data given
    base = {name for name in BASE_ENV_VARS if os.environ.get(name)}
    allowed = (
        set(contract.REQUIRED_VARS) | set(MLflowHook().child_env()) | base
        | {"OMP_NUM_THREADS", "PYTHONUNBUFFERED"}
    )  # fmt: skip
    # Python itself may add a few variables (e.g. LC_CTYPE coercion); nothing else may appear.
    assert set(child_env) - allowed <= {"LC_CTYPE"}
    # The run existed, tagged with the task instance, before the trainer started.
    assert result["run_status"] == "RUNNING"
    assert result["run_tags"][tags.AIRFLOW_TASK_ID] == "train"
    assert result["run_tags"][tags.AIRFLOW_TRY_NUMBER] == "1"


@pytest.mark.integration
def test_aws_connection_is_passed_as_standard_variables(mlflow_server, snapshot, experiment, tmp_path):
    from airflow_mlops.operators.training import TrainModelOperator

    os.environ["AIRFLOW_CONN_TRAINING_AWS"] = json.dumps(
        {"conn_type": "aws", "login": "AKIATEST", "password": "s3cr3t",
         "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-3"}}
    )  # fmt: skip
    try:
        op = TrainModelOperator(
            task_id="train", entrypoint="pkg.train", train_data=snapshot, experiment_name=experiment,
            aws_conn_id="training_aws",
        )  # fmt: skip
        env = op.build_env({contract.RUN_ID: "r1", contract.VALID_DATA: ""})
    finally:
        del os.environ["AIRFLOW_CONN_TRAINING_AWS"]

    assert env["AWS_ACCESS_KEY_ID"] == "AKIATEST"
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-3"
    assert env[contract.RUN_ID] == "r1"
    assert contract.VALID_DATA not in env


@pytest.mark.integration
def test_failed_try_marks_the_run_failed_and_the_retry_resumes_from_its_checkpoint(
    mlflow_server, snapshot, data_root, experiment, tmp_path
):
    import mlflow

    from airflow_mlops.exceptions import TrainingError

    command = script(tmp_path, "flaky", FLAKY_TRAINER)

    def run(try_number: int) -> dict:
        return make_operator(
            entrypoint=command, train_data=snapshot, experiment_name=experiment,
            output_root=str(data_root / "runs"),
        ).execute(context("flaky_dag", try_number=try_number))  # fmt: skip

    with pytest.raises(TrainingError) as excinfo:
        run(1)
    assert excinfo.value.retryable is True  # the next try resumes from the checkpoint
    message = str(excinfo.value)
    assert f"Training entrypoint {command!r}" in message
    assert "exited with code 3" in message
    assert "CUDA out of memory (simulated)" in message
    assert "progress line 29" in message
    assert "progress line 5\n" not in message  # only the last lines are quoted
    (failed_run,) = runs_of(experiment)
    assert failed_run.info.status == "FAILED"
    checkpoints = (
        data_root / "runs" / "flaky_dag" / "manual__2025-01-01T00:00:00+00:00" / "train" / "checkpoints"
    )
    assert (checkpoints / "attempts").read_bytes() == b"1"

    result = run(2)

    assert result["metrics"] == {"attempt": 2}  # resumed from the checkpoint of try 1
    assert result["checkpoint_uri"] == str(checkpoints)
    assert result["run_id"] == failed_run.info.run_id
    (run_after,) = runs_of(experiment)
    assert run_after.info.status == "FINISHED"
    assert run_after.data.tags[tags.AIRFLOW_TRY_NUMBER] == "2"

    assert run(3) == result  # a third try finds the stored result and starts nothing
    assert (
        mlflow.MlflowClient(mlflow_server.uri).get_run(result["run_id"]).data.tags[tags.AIRFLOW_TRY_NUMBER]
        == "2"
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("pass", "wrote no result to MLOPS_RESULT_PATH"),
        ("open(os.environ['MLOPS_RESULT_PATH'], 'w').write('{oops')", "is not valid JSON"),
        ("open(os.environ['MLOPS_RESULT_PATH'], 'w').write('{\"metrics\": {}}')", "has no 'model_uri'"),
    ],
)
def test_missing_or_invalid_result_fails_the_task(
    mlflow_server, snapshot, experiment, tmp_path, body, problem
):
    from airflow_mlops.exceptions import TrainingError, TrainingResultError

    op = make_operator(
        entrypoint=script(tmp_path, "no_result", f"import os\n{body}\n"),
        train_data=snapshot, experiment_name=experiment, output_root=str(tmp_path / "runs"),
    )  # fmt: skip

    with pytest.raises(TrainingError, match=problem) as err:
        op.execute(context("no_result_dag"))
    assert isinstance(err.value, TrainingResultError)
    assert err.value.retryable is False  # the same trainer would write the same result again
    assert err.value.model == experiment
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"


@pytest.mark.integration
def test_trainer_running_past_its_timeout_is_stopped(mlflow_server, snapshot, experiment, tmp_path):
    from airflow_mlops.exceptions import TrainingError, TrainingTimeoutError

    op = make_operator(
        entrypoint=script(tmp_path, "slow", "import time\nprint('warming up')\ntime.sleep(120)\n"),
        train_data=snapshot, experiment_name=experiment, output_root=str(tmp_path / "runs"), timeout=1,
    )  # fmt: skip

    with pytest.raises(TrainingError, match=r"stopped because it ran longer than its timeout of 1 s") as err:
        op.execute(context("slow_dag"))
    assert isinstance(err.value, TrainingTimeoutError)
    assert err.value.retryable is True
    assert "warming up" in str(err.value)
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"


@pytest.mark.integration
def test_missing_snapshot_fails_before_any_run_is_created(mlflow_server, data_root, experiment):
    from airflow_mlops.exceptions import DatasetError

    op = make_operator(
        entrypoint="pkg.train", train_data=str(data_root / "datasets" / "none" / "abc") + "#train",
        experiment_name=experiment,
    )  # fmt: skip

    with pytest.raises(DatasetError, match="_manifest.json is missing; run the ingest task first"):
        op.execute(context("missing_dag"))
    assert runs_of(experiment) == []


@pytest.mark.integration
def test_in_a_dag_run_a_retry_resumes_the_run_of_the_failed_try(
    airflow_db, mlflow_server, snapshot, experiment, tmp_path
):
    from datetime import datetime as dt
    from datetime import timedelta

    from airflow.sdk import DAG

    with DAG("training_in_dag", schedule=None, start_date=dt(2025, 1, 1), catchup=False) as dag:
        make_operator(
            entrypoint=script(tmp_path, "flaky", FLAKY_TRAINER), train_data=snapshot, experiment_name=experiment,
            output_root=str(tmp_path / "runs"), retries=1, retry_delay=timedelta(0),
        )  # fmt: skip
    serialize_dag(dag)
    dag_run = dag.test()

    assert dag_run.state == "success"
    (run,) = runs_of(experiment)
    assert run.data.tags[tags.AIRFLOW_DAG_ID] == "training_in_dag"
    assert run.data.tags[tags.AIRFLOW_RUN_ID] == dag_run.run_id
    assert run.data.tags[tags.AIRFLOW_TRY_NUMBER] == "2"
    assert json.loads(run.data.tags[tags.TRAINING_RESULT])["metrics"] == {"attempt": 2}


# A trainer that reads its data and keeps its checkpoints on S3, with the credentials the runtime gives it.
S3_TRAINER = """
    from airflow_mlops.trainer.contract import TrainingContext
    from airflow_mlops.data.snapshots import read_snapshot

    ctx = TrainingContext.from_env()
    rows = len(read_snapshot(ctx.train_data))
    ctx.save_checkpoint(str(rows).encode(), "rows")
    ctx.write_result({
        "run_id": ctx.run_id,
        "model_uri": f"runs:/{ctx.run_id}/model",
        "metrics": {"rows": rows},
        "checkpoint_uri": ctx.checkpoint_uri,
    })
"""


@pytest.mark.integration
def test_data_and_checkpoints_on_s3_through_an_aws_connection(
    mlflow_server, s3_server, data_root, experiment, tmp_path
):
    local = Path(write_snapshot(data_root))
    client = s3_server.client()
    client.create_bucket(Bucket="training")
    prefix = f"datasets/moons/{local.name}"
    for file in local.iterdir():
        client.upload_file(str(file), "training", f"{prefix}/{file.name}")
    snapshot = f"s3://training/{prefix}"

    missing = make_operator(
        entrypoint="pkg.train", train_data=f"{snapshot}#nope", experiment_name=experiment,
        aws_conn_id="aws_default",
    )  # fmt: skip
    with pytest.raises(DatasetError, match="has no split 'nope'"):
        missing.execute(context("s3_dag"))

    result = make_operator(
        entrypoint=script(tmp_path, "s3_trainer", S3_TRAINER), train_data=f"{snapshot}#train",
        experiment_name=experiment, output_root="s3://training/runs", aws_conn_id="aws_default",
    ).execute(context("s3_dag"))  # fmt: skip

    assert result["metrics"] == {"rows": 140}
    assert (
        result["checkpoint_uri"]
        == "s3://training/runs/s3_dag/manual__2025-01-01T00:00:00+00:00/train/checkpoints"
    )
    body = client.get_object(
        Bucket="training", Key="runs/s3_dag/manual__2025-01-01T00:00:00+00:00/train/checkpoints/rows"
    )
    assert body["Body"].read() == b"140"


def process_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # exited, waiting to be reaped


@pytest.mark.integration
def test_killing_the_task_stops_the_trainer_and_its_children(mlflow_server, snapshot, experiment, tmp_path):
    import threading
    import time

    from airflow_mlops.exceptions import TrainingError

    pid_file = tmp_path / "grandchild.pid"
    op = make_operator(
        entrypoint=script(
            tmp_path,
            "spawner",
            """
            import os, subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            open(os.environ["PID_FILE"], "w").write(str(child.pid))
            time.sleep(300)
            """,
        ),
        train_data=snapshot, experiment_name=experiment, output_root=str(tmp_path / "runs"),
        env={"PID_FILE": str(pid_file)},
    )  # fmt: skip
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(context("kill_dag"))
        except BaseException as err:
            errors.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    grandchild = int(pid_file.read_text())

    op.on_kill()
    worker.join(timeout=60)

    assert len(errors) == 1
    assert isinstance(errors[0], TrainingError)
    assert "stopped because the task was killed" in str(errors[0])
    deadline = time.monotonic() + 30
    while not process_gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process_gone(grandchild)
    (run_,) = runs_of(experiment)
    assert run_.info.status == "FAILED"


@pytest.mark.integration
def test_a_deleted_experiment_fails_at_once_as_a_configuration_error(mlflow_server, snapshot, experiment):
    from mlflow import MlflowClient

    from airflow_mlops.exceptions import ConfigurationError

    client = MlflowClient(mlflow_server.uri)
    client.delete_experiment(client.create_experiment(experiment))
    op = make_operator(entrypoint="pkg.train", train_data=snapshot, experiment_name=experiment)

    with pytest.raises(
        ConfigurationError, match=rf"MLflow experiment '{experiment}' is deleted: restore it"
    ) as err:
        op.execute(context("deleted_experiment_dag"))
    assert err.value.retryable is False


@pytest.mark.integration
def test_hyperparameters_that_render_to_no_dict_fail_at_once(mlflow_server, snapshot, experiment):
    from airflow_mlops.exceptions import ConfigurationError

    op = make_operator(
        entrypoint="pkg.train", train_data=snapshot, experiment_name=experiment, hyperparameters="[1, 2]"
    )

    with pytest.raises(
        ConfigurationError, match="hyperparameters of task 'train' must be a dict, got list"
    ) as err:
        op.execute(context("bad_params_dag"))
    assert err.value.retryable is False
    assert isinstance(err.value, ValueError)
