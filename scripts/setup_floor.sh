#!/usr/bin/env bash
# Create .venv-floor with the oldest Airflow this provider supports (the floor in pyproject.toml) and the provider
# (editable, with the test extra), the same way scripts/setup.sh builds .venv: Airflow first, then the provider
# under constraints that keep every package Airflow brought where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRFLOW_FLOOR_VERSION="${AIRFLOW_FLOOR_VERSION:-3.1.8}"
PYTHON="${PYTHON:-python3}"
VENV=.venv-floor

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ -x .venv/bin/uv ]; then
  UV=".venv/bin/uv pip"
elif command -v uv >/dev/null 2>&1; then
  UV="uv pip"
else
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
  UV="$VENV/bin/uv pip"
fi
$UV install -q --compile-bytecode -p "$VENV/bin/python" "apache-airflow==${AIRFLOW_FLOOR_VERSION}"
$UV freeze -p "$VENV/bin/python" > "$VENV/freeze-airflow.txt"
"$VENV/bin/python" scripts/check_no_downgrade.py --constraints "$VENV/freeze-airflow.txt" > "$VENV/keep-airflow.txt"
$UV install -q --compile-bytecode -p "$VENV/bin/python" -c "$VENV/keep-airflow.txt" -e ".[test]"
$UV freeze -p "$VENV/bin/python" > "$VENV/freeze-all.txt"
"$VENV/bin/python" scripts/check_no_downgrade.py "$VENV/freeze-airflow.txt" "$VENV/freeze-all.txt"
