"""
What the endpoint benchmarks share: a 20-feature scikit-learn model served by ``mlflow models serve``, endpoint
proxies in front of it, and one timing loop that sends the same one-row predictions to several endpoints,
interleaved request by request in a rotating order, so that the machine's noise falls on all of them alike.

Used by ``capture_overhead.py`` and ``serving_latency.py``; not a benchmark of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_mlops.serving.local import free_port  # noqa: E402

FEATURES = [f"f{i}" for i in range(20)]
MODES = ("keep-alive", "new connection")


def save_model(folder: Path) -> Path:
    """A 20-feature logistic regression saved with MLflow under *folder*."""
    import numpy as np
    import pandas as pd
    from mlflow.sklearn import save_model
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(500, 20)), columns=FEATURES)
    labels = (frame["f0"] + frame["f1"] > 0).astype(int)
    path = folder / "model"
    save_model(LogisticRegression().fit(frame, labels), str(path), pip_requirements=["scikit-learn"])
    return path


def bodies(count: int, seed: int) -> list[bytes]:
    """*count* one-row scoring requests of random features."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        json.dumps(
            {"dataframe_records": [dict(zip(FEATURES, rng.normal(size=20).round(4).tolist(), strict=True))]}
        ).encode()
        for _ in range(count)
    ]


def wait(port: int, path: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"port {port} did not answer {path}")


def start_model_server(folder: Path, model: Path) -> tuple[subprocess.Popen, int]:
    """``mlflow models serve`` (one worker) for *model* on a free loopback port, answering ``/ping``."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model), "-h", "127.0.0.1",
         "-p", str(port), "-w", "1", "--env-manager", "local"],
        stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        # mlflow models serve starts uvicorn by name: the interpreter's bin directory comes first.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    try:
        wait(port, "/ping", server)
    except (RuntimeError, TimeoutError):
        sys.stderr.write((folder / "server.log").read_text(errors="replace")[-3000:])
        server.terminate()
        raise
    return server, port


def start_proxy(
    folder: Path, name: str, backend: int, capture: dict | None, module: str = "airflow_mlops.serving.proxy"
) -> tuple[subprocess.Popen, int]:
    """An endpoint proxy (*module*) in front of the model server on *backend*, capture on or off."""
    state = folder / name / "state.json"
    state.parent.mkdir(parents=True)
    entry = {"model_name": "bench", "server": {"host": "127.0.0.1", "port": backend, "version": "1"}}
    if capture is not None:
        entry["capture"] = capture
    state.write_text(json.dumps(entry))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), "--state", str(state)],
        stderr=open(folder / f"{name}.log", "wb"),  # noqa: SIM115
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        },
    )
    wait(port, "/_mlops/proxy", proc)
    return proc, port


def start_nginx(folder: Path, backend: int) -> tuple[subprocess.Popen, int]:
    """
    nginx (one worker) as a reverse proxy in front of the model server on *backend*, its connections to it kept.

    A reference, not a part of the package: the same hop as the endpoint proxy's without Python, to show what a
    hop costs on this machine. Needs ``nginx`` on the PATH (Debian: ``apt-get install nginx-light``).
    """
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
    root = folder / "nginx"
    root.mkdir()
    port = free_port()
    (root / "nginx.conf").write_text(
        f"""
daemon off; worker_processes 1; pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; client_body_temp_path {root}; proxy_temp_path {root};
  upstream model {{ server 127.0.0.1:{backend}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port}; tcp_nodelay on;
    location = /_mlops/proxy {{ return 200 '{{}}'; }}
    location / {{ proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
    )
    proc = subprocess.Popen(
        ["nginx", "-c", str(root / "nginx.conf"), "-p", str(root)],
        stderr=open(folder / "nginx.log", "wb"),  # noqa: SIM115
    )
    wait(port, "/_mlops/proxy", proc)
    return proc, port


def call(conn: http.client.HTTPConnection, body: bytes) -> float:
    """Milliseconds one prediction on *conn* took. :raises RuntimeError: on an answer other than 200."""
    started = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"prediction failed: HTTP {response.status}")
    return elapsed * 1000.0


def timed_round(
    ports: dict[str, int], payloads: list[bytes], mode: str = "keep-alive"
) -> dict[str, list[float]]:
    """
    Each of *payloads* sent to every endpoint of *ports*, the order rotating request by request.

    :param mode: ``keep-alive`` (one kept connection per endpoint) or ``new connection`` (one per request,
        its setup timed too).
    :return: The milliseconds of each call, per endpoint name.
    """
    names = list(ports)
    times: dict[str, list[float]] = {name: [] for name in names}
    keep = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name, port in ports.items()}
    try:
        for index, body in enumerate(payloads):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                if mode == "keep-alive":
                    times[name].append(call(keep[name], body))
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", ports[name], timeout=30)
                    try:
                        times[name].append(call(conn, body))  # the connection is opened by the request
                    finally:
                        conn.close()
    finally:
        for conn in keep.values():
            conn.close()
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min - max)`` of *values*."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))} - {fmt.format(max(values))})"


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
