"""The evaluation package is plain Python: importing it loads neither Airflow nor a heavy library."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["thresholds", "slices", "gate", "report", "values"]
FORBIDDEN = ["airflow", "mlflow", "pandas", "numpy", "sklearn", "matplotlib", "scipy", "pyarrow"]


def test_evaluation_modules_import_without_airflow_or_heavy_libraries():
    code = (
        "import json, sys\n"
        + "".join(f"import airflow_mlops.evaluation.{name}\n" for name in MODULES)
        + f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
