"""
What the worker-slot benchmarks share (``canary_slot_seconds.py``, ``watch_slot_seconds.py``): a real
``mlflow server`` and a local target with capture on in a fresh folder, approved versions of a model, and the
command line that measures, adds the import cost of a fresh process and writes the page's section.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.report import write_section
from tests.conftest import MLflowServer, free_port, set_connection  # isolated AIRFLOW_HOME
from tests.support.deferred import cold_import_seconds
from tests.support.deploy import (
    approve_version,
    register_version,
    stop_local_processes,
    write_holdout_snapshot,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@dataclass(frozen=True)
class LocalRelease:
    """The MLflow server's URI, the local target's config (capture on) and a holdout snapshot for the checks."""

    tracking_uri: str
    target: dict[str, Any]
    holdout: str

    def approved_versions(self, model: str, count: int) -> list[str]:
        """*count* new versions of *model* (a model answering 0), each with a passed gate and an approval."""
        from mlflow import MlflowClient

        client = MlflowClient(self.tracking_uri)
        versions = [register_version(self.tracking_uri, model, "zeros") for _ in range(count)]
        for version in versions:
            approve_version(client, model, version)
        return versions


@contextmanager
def local_release(prefix: str) -> Iterator[LocalRelease]:
    """A fresh folder with an ``mlflow server`` (the ``mlflow_default`` connection) and a local target; stopped after."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    server = MLflowServer(work)
    set_connection("mlflow_default", conn_type="mlflow", host=server.uri)
    target = {
        "kind": "local",
        "port": free_port(),
        "state_dir": str(work / "serving"),
        "capture": {"uri": str(work / "captures"), "flush_seconds": 5},
    }
    try:
        yield LocalRelease(server.uri, target, write_holdout_snapshot(work / "snapshots"))
    finally:
        stop_local_processes()
        server.stop()


def main(
    description: str,
    measure: Callable[[float, float], dict[str, Any]],
    markdown: Callable[[dict[str, Any], float], str],
    imports: str,
    section: str,
) -> None:
    """``--minutes``, ``--rate``, ``--markdown``: measure, time a fresh process's *imports*, print, write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    figures = measure(args.minutes, args.rate)
    cold = cold_import_seconds(imports)
    print(json.dumps({**figures, "cold_import": cold}, indent=2))
    if args.markdown:
        write_section(args.markdown, section, markdown(figures, cold))
