"""Fixtures the operator tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client(mlflow_server):
    """An MLflow client of the session's server, which MLflow's own functions (``mlflow.register_model``) use too."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    return MlflowClient(mlflow_server.uri)
