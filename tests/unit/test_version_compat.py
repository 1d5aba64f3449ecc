"""The names Airflow 3.2 moved into ``airflow.sdk`` come from ``version_compat``, so the package imports on 3.1."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MOVED = "conf|SkipMixin|AirflowException|AirflowFailException|AirflowNotFoundException|AirflowSensorTimeout"
MOVED += "|AirflowSkipException|DownstreamTasksSkipped|ParamValidationError|TaskDeferred"
# `from airflow.sdk import ..., conf` / `from airflow.sdk.exceptions import X` (also in parentheses).
IMPORT = re.compile(r"from airflow\.sdk(?:\.exceptions)? import (?:\(([^)]*)\)|([^\n]*))")


def test_no_module_imports_a_moved_name_from_airflow_sdk():
    offenders = []
    for path in [*(REPO / "airflow_mlops").rglob("*.py"), *(REPO / "dags").glob("*.py")]:
        if path.name == "version_compat.py":
            continue
        for match in IMPORT.finditer(path.read_text()):
            listed = match.group(1) or match.group(2)
            names = {name.strip().split(" as ")[0] for name in listed.replace("\n", ",").split(",")}
            moved = sorted(names & set(MOVED.split("|")))
            if moved:
                offenders.append(f"{path.relative_to(REPO)}: {', '.join(moved)}")
    assert offenders == [], "import these from airflow_mlops.version_compat"


def test_version_compat_gives_the_running_airflows_classes():
    from airflow import __version__

    from airflow_mlops import version_compat as compat

    major, minor = (int(part) for part in __version__.split(".")[:2])
    assert compat.AIRFLOW_V_3_2_PLUS is ((major, minor) >= (3, 2))
    expected = "airflow.sdk.exceptions" if compat.AIRFLOW_V_3_2_PLUS else "airflow.exceptions"
    assert compat.AirflowFailException.__module__ == expected
    assert compat.DownstreamTasksSkipped.__module__ == expected
    assert compat.conf.getboolean("core", "unit_test_mode", fallback=False) in (True, False)
