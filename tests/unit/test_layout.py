"""The package's layout holds: no import cycles between its modules (scripts/import_cycles.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("import_cycles", REPO / "scripts" / "import_cycles.py")
import_cycles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_cycles)


def test_the_package_has_no_import_cycles():
    graph = import_cycles.import_graph(REPO / "airflow_mlops")
    assert "airflow_mlops.operators.training" in graph  # the graph covers the package
    assert import_cycles.cycles(graph) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    (package / "d.py").write_text("import pkg.a\n")

    assert import_cycles.cycles(import_cycles.import_graph(package)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert import_cycles.main([str(package)]) == 1
