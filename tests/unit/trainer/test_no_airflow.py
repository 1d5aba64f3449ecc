"""Code that runs inside training processes imports no Airflow: a training image needs none."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import airflow_mlops.data, airflow_mlops.trainer
names = []
for package in (airflow_mlops.trainer, airflow_mlops.data):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
import airflow_mlops.trainer.contract, airflow_mlops.trainer.lifecycle
import airflow_mlops.trainer.examples.sklearn_classifier, airflow_mlops.trainer.examples.torch_mlp
import airflow_mlops.data.storage, airflow_mlops.data.snapshots, airflow_mlops.data.drift
loaded = sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))
assert not loaded, loaded
print(len(names))
"""


def test_the_trainer_and_data_packages_load_no_airflow_module():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)

    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip()) >= 10  # every module of both packages was imported
