"""DriftCheckOperator finds its reference through the champion's lineage tag in the MLflow registry."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.exceptions import DataDriftError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.drift import DriftCheckOperator
from airflow_mlops.operators.ingest import IngestDatasetOperator
from tests.support.new_data import sources_in_temp_folders  # noqa: F401  (autouse: sources in temp folders)

pytestmark = pytest.mark.integration


def snapshot(tmp_path, data_root, name: str, loc: float) -> str:
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"x": np.random.default_rng(0).normal(loc, 1, 2000)}).to_csv(path, index=False)
    return IngestDatasetOperator(
        task_id="i", dataset_name="d", source=str(path), data_root=str(data_root)
    ).execute(context={})["uri"]


def test_reference_is_the_champions_training_snapshot(mlflow_server, tmp_path, data_root):
    model = f"drift-{uuid.uuid4().hex[:8]}"
    trained_on = snapshot(tmp_path, data_root, "old", 0.0)
    shifted = snapshot(tmp_path, data_root, "new", 2.0)
    client = MLflowHook().client
    client.create_registered_model(model)
    run = client.create_run(client.create_experiment(model))
    version = client.create_model_version(
        model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
        tags={"mlops.data.uri": trained_on},
    )  # fmt: skip

    no_champion = DriftCheckOperator(task_id="drift", dataset_uri=shifted, model_name=model).execute({})
    assert no_champion["drift"] is False
    assert no_champion["reference"] is None

    client.set_registered_model_alias(model, "champion", version.version)
    with pytest.raises(DataDriftError, match=f"drifted from {trained_on}"):
        DriftCheckOperator(task_id="drift", dataset_uri=shifted, model_name=model).execute({})
