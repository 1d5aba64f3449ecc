"""The ingest logs its snapshot to an MLflow run as a dataset input."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.ingest import IngestDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration


def test_snapshot_logged_as_run_input(mlflow_server, tmp_path, data_root):
    source = tmp_path / "d.csv"
    pd.DataFrame({"x": range(20), "label": [0, 1] * 10}).to_csv(source, index=False)
    client = MLflowHook().client
    experiment_id = client.create_experiment("ingest-lineage")
    run_id = client.create_run(experiment_id).info.run_id

    kwargs = dict(task_id="ingest", dataset_name="churn", source=str(source), data_root=str(data_root))
    result = IngestDatasetOperator(mlflow_run_id=run_id, **kwargs).execute(context={})
    IngestDatasetOperator(mlflow_run_id=run_id, **kwargs).execute(context={})  # a retry

    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "churn"
    assert inputs[0].dataset.digest == result["snapshot_id"][:36]
    assert result["uri"] in inputs[0].dataset.source
    tags = {tag.key: tag.value for tag in inputs[0].tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["mlops.data.sha256"] == result["sha256"]
