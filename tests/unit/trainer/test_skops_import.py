"""
Loading a skops model in an Airflow task process: skops, on import, looks up every scipy ufunc in every loaded
module, and each lookup on one of Airflow's deprecation shims warns (a line of the task's log each).
"""

from __future__ import annotations

import json
import subprocess
import sys

PROCESS = """
import json, sys, warnings
import airflow.sdk, airflow.utils.timezone, airflow.utils.trigger_rule  # Airflow's deprecation shims, loaded
from airflow_mlops.trainer.models import import_skops_quietly

def imported(quietly):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if quietly:
            import_skops_quietly()
        else:
            import skops.io
    return {"skops": "skops.io" in sys.modules, "airflow_warnings": sum("airflow." in str(w.message) for w in caught)}

print(json.dumps(imported(sys.argv[1] == "quietly")))
"""


def _import_skops(how: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROCESS, how], capture_output=True, text=True, check=True, timeout=240
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_skops_is_imported_without_a_warning_from_airflows_shims():
    assert _import_skops("quietly") == {"skops": True, "airflow_warnings": 0}
    # Without it, the same import warns about Airflow's deprecated names, many times over.
    assert _import_skops("plainly")["airflow_warnings"] > 100
