"""The Kubernetes runtime costs nothing at parse time: one setting switches the example DAG to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_mlops.operators.training import KubernetesRuntime, runtime_from_env

REPO = Path(__file__).resolve().parents[3]
NOT_AT_PARSE_TIME = [
    "kubernetes", "kubernetes_asyncio", "mlflow", "torch", "pandas",
    "airflow.providers.cncf.kubernetes.operators.pod", "airflow.providers.cncf.kubernetes.operators.job",
    "airflow.providers.cncf.kubernetes.hooks.kubernetes", "airflow_mlops.training.kubernetes.pod",
    "airflow_mlops.training.kubernetes.job",
]  # fmt: skip


def test_the_example_dag_switches_to_kubernetes_with_one_setting_and_imports_no_kubernetes_code():
    code = textwrap.dedent(
        """
        import json, runpy, sys
        import airflow_mlops.training.kubernetes.runtime, airflow_mlops.triggers.training
        ns = runpy.run_path(sys.argv[1], run_name="dag_file")
        task = ns["dag"].get_task("train")
        print(json.dumps({
            "runtime": repr(task.runtime),
            "loaded": sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules),
        }))
        """
    )
    env = {**os.environ, "MLOPS_TRAINING_RUNTIME": "kubernetes", "MLOPS_TRAINING_IMAGE": "registry/trainer:1.2",
           "MLOPS_TRAINING_GPUS": "1"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "continuous_training.py"), json.dumps(NOT_AT_PARSE_TIME)],
        capture_output=True, text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])

    assert result["loaded"] == []
    assert result["runtime"] == "KubernetesRuntime(gpus=Gpus(count=1), image='registry/trainer:1.2')"


def test_runtime_from_env():
    assert runtime_from_env({}) == "local"
    assert runtime_from_env({"MLOPS_TRAINING_RUNTIME": "local"}) == "local"
    runtime = runtime_from_env({
        "MLOPS_TRAINING_RUNTIME": "kubernetes", "MLOPS_TRAINING_IMAGE": "trainer:1",
        "MLOPS_TRAINING_NAMESPACE": "ml", "MLOPS_TRAINING_ENV_SECRETS": "mlflow-auth, s3-creds",
    })  # fmt: skip
    assert isinstance(runtime, KubernetesRuntime)
    assert (runtime.image, runtime.gpus.count, runtime.namespace) == ("trainer:1", 0, "ml")
    assert runtime.connection.namespace == "ml"
    assert runtime.env_from_secrets == ["mlflow-auth", "s3-creds"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLOPS_TRAINING_RUNTIME": "k8s"}, "MLOPS_TRAINING_RUNTIME must be 'local' or 'kubernetes'"),
        ({"MLOPS_TRAINING_RUNTIME": "kubernetes"}, "needs MLOPS_TRAINING_IMAGE"),
        ({"MLOPS_TRAINING_RUNTIME": "kubernetes", "MLOPS_TRAINING_IMAGE": "t:1", "MLOPS_TRAINING_GPUS": "one"},
         "MLOPS_TRAINING_GPUS must be a whole number"),
    ],
)  # fmt: skip
def test_runtime_from_env_names_the_wrong_variable(environ, message):
    with pytest.raises(ValueError, match=message):
        runtime_from_env(environ)
