"""The local endpoint proxy and the servers behind it, as real processes for the proxy's tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from airflow_mlops.serving.proxy import STATUS_PATH
from tests.conftest import REPO, free_port, stop_process


@dataclass
class Running:
    """A started process and the loopback port it listens on."""

    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def write_state(path: Path, backend_port: int, version: str = "3", **extra) -> None:
    """The local target's state file naming the model server on *backend_port* (and *extra* entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    server = {"pid": 424242, "host": "127.0.0.1", "port": backend_port, "version": version}
    path.write_text(json.dumps({"model_name": "churn", "server": server, **extra}))


def wait_until_answering(
    url: str, proc: subprocess.Popen, log: Path | None = None, timeout: float = 60
) -> None:
    """Wait until *url* gives any HTTP answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}: {detail}"
            assert time.monotonic() < deadline, f"{url} did not answer: {detail}"
            time.sleep(0.05)


def start_proxy(state: Path, *args: str) -> Running:
    """``python -m airflow_mlops.serving.proxy`` on a free port for *state*, with extra command-line *args*."""
    port = free_port()
    log = state.parent / f"proxy-{port}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_mlops.serving.proxy",
            "--port",
            str(port),
            "--state",
            str(state),
            *args,
        ],
        stderr=log.open("wb"),  # a pipe nobody reads would fill with the access log and stop the proxy
        cwd=REPO,
    )
    wait_until_answering(f"http://127.0.0.1:{port}{STATUS_PATH}", proc, log)
    return Running(proc, port)


def start_stub_model_server(port: int | None = None) -> Running:
    """:mod:`tests.support.stub_model_server` on *port* (a free one by default)."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.stub_model_server", "--port", str(port)],
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    wait_until_answering(f"http://127.0.0.1:{port}/ping", proc)
    return Running(proc, port)


def save_sklearn_model(folder: Path) -> Path:
    """A 20-feature scikit-learn classifier saved with MLflow under *folder*."""
    import numpy as np
    import pandas as pd
    from mlflow.sklearn import save_model
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 20)), columns=[f"f{i}" for i in range(20)])
    labels = (frame["f0"] + frame["f1"] > 0).astype(int)
    path = folder / "model"
    save_model(LogisticRegression().fit(frame, labels), str(path), pip_requirements=["scikit-learn"])
    return path


def start_model_server(model: Path, log: Path) -> Running:
    """``mlflow models serve`` (one worker, the current environment) for *model* on a free port."""
    import os

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model), "-h", "127.0.0.1",
         "-p", str(port), "-w", "1", "--env-manager", "local"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        # mlflow models serve starts uvicorn by name: the interpreter's bin directory comes first.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    wait_until_answering(f"http://127.0.0.1:{port}/ping", proc, log, timeout=180)
    return Running(proc, port)
