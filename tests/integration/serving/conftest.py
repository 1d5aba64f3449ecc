"""Fixtures of the serving tests: an MLflow client of the session's server, and a holdout snapshot."""

from __future__ import annotations

import pytest

from tests.support.deploy import write_holdout_snapshot


@pytest.fixture(scope="module")
def client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.uri)


@pytest.fixture(scope="module")
def holdout(tmp_path_factory) -> str:
    """A snapshot with a ``holdout`` split: ``<snapshot-uri>#holdout``."""
    return write_holdout_snapshot(tmp_path_factory.mktemp("snapshots"))
