"""
``airflow-mlops demo`` from the built wheel, installed outside the checkout: the wheel carries the example DAGs,
they parse, the demo's stack finds and triggers them, and SIGTERM stops every process the demo started.

One stack start covers both: the demo runs from the wheel until its first run is under way, then gets SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from airflow_mlops.demo.stack import DAG_ID, free_port

pytestmark = [pytest.mark.integration, pytest.mark.live, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAG_IDS = {
    "mlops_continuous_training",
    "mlops_ingest",
    "mlops_monitoring",
    "mlops_regression",
    "mlops_rollback",
}

_BUILD = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"

_PARSE = """
import json, airflow_mlops, airflow_mlops.demo.stack as stack
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow < 3.2
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=str(stack.REPO_DAGS))  # examples off: AIRFLOW__CORE__LOAD_EXAMPLES=False
print(json.dumps({"package": airflow_mlops.__file__, "dags": str(stack.REPO_DAGS),
                  "dag_ids": sorted(bag.dag_ids), "errors": bag.import_errors}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The wheel built from the checkout, installed with --no-deps into a folder outside it."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-c", _BUILD, str(root / "dist")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    wheel = root / "dist" / built.stdout.split()[-1]
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    elsewhere = root / "elsewhere"  # no checkout here or above
    elsewhere.mkdir()
    return {"site": site, "cwd": elsewhere, "cli": site / "bin" / "airflow-mlops"}


def wheel_env(installed: dict[str, Path]) -> dict[str, str]:
    """This environment, with the installed wheel first on the path (ahead of the checkout's editable install)."""
    return {**os.environ, "PYTHONPATH": str(installed["site"])}


def stack_processes(home: Path) -> list[psutil.Process]:
    """Processes whose environment names the demo's Airflow home (the services, their workers and tasks)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AIRFLOW_HOME") == str(home / "airflow"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def command_line(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # gone meanwhile, or a zombie
        return ""


def first_task_running(airflow_url: str, timeout: float) -> bool:
    """Wait until a task of the example's first run is running; whether one was seen."""
    token = requests.post(
        f"{airflow_url}/auth/token", json={"username": "admin", "password": "admin-pw"}, timeout=30
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = requests.get(f"{airflow_url}/api/v2/dags/{DAG_ID}/dagRuns", headers=headers, timeout=30)
        for run in runs.json().get("dag_runs", []) if runs.ok else []:
            tis = requests.get(
                f"{airflow_url}/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances",
                headers=headers,
                timeout=30,
            )
            if tis.ok and any(ti["state"] == "running" for ti in tis.json()["task_instances"]):
                return True
        time.sleep(1)
    return False


def test_the_installed_wheel_ships_example_dags_that_parse(installed):
    parsed = subprocess.run(
        [sys.executable, "-c", _PARSE],
        cwd=installed["cwd"],
        env=wheel_env(installed),
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(parsed.stdout.strip().splitlines()[-1])

    assert found["package"].startswith(str(installed["site"]))  # the wheel, not the checkout
    assert found["dags"] == str(installed["site"] / "airflow_mlops" / "demo" / "dags")
    assert found["errors"] == {}
    assert EXAMPLE_DAG_IDS <= set(found["dag_ids"])


def test_the_demo_runs_from_the_wheel_and_sigterm_stops_everything_it_started(installed, tmp_path):
    home, port = tmp_path / "demo", free_port()
    log_path = tmp_path / "demo.log"
    command = [
        str(installed["cli"]), "demo", "--home", str(home), "--port", str(port),
        "--mlflow-port", str(free_port()), "--serving-port", str(free_port()), "--auto-approve",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(
            command, cwd=installed["cwd"], env=wheel_env(installed), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 240
        while f"triggered {DAG_ID}" not in log_path.read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
        output = log_path.read_text()
        assert f"triggered {DAG_ID}" in output, output[-3000:]
        assert f"DAG folder: {installed['site'] / 'airflow_mlops' / 'demo' / 'dags'}" in output
        assert first_task_running(f"http://127.0.0.1:{port}", timeout=90), "no task of the run started"

        started = {*psutil.Process(demo.pid).children(recursive=True), *stack_processes(home)}
        commands = " ".join(command_line(proc) for proc in started)
        # The services (as they name themselves), MLflow's uvicorn, the executor's workers and a task process.
        for name in ("api_server", "scheduler", "dag-processor", "triggerer", "mlflow server", "uvicorn"):
            assert name in commands, commands
        assert "LocalExecutor" in commands, commands
        assert re.search(r"airflow worker -- [0-9a-f]{8}-", commands), commands

        signalled = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=20) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(list(started), timeout=max(0.1, signalled + 20 - time.monotonic()))
        stopped_in = time.monotonic() - signalled

        assert not alive, f"left running {stopped_in:.0f}s after SIGTERM: {[command_line(p) for p in alive]}"
        assert not stack_processes(home)
        assert "stopped by SIGTERM" in log_path.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
        for proc in stack_processes(home):
            proc.kill()
