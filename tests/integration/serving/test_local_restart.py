"""
The local target keeps a model served when its model server dies: real ``mlflow models serve`` processes
behind the endpoint proxy, killed with ``kill -9``.

One scenario, in file order: a version is deployed with ``max_restarts=2``; another model asking for its port
is refused; its model server is killed (the watchdog starts it again), then the server and its watchdog
together (``current()`` starts it again), then the server once more: past the bound nothing starts it, and
``health()`` says why.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import requests

from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.serving.local import LocalServerTarget, PortInUseError
from airflow_mlops.version_compat import AirflowFailException
from tests.conftest import free_port
from tests.support.deploy import register_version, stop_local_processes

pytestmark = pytest.mark.integration

MODEL = "local_restart_churn"
ROWS = [{"tenure_months": 3.0, "monthly_spend": 42.0}, {"tenure_months": 12.0, "monthly_spend": 80.5}]


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    version = register_version(mlflow_server.uri, MODEL, "ones")
    config = {
        "kind": "local",
        "port": free_port(),
        "state_dir": str(tmp_path_factory.mktemp("serving")),
        "max_restarts": 2,
        "restart_window": 600,
    }
    target = LocalServerTarget.from_config(config)
    target.deploy(MODEL, version, f"models:/{MODEL}/{version}")
    yield target, version
    target.stop(MODEL)
    stop_local_processes()


def predict(target) -> tuple[int, str | None]:
    try:
        response = requests.post(
            f"{target.endpoint}/invocations", json={"dataframe_records": ROWS}, timeout=30
        )
    except requests.RequestException:
        return 0, None
    return response.status_code, response.headers.get("X-MLOps-Model-Version")


def wait_until(condition, timeout: float = 120.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:.0f}s: {condition}")


def model_server(target) -> psutil.Process | None:
    """The running ``mlflow models serve`` process under the watchdog the state file names."""
    watchdog = psutil.Process(target.read_state(MODEL)["server"]["pid"])
    for child in watchdog.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "models" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_another_model_on_the_same_port_is_a_configuration_error_naming_the_model_that_holds_it(served):
    target, version = served
    other = LocalServerTarget.from_config(target.to_config())

    with pytest.raises(PortInUseError) as err:
        other.deploy("other_model", "1", "models:/other_model/1")

    assert isinstance(err.value, ConfigurationError)
    assert isinstance(err.value, AirflowFailException)  # Airflow fails the task without spending retries
    assert err.value.retryable is False
    assert err.value.holder == MODEL
    assert f"Port {target.port} on 127.0.0.1 is the endpoint of model {MODEL!r}" in str(err.value)
    assert "'serving_port' param" in str(err.value)
    assert other.read_state("other_model") is None
    assert predict(target) == (200, version)


def test_a_killed_model_server_is_started_again_and_the_endpoint_answers(served):
    target, version = served
    assert predict(target) == (200, version)
    server = model_server(target)

    os.kill(server.pid, signal.SIGKILL)

    wait_until(lambda: gone(server.pid))
    wait_until(lambda: target.read_state(MODEL)["restarts"])
    wait_until(lambda: predict(target) == (200, version))
    assert model_server(target).pid != server.pid
    (restart,) = target.read_state(MODEL)["restarts"]
    assert restart["by"] == "supervisor"
    assert f"pid {server.pid} killed by signal 9" in restart["reason"]
    log = open(target.read_state(MODEL)["server"]["log"]).read()
    assert "starting it again (restart 1 of at most 2" in log


def test_a_model_server_killed_with_its_watchdog_is_started_again_when_the_target_looks(served, caplog):
    target, version = served
    before = target.read_state(MODEL)["server"]
    os.killpg(before["pid"], signal.SIGKILL)  # the whole process group: watchdog, server, workers
    wait_until(lambda: gone(before["pid"]))
    assert predict(target)[0] >= 500

    deployment = target.current(MODEL)

    assert deployment.ready
    assert deployment.version == version
    assert predict(target) == (200, version)
    state = target.read_state(MODEL)
    assert state["server"]["pid"] != before["pid"]
    assert [r["by"] for r in state["restarts"]] == ["supervisor", "target"]
    assert "starting it again (restart 2 of at most 2" in caplog.text


def test_past_max_restarts_the_server_stays_down_and_health_says_why(served):
    target, version = served
    watchdog = target.read_state(MODEL)["server"]["pid"]
    deployment = target.current(MODEL)

    os.kill(model_server(target).pid, signal.SIGKILL)

    wait_until(lambda: gone(watchdog))  # the watchdog gives up and exits
    health = target.health(deployment, timeout=5)
    assert not health.ok
    assert "not started again (2 restarts in the last 600 s, max_restarts 2)" in health.message
    assert predict(target)[0] >= 500
    assert len(target.read_state(MODEL)["restarts"]) == 2
    assert "NOT started again: 2 restarts" in open(target.read_state(MODEL)["server"]["log"]).read()
    assert not target.current(MODEL).ready

    # The next deploy starts it, with the whole budget.
    target.deploy(MODEL, version, f"models:/{MODEL}/{version}")
    assert predict(target) == (200, version)
    assert target.read_state(MODEL)["restarts"] == []
