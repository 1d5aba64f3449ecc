"""``mlops_continuous_training`` under ``dag.test()``: bad data stops the run before any training."""

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


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.mark.parametrize(
    ("case", "failing_task"),
    [
        pytest.param("wrong_schema", "validate", id="label-out-of-range-and-nulls"),
        pytest.param("missing_label", "ingest", id="missing-label-column"),
        pytest.param("empty_file", "ingest", id="empty-file"),
        pytest.param("all_null_label", "validate", id="all-null-label"),
        pytest.param("extra_column", "validate", id="unexpected-extra-column"),
        pytest.param("junk_columns", "validate", id="hundreds-of-junk-columns"),
        pytest.param("gzip_named_csv", "ingest", id="gzip-named-csv"),
        pytest.param("outside_allowed_sources", "ingest", id="source-outside-allowed-sources"),
    ],
)
def test_bad_data_never_reaches_training(
    dag, airflow_db, mlflow_server, tmp_path, monkeypatch, case, failing_task
):
    import mlflow
    import pandas as pd

    good = pd.read_csv(make_demo_data(tmp_path / "good.csv", rows=400))
    source = tmp_path / f"{case}.csv"
    if case == "wrong_schema":
        good.loc[:20, "label"] = 7
        good.loc[:5, "monthly_spend"] = None
        good.to_csv(source, index=False)
    elif case == "missing_label":
        good.drop(columns=["label"]).to_csv(source, index=False)
    elif case == "all_null_label":
        good.assign(label=None).to_csv(source, index=False)
    elif case == "extra_column":
        good.assign(notes="free text").to_csv(source, index=False)
    elif case == "junk_columns":
        junk = pd.DataFrame({f"junk_{i}": 0 for i in range(300)}, index=good.index)
        pd.concat([good, junk], axis=1).to_csv(source, index=False)
    elif case == "gzip_named_csv":
        good.to_csv(source, index=False, compression="gzip")
    elif case == "outside_allowed_sources":
        good.to_csv(source, index=False)
        monkeypatch.setenv("AIRFLOW__MLOPS__ALLOWED_SOURCES", str(tmp_path / "landing"))
    else:
        source.write_bytes(b"")
    model_name = f"bad_data_{case}"

    dag_run = dag.test(run_conf={"model_name": model_name, "data_path": str(source)})

    states = _states(dag_run)
    assert states[failing_task] == "failed", states
    # Bad input is not retried, although the DAG retries transient failures.
    failed = next(ti for ti in dag_run.get_task_instances() if ti.task_id == failing_task)
    assert failed.try_number == 1
    assert states["train"] == "upstream_failed", states
    assert states["promote"] == "upstream_failed", states
    client = mlflow.MlflowClient(mlflow_server.uri)
    assert client.get_experiment_by_name(model_name) is None  # no training run was ever created
    assert client.search_registered_models(f"name = '{model_name}'") == []
