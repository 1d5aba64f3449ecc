"""
A registered model with a champion and a candidate that differ the way a reviewer must see.

The champion (v1) was trained with ``max_iter=100`` on columns ``a``, ``b`` from a CSV object in a bucket; the
candidate (v2) with ``max_iter=300`` on ``a``, ``b``, ``c`` from a SQL query on connection ``warehouse``, from a
git commit, infra-validated (latency measured), with the per-class metrics MLflow's classifier evaluation logs.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from airflow_mlops import tags as T

if TYPE_CHECKING:
    from pathlib import Path

    from mlflow import MlflowClient

COMMIT = "3f2c9d1e0b7a4c5d6e7f8091a2b3c4d5e6f70812"
QUERY = "SELECT a, b, c, label FROM penguins WHERE island = 'Biscoe'"
INFRA = {
    "model_name": "", "version": 2, "target": "local", "rows": 20, "requests": 20, "passed": True,
    "latency_ms": {"p50": 3.1, "p95": 7.4, "max": 9.02},
}  # fmt: skip
#: What MLflow's classifier evaluation writes to ``per_class_metrics.csv`` (three classes).
PER_CLASS_CSV = (
    "positive_class,true_negatives,false_positives,false_negatives,true_positives,recall,precision,f1_score\n"
    "Adelie,40,2,1,17,0.9444444444444444,0.8947368421052632,0.918918918918919\n"
    "Chinstrap,45,1,3,11,0.7857142857142857,0.9166666666666666,0.8461538461538461\n"
    "Gentoo,38,1,0,21,1.0,0.9545454545454546,0.9767441860465116\n"
)


def write_manifest(root: Path, name: str, **described) -> str:
    """A snapshot folder holding only a ``_manifest.json`` as the ingest writes it; return its URI."""
    snapshot_id = uuid.uuid4().hex * 2
    folder = root / "datasets" / name / snapshot_id
    folder.mkdir(parents=True)
    manifest = {
        "name": name, "snapshot_id": snapshot_id, "uri": str(folder), "rows": 60,
        "schema": {"a": "float64", "b": "float64", "label": "int64"}, "sha256": snapshot_id,
        "split": None, "files": {"data": "data.parquet"}, "created_at": "2026-12-01T10:00:00+00:00",
        **described,
    }  # fmt: skip
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def register_champion_and_candidate(client: MlflowClient, root: Path) -> dict:
    """Register v1 (champion) and v2 as above; return ``{"name", "champion", "candidate", "evaluation_run_id"}``."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    name = f"penguins-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(f"provenance-{uuid.uuid4().hex[:8]}")
    frame = pd.DataFrame({"a": [0.1, 0.9, 0.2, 0.8] * 5, "b": [1.0, 0.0, 1.0, 0.0] * 5, "c": [3.0, 1.0] * 10})
    label = [0, 1, 0, 1] * 5
    files = write_manifest(
        root, "penguins", source="s3://raw/penguins.csv", format="csv",
        source_files=[{"uri": "s3://raw/penguins.csv", "bytes": 812, "sha256": "ab" * 32, "etag": '"9b2cf535f27731c974343645a3985328"', "mtime": 1764582000.0}],
    )  # fmt: skip
    sql = write_manifest(
        root, "penguins", source="sql://warehouse", query=QUERY, format="sql", source_files=[]
    )
    versions = {}
    for columns, max_iter, data in ((["a", "b"], 100, files), (["a", "b", "c"], 300, sql)):
        with mlflow.start_run(experiment_id=experiment, tags={T.DATA_URI: data}) as run:
            mlflow.log_params({"max_iter": max_iter, "C": 1.0})
            if max_iter == 300:
                mlflow.set_tag("mlflow.source.git.commit", COMMIT)
            info = mlflow.sklearn.log_model(
                LogisticRegression(max_iter=max_iter).fit(frame[columns], label), name="model",
                input_example=frame[columns].head(2), pip_requirements=["scikit-learn"],
            )  # fmt: skip
        version = mlflow.register_model(info.model_uri, name).version
        client.set_model_version_tag(name, version, T.MLFLOW_RUN_ID, run.info.run_id)
        client.set_model_version_tag(name, version, T.DATA_URI, data)
        versions[max_iter] = int(version)
    client.set_registered_model_alias(name, T.CHAMPION, str(versions[100]))
    candidate = versions[300]
    with mlflow.start_run(experiment_id=experiment) as evaluation:
        mlflow.log_text(PER_CLASS_CSV, "per_class_metrics.csv")
    per_class = f"{evaluation.info.artifact_uri}/per_class_metrics.csv"
    summary = {
        "passed": True,
        "evaluation_run_id": evaluation.info.run_id,
        "artifacts": {"per_class_metrics": per_class},
    }
    client.set_model_version_tag(name, str(candidate), T.EVALUATION_SUMMARY, json.dumps(summary))
    infra = {**INFRA, "model_name": name, "version": candidate}
    client.set_model_version_tag(name, str(candidate), T.INFRA_VALIDATION_PASSED, "true")
    client.set_model_version_tag(name, str(candidate), T.INFRA_VALIDATION_SUMMARY, json.dumps(infra))
    return {
        "name": name,
        "champion": versions[100],
        "candidate": candidate,
        "evaluation_run_id": evaluation.info.run_id,
    }
