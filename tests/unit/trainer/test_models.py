"""log_model: common model families saved with their input signature, loadable with no trusted-types list."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import Ridge

from airflow_mlops.trainer.models import input_columns, log_model, signature_model_type

FEATURES = ["bmi", "bp", "s5"]


@pytest.fixture
def tracking(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("models")


@pytest.fixture(scope="module")
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y


def test_a_tree_ensemble_fails_mlflows_own_skops_save_without_trusted_types(tracking, diabetes):
    X, y = diabetes
    model = RandomForestRegressor(n_estimators=3, random_state=0).fit(X[FEATURES], y)
    with mlflow.start_run(), pytest.raises(MlflowException, match="sklearn.tree._tree.Tree"):
        mlflow.sklearn.log_model(model, name="model", serialization_format="skops")


@pytest.mark.parametrize(
    ("make", "classify", "model_type"),
    [
        (lambda: RandomForestRegressor(n_estimators=3, random_state=0), False, "regressor"),
        (lambda: GradientBoostingClassifier(n_estimators=5, random_state=0), True, "classifier"),
        (lambda: Ridge(), False, "regressor"),
    ],
)
def test_sklearn_models_are_saved_with_the_columns_they_were_fitted_on(
    tracking, diabetes, make, classify, model_type
):
    X, y = diabetes
    if classify:
        y = (y > y.median()).astype(int)
    model = make().fit(X[FEATURES], y)
    with mlflow.start_run():
        info = log_model(model, X[FEATURES])

    assert input_columns(info.model_uri) == FEATURES
    assert signature_model_type(info.model_uri) == model_type
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    # The same predictions as the fitted model, from a table with more columns than the model takes.
    predicted = loaded.predict(X[FEATURES].head(10))
    assert list(predicted) == pytest.approx(list(model.predict(X[FEATURES].head(10))))


def test_a_pytorch_module_is_saved_with_named_columns_and_predicts_from_a_table(tracking, diabetes):
    torch = pytest.importorskip("torch")
    X, _ = diabetes
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with mlflow.start_run():
        info = log_model(net, X[FEATURES])

    assert input_columns(info.model_uri) == FEATURES
    assert signature_model_type(info.model_uri) == "regressor"
    predicted = mlflow.pyfunc.load_model(info.model_uri).predict(X[FEATURES].head(4))
    with torch.no_grad():
        expected = net(torch.tensor(X[FEATURES].head(4).to_numpy(), dtype=torch.float32)).numpy().ravel()
    assert list(pd.DataFrame(predicted).iloc[:, 0]) == pytest.approx(list(expected), rel=1e-5)


def test_something_that_is_not_a_model_is_refused(tracking, diabetes):
    with (
        mlflow.start_run(),
        pytest.raises(TypeError, match="fitted scikit-learn estimator or a torch.nn.Module"),
    ):
        log_model(object(), diabetes[0][FEATURES])
