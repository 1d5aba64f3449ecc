#!/usr/bin/env bash
# Static checks CI runs: ruff (style, import rules, docstrings of public names), mypy over the package,
# and no import cycles between the package's modules.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check airflow_mlops dags tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python scripts/import_cycles.py
