"""
An infra-validation sandbox does not outlive its task: a real process starts a sandbox of the local target
(``mlflow models serve`` on a spare port, as ``InfraValidateOperator`` does) and is killed with SIGKILL.

The sandbox dies with it (Linux parent-death signal); where that signal is missing, the record written before
the sandbox started lets the task's retry stop it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from airflow_mlops.serving.local import LocalServerTarget, port_is_free
from tests.conftest import free_port
from tests.kill.support import REPO
from tests.support.deploy import register_version, stop_local_processes

pytestmark = pytest.mark.integration

MODEL = "local_sandbox_kill"

#: The infra-validation step in a process of its own: start the sandbox, say where it runs, wait to be killed.
#: argv: state_dir, version, "no-pdeathsig" to run as on a platform without prctl (a fault injected here).
TASK = """
import json, sys, time
import airflow_mlops.serving.local as local

if sys.argv[3] == "no-pdeathsig":
    local.set_parent_death_signal = lambda: None
target = local.LocalServerTarget(state_dir=sys.argv[1], mlflow_conn_id=None, port=int(sys.argv[4]))
sandbox = target.start_sandbox("local_sandbox_kill", sys.argv[2], f"models:/local_sandbox_kill/{sys.argv[2]}")
print("SANDBOX", json.dumps(sandbox.details), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def version(mlflow_server) -> str:
    return register_version(mlflow_server.uri, MODEL, "ones")


@pytest.fixture
def target(tmp_path):
    target = LocalServerTarget(state_dir=str(tmp_path / "serving"), mlflow_conn_id=None, port=free_port())
    yield target
    stop_local_processes()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def kill_task_with_sandbox(mlflow_server, target, version, mode: str) -> dict:
    """Start the sandbox in a task process, SIGKILL the process once the sandbox serves; the sandbox's details."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    task = subprocess.Popen(
        [sys.executable, "-c", TASK, target.state_dir, version, mode, str(target.port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = iter(task.stdout.readline, "")
        line = next((line for line in lines if line.startswith("SANDBOX ")), "")
        assert line, f"the task process ended before its sandbox served (exit code {task.wait()})"
        details = json.loads(line.removeprefix("SANDBOX "))
        assert (target.sandbox_dir(MODEL) / f"{details['port']}.json").exists()
    finally:
        task.send_signal(signal.SIGKILL)
        task.wait(timeout=30)
    return details


def test_a_sandbox_dies_with_the_task_process_that_started_it(mlflow_server, target, version):
    sandbox = kill_task_with_sandbox(mlflow_server, target, version, "pdeathsig")

    assert wait_for(lambda: not running(sandbox["pid"]), timeout=30)
    assert wait_for(lambda: port_is_free("127.0.0.1", sandbox["port"]), timeout=30)
    # Its record stays until the model's next sandbox looks, which forgets it: nothing left to stop.
    assert (target.sandbox_dir(MODEL) / f"{sandbox['port']}.json").exists()
    assert target.stop_leaked_sandboxes(MODEL) == []
    assert list(target.sandbox_dir(MODEL).glob("*.json")) == []


def test_a_sandbox_left_running_is_stopped_by_the_retry(mlflow_server, target, version, caplog):
    sandbox = kill_task_with_sandbox(mlflow_server, target, version, "no-pdeathsig")
    time.sleep(2)
    assert running(sandbox["pid"]), "without the parent-death signal the sandbox outlives its task"

    retry = target.start_sandbox(MODEL, version, f"models:/{MODEL}/{version}")
    try:
        assert not running(sandbox["pid"])
        assert port_is_free("127.0.0.1", sandbox["port"]) or retry.details["port"] == sandbox["port"]
        assert "Stopped the infra-validation sandbox of version" in caplog.text
        records = sorted(p.name for p in target.sandbox_dir(MODEL).glob("*.json"))
        assert records == [f"{retry.details['port']}.json"]
    finally:
        target.stop_sandbox(retry)
    assert list(target.sandbox_dir(MODEL).glob("*.json")) == []
    assert not running(retry.details["pid"])
