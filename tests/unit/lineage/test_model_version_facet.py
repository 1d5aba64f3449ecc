"""The OpenLineage facet of a registered model version: where it came from, with its producer and schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.openlineage")

from openlineage.client.serde import Serde  # noqa: E402

from airflow_mlops.lineage.openlineage import (  # noqa: E402
    MODEL_VERSION_FACET,
    MODEL_VERSION_FACET_SCHEMA,
    registration_lineage,
)

REPO = Path(__file__).resolve().parents[3]
PROVENANCE = {
    "model_name": "penguins", "version": "3", "run_id": "0f1e2d", "code_version": "3f2c9d1e",
    "params": {"max_iter": "300"}, "metrics": {"accuracy": 0.93},
    "data": {
        "snapshot": "s3://lake/datasets/penguins/ab12", "sha256": "ab12", "rows": 344,
        "created_at": "2026-12-01T10:00:00+00:00",
        "source": {"kind": "files", "source": "s3://raw/penguins.csv", "objects": [
            {"uri": "s3://raw/penguins.csv", "etag": '"9b2c"', "bytes": 812, "modified": "2026-11-30T08:00:00+00:00"},
        ]},
    },
}  # fmt: skip
RESULT = {"model_name": "penguins", "version": 3, "source_uri": "models:/m-0f1e"}


def test_the_registered_version_carries_its_source_code_version_and_hyper_parameters():
    lineage = registration_lineage(RESULT, "http://mlflow:5000", "http://user:pw@mlflow:5000", PROVENANCE)
    (output,) = lineage.outputs
    facet = json.loads(Serde.to_json(output))["facets"][MODEL_VERSION_FACET]

    assert (output.namespace, output.name) == ("http://mlflow:5000", "models/penguins/3")
    assert facet["_producer"].startswith("https://github.com/airflow-mlops/airflow-mlops/tree/")
    assert facet["_schemaURL"] == MODEL_VERSION_FACET_SCHEMA
    assert (facet["codeVersion"], facet["trainingRun"]) == ("3f2c9d1e", "0f1e2d")
    assert (facet["hyperParameters"], facet["metrics"]) == ({"max_iter": "300"}, {"accuracy": 0.93})
    assert facet["trainingData"]["source"]["objects"][0]["etag"] == '"9b2c"'
    assert facet["trainingData"]["rows"] == 344


def test_the_facet_schema_is_kept_with_the_docs_and_names_every_field():
    path, _, pointer = MODEL_VERSION_FACET_SCHEMA.partition("#")
    schema = json.loads((REPO / "docs" / "openlineage" / Path(path).name).read_text())
    definition = schema["$defs"][pointer.rsplit("/", 1)[-1]]
    fields = set(definition["allOf"][1]["properties"])
    lineage = registration_lineage(RESULT, "http://mlflow:5000", "http://mlflow:5000", PROVENANCE)
    facet = json.loads(Serde.to_json(lineage.outputs[0]))["facets"][MODEL_VERSION_FACET]

    assert {key for key in facet if not key.startswith("_")} <= fields


def test_without_provenance_the_version_has_no_facet():
    lineage = registration_lineage(RESULT, "http://mlflow:5000", "http://mlflow:5000")
    assert lineage.outputs[0].facets == {}
