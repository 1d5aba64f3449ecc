"""Parse time is sacred: DAG files and public modules must not import heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Airflow's provider discovery itself loads airflow.providers.openlineage(.get_provider_info): only what
# builds events (the OpenLineage client, the provider's extractors) must stay out.
HEAVY = ["mlflow", "great_expectations", "pandas", "numpy", "sklearn", "kubernetes", "kubernetes_asyncio",
         "boto3", "botocore", "torch", "scipy", "pyarrow", "openlineage", "airflow.providers.openlineage.extractors"]  # fmt: skip
# Every package a worker or a DAG imports; ``trainer`` runs in training processes and may import what it needs.
PUBLIC_PACKAGES = [
    "hooks", "operators", "sensors", "triggers", "deploy_targets", "serving", "lineage", "data", "evaluation",
    "training", "training/kubernetes", "utils",
]  # fmt: skip
# What the continuous-training DAG must not load while it is parsed: the modules of work it does not do at
# parse time (Kubernetes, the serving back ends it does not use, checks and canaries, lineage, statistics,
# reports, the trainer side). Its local serving target is loaded: the literal target settings are checked.
NOT_AT_PARSE = [
    "airflow_mlops.training.kubernetes", "airflow_mlops.training.spec", "airflow_mlops.serving.kserve",
    "airflow_mlops.serving.proxy", "airflow_mlops.serving.canary", "airflow_mlops.serving.verification",
    "airflow_mlops.serving.release", "airflow_mlops.hooks.kserve", "airflow_mlops.triggers",
    "airflow_mlops.lineage",
    "airflow_mlops.trainer", "airflow_mlops.demo", "airflow_mlops.evaluation.report", "airflow_mlops.data.drift",
]  # fmt: skip


def public_modules() -> list[str]:
    modules = ["airflow_mlops", "airflow_mlops.tags", "airflow_mlops.exceptions", "airflow_mlops.get_provider_info"]
    for package in PUBLIC_PACKAGES:
        for path in sorted((REPO / "airflow_mlops" / package).glob("*.py")):
            if not path.name.startswith("_"):
                modules.append(f"airflow_mlops.{package.replace('/', '.')}.{path.stem}")
    for path in sorted((REPO / "airflow_mlops").glob("*.py")):
        if path.stem not in ("__init__", "cli") and f"airflow_mlops.{path.stem}" not in modules:
            modules.append(f"airflow_mlops.{path.stem}")
    return modules


def test_dags_and_public_modules_import_no_heavy_library():
    dag_files = sorted(str(p) for p in (REPO / "dags").glob("*.py"))
    assert dag_files, "no example DAGs found"
    code = textwrap.dedent(
        """
        import importlib, json, runpy, sys
        from airflow.sdk import DAG
        modules, dag_files, heavy = json.loads(sys.argv[1])
        for name in modules:
            importlib.import_module(name)
        dag_ids = []
        for path in dag_files:
            ns = runpy.run_path(path, run_name="dag_file")
            dag_ids += [v.dag_id for v in ns.values() if isinstance(v, DAG)]
        loaded = sorted(m for m in heavy if m in sys.modules)
        print(json.dumps({"loaded": loaded, "dag_ids": dag_ids}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps([public_modules(), dag_files, HEAVY])],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"heavy libraries imported at parse time: {result['loaded']}"
    assert "mlops_continuous_training" in result["dag_ids"]


def test_the_continuous_training_dag_loads_only_the_modules_of_the_operators_it_uses():
    code = textwrap.dedent(
        """
        import json, runpy, sys
        import airflow.sdk
        runpy.run_path(sys.argv[1], run_name="dag_file")
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("airflow_mlops"))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "continuous_training.py")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "airflow_mlops.operators.training" in loaded
    unexpected = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in NOT_AT_PARSE)]
    assert unexpected == [], f"loaded while parsing the DAG: {unexpected}"
