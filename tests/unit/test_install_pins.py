"""The install check refuses any change to Airflow or the dependencies it pins, and only those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_no_downgrade.py"


def _check(tmp_path, before: str, after: str) -> subprocess.CompletedProcess:
    (tmp_path / "before.txt").write_text(before)
    (tmp_path / "after.txt").write_text(after)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "before.txt"), str(tmp_path / "after.txt")],
        capture_output=True, text=True,
    )  # fmt: skip


def test_a_moved_airflow_fails_the_install(tmp_path):
    result = _check(tmp_path, "apache-airflow==3.3.2\nrich==14.0.0\n", "apache-airflow==3.3.0\nrich==14.0.0\n")
    assert result.returncode == 1
    assert "apache-airflow: 3.3.2 -> 3.3.0" in result.stderr


def test_a_dependency_airflow_pins_may_not_move(tmp_path):
    from importlib import metadata

    pinned = next(
        r.split("<")[0].split("=")[0].strip()
        for r in metadata.requires("apache-airflow-core")
        if ("<" in r or "==" in r) and "extra ==" not in r
    )
    result = _check(tmp_path, f"{pinned}==1.0\n", f"{pinned}==0.9\n")
    assert result.returncode == 1, result.stdout


def test_unpinned_packages_may_be_re_resolved(tmp_path):
    result = _check(tmp_path, "apache-airflow==3.3.2\nsome-unpinned-lib==4.0\n", "apache-airflow==3.3.2\nsome-unpinned-lib==2.9\n")
    assert result.returncode == 0
    assert "some-unpinned-lib 4.0 -> 2.9" in result.stdout
