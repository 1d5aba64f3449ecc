#!/usr/bin/env bash
# Create .venv with Airflow and this provider (editable, with the demo and test extras).
# Airflow is installed first; installing the provider afterwards must not change any package Airflow brought.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRFLOW_VERSION="${AIRFLOW_VERSION:-3.3.2}"
PYTHON="${PYTHON:-python3}"

# The Spark engine's tests start a local Spark, whose driver is a Java 17 process (Debian's OpenJDK).
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openjdk-17-jre-headless >/dev/null
  else
    echo "java is not installed: the Spark engine tests will be skipped (apt-get install openjdk-17-jre-headless)" >&2
  fi
fi
# The Azure Blob tests start Azurite, a Node.js server from npm.
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nodejs npm >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ -x .venv/bin/uv ]; then
  UV=".venv/bin/uv pip"
elif command -v uv >/dev/null 2>&1; then
  UV="uv pip"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check uv
  UV=".venv/bin/uv pip"
fi
$UV install -q --compile-bytecode -p .venv/bin/python "apache-airflow==${AIRFLOW_VERSION}"
$UV freeze -p .venv/bin/python > .venv/freeze-airflow.txt
# Hold Airflow's distributions and pinned dependencies where they are: the resolver must fail rather than move them.
.venv/bin/python scripts/check_no_downgrade.py --constraints .venv/freeze-airflow.txt > .venv/keep-airflow.txt
$UV install -q --compile-bytecode -p .venv/bin/python -c .venv/keep-airflow.txt -e ".[dev]"
# PyTorch (CPU build) for the PyTorch trainer's tests, through pip, which can take a local CPU wheel.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip -q
  .venv/bin/python -m pip install -q --disable-pip-version-check -c .venv/keep-airflow.txt "torch==2.13.0" \
    || echo "torch is not installed: the PyTorch trainer tests will be skipped" >&2
fi
if [ ! -x .venv/azurite/node_modules/.bin/azurite-blob ]; then
  if command -v npm >/dev/null 2>&1; then
    npm install -s --no-audit --no-fund --prefix .venv/azurite azurite@3 >/dev/null \
      || echo "Azurite is not installed: the Azure Blob tests will be skipped" >&2
  else
    echo "npm is not installed: the Azure Blob tests will be skipped (apt-get install npm)" >&2
  fi
fi
$UV freeze -p .venv/bin/python > .venv/freeze-all.txt
# Fails if Airflow or a pin of Airflow moved; prints every other package that moved, and what required it.
.venv/bin/python scripts/check_no_downgrade.py .venv/freeze-airflow.txt .venv/freeze-all.txt
