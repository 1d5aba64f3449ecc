#!/usr/bin/env bash
# Install the wheel built from this repo into a fresh virtualenv with the given Airflow, then import every
# public module and parse every example DAG; prints what the install moved.
#     scripts/try_airflow_version.sh 3.1.8 [EXTRAS]      # e.g. 3.2.2 "amazon,sql"
set -euo pipefail
cd "$(dirname "$0")/.."
AIRFLOW_VERSION="${1:?usage: scripts/try_airflow_version.sh AIRFLOW_VERSION [EXTRAS]}"
EXTRAS="${2:-}"
PYTHON="${PYTHON:-python3}"
UV="$(command -v uv || echo .venv/bin/uv)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$UV" build -q --wheel -o "$WORK/dist" .
WHEEL="$(ls "$WORK"/dist/*.whl)"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$UV" pip install -q -p "$PY" "apache-airflow==${AIRFLOW_VERSION}"
"$UV" pip freeze -p "$PY" > "$WORK/freeze-airflow.txt"
"$PY" scripts/check_no_downgrade.py --constraints "$WORK/freeze-airflow.txt" > "$WORK/keep-airflow.txt"
"$UV" pip install -q -p "$PY" -c "$WORK/keep-airflow.txt" "${WHEEL}${EXTRAS:+[$EXTRAS]}"
"$UV" pip freeze -p "$PY" > "$WORK/freeze-all.txt"
"$PY" scripts/check_no_downgrade.py "$WORK/freeze-airflow.txt" "$WORK/freeze-all.txt"
cd "$WORK"  # import the installed wheel, not the checkout
AIRFLOW_HOME="$WORK/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False DAGS="$OLDPWD/dags" "$PY" - <<'PY'
import importlib
import os
import pkgutil

import airflow_mlops

failed = []
names = [m.name for m in pkgutil.walk_packages(airflow_mlops.__path__, "airflow_mlops.")
         if ".trainer.examples" not in m.name and ".demo" not in m.name]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as err:  # report every module that fails, not just the first
        failed.append(f"{name}: {type(err).__name__}: {err}")
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["DAGS"])
from airflow import __version__

print(f"Airflow {__version__}: {len(names) - len(failed)}/{len(names)} modules import; "
      f"{len(bag.dag_ids)} DAGs parse ({', '.join(sorted(bag.dag_ids))}); import errors: {len(bag.import_errors)}")
for line in failed + [f"{path}: {err}" for path, err in bag.import_errors.items()]:
    print("  FAIL", line)
raise SystemExit(1 if failed or bag.import_errors else 0)
PY
