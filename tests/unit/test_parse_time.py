"""Parse time is sacred: DAG files and public modules must not import heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["mlflow", "great_expectations", "pandas", "numpy", "sklearn", "kubernetes", "kubernetes_asyncio",
         "boto3", "botocore", "torch", "scipy", "pyarrow"]  # fmt: skip
PUBLIC_PACKAGES = ["hooks", "operators", "sensors", "triggers", "deploy_targets"]


def public_modules() -> list[str]:
    modules = ["airflow_mlops", "airflow_mlops.tags", "airflow_mlops.exceptions", "airflow_mlops.get_provider_info"]
    for package in PUBLIC_PACKAGES:
        for path in sorted((REPO / "airflow_mlops" / package).glob("*.py")):
            if not path.name.startswith("_"):
                modules.append(f"airflow_mlops.{package}.{path.stem}")
    for optional in ("links",):
        if (REPO / "airflow_mlops" / f"{optional}.py").exists():
            modules.append(f"airflow_mlops.{optional}")
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
