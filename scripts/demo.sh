#!/usr/bin/env bash
# Set everything up and run the continuous-training demo; extra arguments go to `airflow-mlops demo`
# (e.g. --auto-approve --worse-run --keep-running).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/airflow-mlops demo "$@"
