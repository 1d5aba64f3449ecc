"""A server process the test stops and starts again on the same port, as a restart does (MLflow, moto)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from tests.conftest import bin_path, free_port, stop_process, wait_for_http

if TYPE_CHECKING:
    from pathlib import Path


class RestartableServer:
    """
    A server process on a fixed loopback port, started by :meth:`start` and stopped by :meth:`stop`.

    :param argv: The command; ``{port}`` in it is replaced by the port.
    :param ready_path: The path answered once the server is up (``/health``).
    """

    def __init__(self, argv: list[str], ready_path: str, log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [part.replace("{port}", str(self.port)) for part in argv]
        self.ready_url = f"{self.url}{ready_path}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.back_at: float | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_for_http(self.ready_url, proc=self.proc)
        self.back_at = time.monotonic()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def start_after(self, seconds: float) -> threading.Thread:
        """Start the server again *seconds* from now, in a thread (join it before checking :attr:`back_at`)."""

        def restart() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=restart, name=f"restart-{self.port}", daemon=True)
        thread.start()
        return thread


def mlflow_server(root: Path) -> RestartableServer:
    """An ``mlflow server`` with a SQLite store in *root*: what it stored survives a restart."""
    return RestartableServer(
        [
            bin_path("mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
        ],
        "/health",
        root / "mlflow-server.log",
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip


def moto_server(root: Path) -> RestartableServer:
    """A moto S3 server (in memory: a restart empties it)."""
    return RestartableServer(
        [bin_path("moto_server"), "-H", "127.0.0.1", "-p", "{port}"], "/moto-api/", root / "s3-server.log"
    )
