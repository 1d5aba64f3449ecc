"""
MLflow pyfunc models that misbehave on purpose, for the deployment tests.

Logged with ``code_paths=[<this file>]`` and imported under the module name ``serving_models``, so the model
server process (``mlflow models serve``) can import the classes when it loads the model.
"""

from __future__ import annotations

import mlflow.pyfunc


class RaisesOnPredict(mlflow.pyfunc.PythonModel):
    """Loads fine, answers /ping, and fails every prediction."""

    def predict(self, context, model_input, params=None):
        raise RuntimeError("feature store unreachable: this model cannot predict")


class OnePredictionPerRequest(mlflow.pyfunc.PythonModel):
    """Loads fine, answers /ping, but returns one prediction whatever the number of rows."""

    def predict(self, context, model_input, params=None):
        return [1]
