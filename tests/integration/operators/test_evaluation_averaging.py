"""
Multiclass averaging of the evaluation gate, on a real 3-class scikit-learn model and the session's MLflow server:
``average`` decides what ``f1_score`` (precision, recall) means, and so whether the same candidate passes.
"""

from __future__ import annotations

import uuid

import mlflow
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from tests.support.snapshots import write_frames_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three_classes(client, tmp_path_factory) -> dict:
    """A registered 3-class model trained on imbalanced classes, its holdout, and its holdout predictions."""
    x, y = make_classification(
        n_samples=900, n_features=6, n_informative=4, n_classes=3, weights=[0.7, 0.2, 0.1],
        class_sep=0.8, random_state=3,
    )  # fmt: skip
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]).assign(label=y)
    train, holdout = frame.iloc[:600], frame.iloc[600:]
    uri = write_frames_snapshot(tmp_path_factory.mktemp("data"), "species", train, holdout)
    model = LogisticRegression(max_iter=500).fit(train.drop(columns="label"), train["label"])
    experiment_id = client.create_experiment(f"averaging-tests-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"],
            input_example=train.drop(columns="label").head(2),
        )  # fmt: skip
    name = f"species-{uuid.uuid4().hex[:8]}"
    version = int(mlflow.register_model(info.model_uri, name).version)
    predicted = model.predict(holdout.drop(columns="label"))
    return {
        "name": name,
        "version": version,
        "holdout": f"{uri}#holdout",
        "y": holdout["label"],
        "pred": predicted,
    }


def evaluate(three_classes, average="weighted", thresholds=None, **kwargs) -> EvaluateModelOperator:
    return EvaluateModelOperator(
        task_id="evaluate",
        model_name=three_classes["name"],
        candidate_version=three_classes["version"],
        holdout_data=three_classes["holdout"],
        thresholds=thresholds or {"f1_score": {"threshold": 0.0}},
        model_type="classifier",
        average=average,
        **kwargs,
    )


def test_f1_precision_recall_follow_the_averaging_asked_for(three_classes):
    y, pred = three_classes["y"], three_classes["pred"]
    expected = {
        average: {
            "f1_score": f1_score(y, pred, average=average),
            "precision_score": precision_score(y, pred, average=average),
            "recall_score": recall_score(y, pred, average=average),
        }
        for average in ("weighted", "macro", "micro")
    }
    # On imbalanced classes the three differ: the gate's verdict depends on the choice.
    assert expected["macro"]["f1_score"] < expected["weighted"]["f1_score"] - 0.02
    threshold = (expected["macro"]["f1_score"] + expected["weighted"]["f1_score"]) / 2
    gate = {"f1_score": {"threshold": threshold}}

    results = {average: evaluate(three_classes, average, gate).execute({}) for average in expected}

    for average, values in expected.items():
        for metric, value in values.items():
            assert results[average]["metrics"][metric]["candidate"] == pytest.approx(value, abs=1e-9)
    assert results["micro"]["metrics"]["f1_score"]["candidate"] == pytest.approx(accuracy_score(y, pred))
    assert results["weighted"]["passed"] is True  # MLflow's default averaging, as before
    assert results["macro"]["passed"] is False  # the rare classes count as much as the common one
    assert "f1_score" in results["macro"]["reason"]
    assert "averaged over the classes as `macro`" in results["macro"]["report"]
    assert "roc_auc" in results["macro"]["metrics"]
    assert "roc_auc" not in results["micro"]["metrics"]  # MLflow gives no micro-averaged roc_auc


def test_an_unknown_averaging_is_refused_at_parse_time_and_after_rendering(three_classes):
    with pytest.raises(ValueError, match="average must be one of 'weighted', 'macro', 'micro'.*'mean'"):
        evaluate(three_classes, "mean")

    templated = evaluate(three_classes, "{{ params.average }}")
    templated.render_template_fields({"params": {"average": "samples"}})
    with pytest.raises(
        ConfigurationError, match="average must be one of 'weighted', 'macro', 'micro'"
    ) as err:
        templated.execute({})
    assert err.value.retryable is False


def test_a_templated_averaging_is_rendered_and_used(three_classes):
    op = evaluate(three_classes, "{{ params.average }}")
    op.render_template_fields({"params": {"average": "macro"}})

    result = op.execute({})

    expected = f1_score(three_classes["y"], three_classes["pred"], average="macro")
    assert result["metrics"]["f1_score"]["candidate"] == pytest.approx(expected, abs=1e-9)
