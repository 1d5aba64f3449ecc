"""
How long the local target's endpoint fails after its model server is killed: ``kill -9`` of the model server
(its watchdog starts it again), and of the server with its watchdog (the target starts it again when it looks).

A tiny scikit-learn classifier registered in a real ``mlflow server`` is deployed once on the local target
(``max_restarts`` high enough for every run); each run kills (the model server with its uvicorn worker, or
their whole process group with the watchdog), then sends ``POST /invocations`` through the
endpoint every 0.1 s until one answers 200, and records the seconds from the kill to that answer and how many
requests failed meanwhile. In the second kind the target's ``current()`` is called once the watchdog is gone
(what a deploy, rollback or monitoring task does when it looks at the endpoint); it returns once the new
server answers, so no request fails meanwhile.

    python benchmarks/local_restart.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import bin_path, free_port, stop_process, wait_for_http  # noqa: E402 - isolated AIRFLOW_HOME

MODEL = "bench_restart"
ROWS = [{"tenure_months": 3.0, "monthly_spend": 42.0}]


def answers(endpoint: str) -> bool:
    import requests

    try:
        response = requests.post(f"{endpoint}/invocations", json={"dataframe_records": ROWS}, timeout=5)
    except requests.RequestException:
        return False
    return response.status_code == 200


def recover(target, kill, timeout: float = 300.0) -> tuple[float, int]:
    """Seconds from *kill* () to the endpoint's first 200, and the requests that failed meanwhile."""
    started = time.perf_counter()
    kill()
    failed = 0
    while not answers(target.endpoint):
        failed += 1
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"the endpoint did not answer within {timeout:.0f} s of the kill")
        time.sleep(0.1)
    return time.perf_counter() - started, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    import psutil

    from airflow_mlops.serving.local import LocalServerTarget
    from tests.support.deploy import register_version

    results: dict[str, list[tuple[float, int]]] = {"watchdog": [], "target": []}
    with tempfile.TemporaryDirectory(prefix="restart-bench-") as tmp:
        folder = Path(tmp)
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        log = open(folder / "mlflow.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [bin_path("mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        os.environ["MLFLOW_TRACKING_URI"] = uri
        target = LocalServerTarget(
            port=free_port(), state_dir=str(folder / "serving"), mlflow_conn_id=None,
            max_restarts=4 * args.runs, restart_window=3600,
        )  # fmt: skip
        try:
            wait_for_http(f"{uri}/health", timeout=300, proc=proc)
            version = register_version(uri, MODEL, "ones")
            target.deploy(MODEL, version, f"models:/{MODEL}/{version}")

            def kill_server() -> None:
                # The model server and its workers, at once: a worker left shutting down would answer.
                watchdog = psutil.Process(target.read_state(MODEL)["server"]["pid"])
                for proc in watchdog.children(recursive=True):
                    os.kill(proc.pid, signal.SIGKILL)

            def kill_group_and_look() -> None:
                watchdog = psutil.Process(target.read_state(MODEL)["server"]["pid"])
                os.killpg(watchdog.pid, signal.SIGKILL)
                while watchdog.is_running() and watchdog.status() != psutil.STATUS_ZOMBIE:
                    time.sleep(0.01)  # gone, as the target sees it when it looks
                target.current(MODEL)

            for _ in range(args.runs):
                results["watchdog"].append(recover(target, kill_server))
                time.sleep(1)
                results["target"].append(recover(target, kill_group_and_look))
                time.sleep(1)
        finally:
            target.stop(MODEL)
            stop_process(proc)
            log.close()
    for kind, runs in results.items():
        seconds = [s for s, _ in runs]
        failed = [f for _, f in runs]
        print(
            f"{kind}: {len(runs)} runs, seconds from kill -9 to the first 200: median {statistics.median(seconds):.1f} "
            f"(min {min(seconds):.1f}, max {max(seconds):.1f}); failed requests median {statistics.median(failed):.0f} "
            f"(max {max(failed)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
