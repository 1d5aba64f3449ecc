"""
TrainModelOperator refuses a model that silently leaves out a column of its training data (real MLflow server).

A text column (numbers with thousands separators, timestamps) is what a trainer that takes "every numeric
column" drops without a word; the model then serves on fewer features than the data had.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from airflow_mlops import tags
from airflow_mlops.exceptions import TrainingResultError
from airflow_mlops.operators.training import TrainModelOperator
from tests.support.training import context, runs_of, write_snapshot

pytestmark = pytest.mark.integration

# Fits on x1 and x2 only, as a trainer that picks "the numeric columns it likes" would, and says nothing.
SILENT_TRAINER = """
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from airflow_mlops.data.snapshots import read_snapshot
    from airflow_mlops.trainer.contract import TrainingContext
    from airflow_mlops.trainer.models import log_model

    ctx = TrainingContext.from_env()
    frame = read_snapshot(ctx.train_data)
    features = frame[["x1", "x2"]]
    model = LogisticRegression().fit(features, frame["label"])
    with mlflow.start_run(run_id=ctx.run_id):
        info = log_model(model, features, serialization_format="cloudpickle")
    ctx.write_result({"run_id": ctx.run_id, "model_uri": info.model_uri, "metrics": {}, "target": "label"})
"""


def test_a_model_without_a_feature_of_its_data_is_refused_at_once(mlflow_server, data_root, tmp_path):
    snapshot = write_snapshot(data_root)
    trainer = tmp_path / "silent.py"
    trainer.write_text(textwrap.dedent(SILENT_TRAINER))
    experiment = "signature-silent-drop"
    op = TrainModelOperator(
        task_id="train", entrypoint=[sys.executable, str(trainer)], train_data=f"{snapshot}#train",
        experiment_name=experiment, output_root=str(data_root / "runs"),
    )  # fmt: skip

    with pytest.raises(TrainingResultError) as info:
        op.execute(context("signature_dag"))

    message = str(info.value)
    assert "does not take column(s) ['noise', 'city'] of its training data" in message
    assert "did not say it left them out" in message
    assert "'dropped_features'" in message
    assert info.value.retryable is False  # a retry would log the same model again
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"
    assert tags.TRAINING_RESULT not in run.data.tags  # nothing the registry stage could pick up


def test_the_example_trainer_says_which_columns_it_left_out(mlflow_server, data_root):
    snapshot = write_snapshot(data_root)  # "city" is text: the example trainer takes numeric columns only
    experiment = "signature-declared-drop"
    result = TrainModelOperator(
        task_id="train", entrypoint="airflow_mlops.trainer.examples.sklearn_classifier",
        train_data=f"{snapshot}#train", valid_data=f"{snapshot}#valid", experiment_name=experiment,
        output_root=str(data_root / "runs"),
    ).execute(context("signature_dag"))  # fmt: skip

    assert result["target"] == "label"
    assert list(result["dropped_features"]) == ["city"]
    assert result["dropped_features"]["city"].startswith("not numeric (")
    (run,) = runs_of(experiment)
    assert json.loads(run.data.tags[tags.TRAINING_RESULT])["dropped_features"] == result["dropped_features"]
