"""``airflow-mlops lineage`` says where a version's training data came from and which code built it."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.lineage.chain import main
from tests.support.provenance import COMMIT, QUERY, register_champion_and_candidate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(mlflow_server, tmp_path_factory) -> dict:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    return register_champion_and_candidate(
        MlflowClient(mlflow_server.uri), tmp_path_factory.mktemp("lineage")
    )


def test_a_query_source_names_its_connection_and_query_and_the_commit(mlflow_server, model, capsys):
    assert main([model["name"], str(model["candidate"]), "--tracking-uri", mlflow_server.uri]) == 0
    text = capsys.readouterr().out

    assert f"  source      connection warehouse: {QUERY}" in text
    assert f"  code        {COMMIT}" in text
    assert " rows=60 created 2026-12-01T10:00:00+00:00" in text


def test_the_serving_version_names_its_objects_with_their_etags(mlflow_server, model, capsys):
    assert main([model["name"], "champion", "--tracking-uri", mlflow_server.uri, "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)

    assert lineage["version"] == str(model["champion"])
    assert lineage["data"]["source"] == {
        "kind": "files", "source": "s3://raw/penguins.csv",
        "objects": [{"uri": "s3://raw/penguins.csv", "etag": '"9b2cf535f27731c974343645a3985328"', "bytes": 812,
                     "modified": "2025-12-01T09:40:00+00:00"}],
    }  # fmt: skip
    assert lineage["code_version"] is None

    assert main([model["name"], "champion", "--tracking-uri", mlflow_server.uri]) == 0
    text = capsys.readouterr().out
    assert (
        '    s3://raw/penguins.csv (ETag "9b2cf535f27731c974343645a3985328", 2025-12-01T09:40:00+00:00)'
        in text
    )
    assert "  code        not recorded" in text
