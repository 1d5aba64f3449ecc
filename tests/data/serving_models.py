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


class FailsOnSomeRows(mlflow.pyfunc.PythonModel):
    """
    Predicts 0, but fails a request holding a row whose ``tenure_months`` is 19 modulo 20.

    About 5% of uniformly drawn tenures from 0 to 99; the smoke tests' sample rows (tenure 0 to 23, first
    rows 0 to 7) pass, as a bad release's probes do.
    """

    def predict(self, context, model_input, params=None):
        if any(int(value) % 20 == 19 for value in model_input["tenure_months"]):
            raise RuntimeError("this version cannot score long-tenure customers")
        return [0] * len(model_input)


class LongTenureIsOne(mlflow.pyfunc.PythonModel):
    """Predicts 1 for a tenure over 12 months, else 0: its predictions follow the inputs it is sent."""

    def predict(self, context, model_input, params=None):
        return [int(value > 12) for value in model_input["tenure_months"]]
