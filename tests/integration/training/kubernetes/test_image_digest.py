"""
The image a Kubernetes training pod ran, by digest (its status' ``imageID``), is recorded on the training's MLflow
run and shown by ``airflow-mlops lineage`` next to the code version. Against the API-server stand-in, whose
kubelet reports an ``imageID`` for every started container, and the session's real MLflow server.
"""

from __future__ import annotations

import pytest

from airflow_mlops import tags
from airflow_mlops.lineage.chain import main as lineage_main
from tests.support.deferred import k8s_context, run_deferred
from tests.support.kubernetes import PodScript
from tests.support.kubernetes.kubelet import image_digest
from tests.support.kubernetes_training import operator_factory, trainer_result
from tests.support.training import runs_of

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/trainer:1.0"


def test_the_pod_s_image_digest_is_on_the_run_and_in_the_lineage(
    mlflow_server, stub, snapshot, experiment, tmp_path, capsys
):
    from mlflow import MlflowClient

    stub.script_pods(PodScript(run_seconds=0.2, result=trainer_result))
    make = operator_factory(snapshot, experiment, tmp_path)

    result = run_deferred(make, k8s_context("digest_dag"))

    (run,) = runs_of(experiment)
    digest = run.data.tags[tags.CODE_IMAGE_DIGEST]
    assert digest == image_digest(IMAGE)
    assert digest.startswith("registry.example.com/trainer@sha256:")
    assert f"Training image: {digest}" in capsys.readouterr().out  # the task log says it too

    client = MlflowClient(mlflow_server.uri)
    name = f"digest-{experiment}"
    client.create_registered_model(name)
    version = client.create_model_version(name, result["model_uri"], run_id=run.info.run_id).version
    assert lineage_main([name, str(version), "--tracking-uri", mlflow_server.uri]) == 0
    assert f" image {digest}" in capsys.readouterr().out


def test_a_multi_node_job_records_rank_0_s_image_digest(mlflow_server, stub, snapshot, experiment, tmp_path):
    def rank0_result(env: dict[str, str]) -> dict | None:
        return trainer_result(env) if env["NODE_RANK"] == "0" else None

    stub.script_pods(PodScript(result=rank0_result))
    make = operator_factory(snapshot, experiment, tmp_path, num_nodes=2)

    run_deferred(make, k8s_context("digest_job_dag"))

    (run,) = runs_of(experiment)
    assert run.data.tags[tags.CODE_IMAGE_DIGEST] == image_digest(IMAGE)
