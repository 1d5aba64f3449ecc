"""The wheel and sdist built from the repo carry the license, the type marker and the provider's metadata."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_BUILD = """
import sys
from hatchling.build import build_sdist, build_wheel
print(build_wheel(sys.argv[1]))
print(build_sdist(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    # The PEP 517 hooks of the build backend, run in the repo as any frontend (pip, uv, build) runs them.
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out)], cwd=REPO, capture_output=True, text=True, check=True
    )
    wheel, sdist = result.stdout.split()[-2:]
    return out / wheel, out / sdist


def test_the_wheel_carries_license_notice_type_marker_and_no_tests(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        license_text = archive.read(f"{dist_info}/licenses/LICENSE").decode()
    assert f"{dist_info}/licenses/NOTICE" in names
    assert "Apache License" in license_text
    assert "Version 2.0, January 2004" in license_text
    assert "airflow_mlops/py.typed" in names
    assert "airflow_mlops/get_provider_info.py" in names
    assert not [name for name in names if name.startswith(("tests/", "dags/", "benchmarks/"))]
    assert not [name for name in names if "__pycache__" in name]

    assert metadata["Name"] == "airflow-provider-mlops"
    assert metadata["License-Expression"] == "Apache-2.0"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Changelog"} <= set(urls)
    requires = metadata.get_all("Requires-Dist")
    assert any(req.startswith("apache-airflow>=3.1") for req in requires)
    # common-sql and the Amazon provider are extras, not requirements of every install.
    extras_of = {}
    for req in requires:
        name, _, marker = req.partition(";")
        extras_of.setdefault(name.split(">")[0].strip(), set()).add(
            marker.split("==")[-1].strip(" '\"") or None
        )
    assert None not in extras_of["apache-airflow-providers-common-sql"]
    assert "sql" in extras_of["apache-airflow-providers-common-sql"]
    assert None not in extras_of["apache-airflow-providers-amazon"]
    assert "amazon" in extras_of["apache-airflow-providers-amazon"]
    assert {"amazon", "sql", "test"} <= set(metadata.get_all("Provides-Extra"))
    assert "provider_info = airflow_mlops.get_provider_info:get_provider_info" in entry_points


def test_the_sdist_carries_license_notice_changelog_and_tests(built):
    _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {
        "LICENSE",
        "NOTICE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "airflow_mlops/py.typed",
    } <= names
    assert any(name.startswith("tests/unit/") for name in names)
    assert not [name for name in names if "__pycache__" in name or name.startswith(".venv")]
