#!/usr/bin/env bash
# The unit tests (which include a DagBag parse of every example DAG) on the oldest Airflow this provider
# supports, in .venv-floor (scripts/setup_floor.sh); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_floor.sh
export PATH="$PWD/.venv-floor/bin:$PATH"
exec .venv-floor/bin/python -m pytest tests/unit "$@"
