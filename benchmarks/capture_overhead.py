"""
What capturing predictions costs a local prediction call: the local target's endpoint proxy with capture on
and with capture off, side by side, in front of the same ``mlflow models serve`` process.

A scikit-learn classifier (20 features) is saved with MLflow and served by ``mlflow models serve``; two endpoint
proxies (:mod:`airflow_mlops.serving.proxy`) forward to it, one with a ``capture`` entry in its state file
(captures written to a temporary folder with the default batching), one without. Each run sends
``--requests`` one-row ``POST /invocations`` calls to each proxy, alternating, over keep-alive connections,
and takes the median and the 99th percentile of each side. The target: capture adds at most 1 ms to the
median and at most 5% to the p99. Figures are the medians over ``--runs`` runs, with their spread.

    python benchmarks/capture_overhead.py [--runs 9] [--requests 400] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_mlops.serving.capture import check_capture_settings, count_captures  # noqa: E402
from airflow_mlops.serving.local import free_port  # noqa: E402

FEATURES = [f"f{i}" for i in range(20)]


def save_model(folder: Path) -> Path:
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


def call(conn: http.client.HTTPConnection, body: bytes) -> float:
    started = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"prediction failed: HTTP {response.status}")
    return elapsed * 1000.0


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--markdown", help="append the result table to this file")
    args = parser.parse_args()

    import numpy as np

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        folder = Path(tmp)
        model = save_model(folder)
        server, backend = start_model_server(folder, model)
        procs.append(server)
        try:
            store = folder / "store"
            on, on_port = start_proxy(folder, "on", backend, check_capture_settings({"uri": str(store)}))
            off, off_port = start_proxy(folder, "off", backend, None)
            procs += [on, off]
            rng = np.random.default_rng(1)
            results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
            for run in range(args.runs + 1):  # the first run warms both sides up and is not counted
                conns = {
                    "on": http.client.HTTPConnection("127.0.0.1", on_port, timeout=30),
                    "off": http.client.HTTPConnection("127.0.0.1", off_port, timeout=30),
                }
                times: dict[str, list[float]] = {"on": [], "off": []}
                for index in range(args.requests):
                    row = dict(zip(FEATURES, rng.normal(size=20).round(4).tolist(), strict=True))
                    body = json.dumps({"dataframe_records": [row]}).encode()
                    order = ("on", "off") if index % 2 == 0 else ("off", "on")
                    for side in order:
                        times[side].append(call(conns[side], body))
                for conn in conns.values():
                    conn.close()
                if run:
                    for side in ("on", "off"):
                        results[side].append((statistics.median(times[side]), p99(times[side])))
                    print(
                        f"run {run}: median off {results['off'][-1][0]:.2f} ms, on {results['on'][-1][0]:.2f} ms;"
                        f" p99 off {results['off'][-1][1]:.2f} ms, on {results['on'][-1][1]:.2f} ms",
                        flush=True,
                    )
            on.terminate()
            on.wait(timeout=30)
            from datetime import UTC, datetime, timedelta

            now = datetime.now(UTC)
            captured = count_captures(str(store), "bench", now - timedelta(hours=2), now + timedelta(hours=1))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)

    def summary(side: str, which: int) -> tuple[float, float, float]:
        values = [r[which] for r in results[side]]
        return statistics.median(values), min(values), max(values)

    delta_median = [on[0] - off[0] for on, off in zip(results["on"], results["off"], strict=True)]
    ratio_p99 = [on[1] / off[1] - 1 for on, off in zip(results["on"], results["off"], strict=True)]
    expected = (args.runs + 1) * args.requests
    lines = [
        "",
        "## Prediction capture overhead",
        "",
        f"`python benchmarks/capture_overhead.py --runs {args.runs} --requests {args.requests}`: one-row "
        f"predictions of a 20-feature scikit-learn model served by `mlflow models serve`, through the endpoint "
        f"proxy with capture on and off, alternating; {args.runs} runs of {args.requests} calls per side. "
        f"Median over runs (min - max). Captured rows written: {captured} of {expected}.",
        "",
        "| | capture off | capture on | added |",
        "|---|---|---|---|",
        "| median (ms) | {:.2f} ({:.2f} - {:.2f}) | {:.2f} ({:.2f} - {:.2f}) | {:+.2f} ms ({:+.2f} - {:+.2f}) |".format(
            *summary("off", 0), *summary("on", 0), statistics.median(delta_median), min(delta_median),
            max(delta_median),
        ),
        "| p99 (ms) | {:.2f} ({:.2f} - {:.2f}) | {:.2f} ({:.2f} - {:.2f}) | {:+.1%} ({:+.1%} - {:+.1%}) |".format(
            *summary("off", 1), *summary("on", 1), statistics.median(ratio_p99), min(ratio_p99), max(ratio_p99),
        ),
        "",
        "Target: at most +1 ms on the median and +5% on the p99.",
        "",
    ]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
