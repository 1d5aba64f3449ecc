"""
``mlops_continuous_training`` on a first run (no champion, so no drift reference): bad data that looks almost
right stops before training, at the task where it first shows, without retries.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from airflow_mlops.demo.data import make_demo_data
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration

DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "continuous_training.py"


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


@pytest.mark.parametrize(
    ("case", "failing_task", "shown"),
    [
        pytest.param(
            "boolean_label", "validate", "column 'label' must hold numbers (number), it holds booleans",
            id="true-false-label",
        ),
        pytest.param(
            "padded_header", "ingest", "has padded headers, with spaces around the name: ' label '",
            id="padded-label-header",
        ),
    ],
)  # fmt: skip
def test_almost_right_data_stops_before_training_on_a_first_run(
    dag, airflow_db, mlflow_server, tmp_path, case, failing_task, shown, capfd
):
    import mlflow
    import pandas as pd

    good = pd.read_csv(make_demo_data(tmp_path / "good.csv", rows=400))
    source = tmp_path / f"{case}.csv"
    if case == "boolean_label":
        good.assign(label=good["label"].map({0: "false", 1: "true"})).to_csv(source, index=False)
    else:
        good.rename(columns={"label": " label "}).to_csv(source, index=False)
    model_name = f"first_run_{case}"

    dag_run = dag.test(run_conf={"model_name": model_name, "data_path": str(source)})
    out, err = capfd.readouterr()  # the task's log, with the failure message

    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states[failing_task] == "failed", states
    failed = next(ti for ti in dag_run.get_task_instances() if ti.task_id == failing_task)
    assert failed.try_number == 1  # bad input is not retried
    assert states["train"] == "upstream_failed", states
    assert shown in out + err
    client = mlflow.MlflowClient(mlflow_server.uri)
    assert client.get_experiment_by_name(model_name) is None  # nothing trained
    assert client.search_registered_models(f"name = '{model_name}'") == []  # no version, no champion
