"""
The local deploy target for real: ``mlflow models serve`` processes on loopback behind a fixed port.

One scenario per module (model servers start slowly): v1 and v2 are tiny classifiers that always predict 0 and
1; v3 raises on predict; v4 loads but returns one prediction per request. The tests run in file order and
each one starts from "v2 serves".
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    DeploymentError,
    DeploymentVerificationError,
    InfraValidationError,
    ModelVersionNotFoundError,
    RegistryError,
)
from airflow_mlops.lineage.deployments import read_history, read_version_history
from airflow_mlops.operators.deployment import DeployModelOperator, InfraValidateOperator
from airflow_mlops.serving.local import LocalServerTarget
from tests.conftest import free_port
from tests.support.context import context_for
from tests.support.deploy import (
    approve_version,
    http_predict,
    register_version,
    stop_local_processes,
)

pytestmark = pytest.mark.integration

MODEL = "local_target_churn"
ROWS = [{"tenure_months": 3.0, "monthly_spend": 42.0}, {"tenure_months": 12.0, "monthly_spend": 80.5}]


@pytest.fixture(scope="module")
def versions(mlflow_server, client) -> dict[str, str]:
    """Every version passed the gate and was approved: deploying needs both."""
    registered = {
        kind: register_version(mlflow_server.uri, MODEL, kind)
        for kind in ("zeros", "ones", "raises", "one_prediction")
    }
    for version in registered.values():
        approve_version(client, MODEL, version)
    return registered


@pytest.fixture(scope="module")
def target_config(tmp_path_factory):
    config = {"kind": "local", "port": free_port(), "state_dir": str(tmp_path_factory.mktemp("serving"))}
    yield config
    LocalServerTarget.from_config(config).stop(MODEL)
    stop_local_processes()


def deploy(target_config, version, holdout, task_id="deploy", run_id=None, **kwargs):
    """Deploy *version* as the task *task_id* of a new DAG run (or of the run *run_id*: a retry)."""
    op = DeployModelOperator(
        task_id=task_id, model_name=MODEL, version=version, target=target_config, sample_data=holdout,
        drop_columns=["label"], **kwargs,
    )  # fmt: skip
    return op.execute(context_for(op, run_id=run_id or f"manual__{uuid.uuid4().hex[:8]}"))


def infra_validate(target_config, version, holdout):
    op = InfraValidateOperator(
        task_id="infra_validate", model_name=MODEL, version=version, target=target_config, sample_data=holdout,
        drop_columns=["label"], sample_rows=5,
    )  # fmt: skip
    return op.execute(context_for(op))


def running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def champion(client) -> str | None:
    return client.get_registered_model(MODEL).aliases.get(T.CHAMPION)


def test_deploying_v1_then_v2_switches_what_the_same_endpoint_serves(
    target_config, versions, holdout, client
):
    v1, v2 = versions["zeros"], versions["ones"]
    endpoint = f"http://127.0.0.1:{target_config['port']}"

    first = deploy(target_config, v1, holdout)
    assert first["endpoint"] == endpoint
    assert http_predict(endpoint, ROWS) == ([0, 0], v1)
    assert champion(client) == v1
    v1_server = LocalServerTarget.from_config(target_config).current(MODEL)

    second = deploy(target_config, v2, holdout, run_id="manual__v2")
    assert second["endpoint"] == endpoint
    assert second["previous_version"] == v1
    assert http_predict(endpoint, ROWS) == ([1, 1], v2)
    assert champion(client) == v2
    assert not running(v1_server.details["pid"]), "v1's model server was not stopped"

    # The state file is where a later task (or the rollback DAG) finds the server.
    state = json.loads(Path(target_config["state_dir"], MODEL, "state.json").read_text())
    assert state["server"]["version"] == v2
    assert state["server"]["model_uri"] == f"models:/{MODEL}/{v2}"
    assert {"pid", "port", "started_at", "log"} <= set(state["server"])

    history = read_history(client, MODEL)
    assert [(e["action"], e["version"], e["outcome"]) for e in history] == [
        ("deploy", v1, "succeeded"),
        ("deploy", v2, "succeeded"),
    ]
    assert history[-1]["actor"] == "alice"
    assert history[-1]["endpoint"] == endpoint
    assert read_version_history(client, MODEL, v2)[-1]["verify"]["sample_data"] == holdout


def test_a_retried_deploy_changes_nothing(target_config, versions, holdout, client):
    target = LocalServerTarget.from_config(target_config)
    before = target.current(MODEL)

    result = deploy(target_config, versions["ones"], holdout, run_id="manual__v2")  # a retry of that task

    assert (result["version"], result["outcome"]) == (versions["ones"], "succeeded")  # the same release
    assert target.current(MODEL).details["pid"] == before.details["pid"]
    assert len(read_history(client, MODEL)) == 2  # the same task instance writes no entry twice


def test_a_later_task_finds_the_server_from_the_target_config(target_config, versions):
    target = LocalServerTarget.from_config(json.loads(json.dumps(target_config)))

    current = target.current(MODEL)

    assert current.version == versions["ones"]
    assert current.ready
    assert target.health(current).ok
    assert target.predict(current, ROWS) == [1, 1]


def test_the_endpoint_status_tells_only_the_serving_version(target_config, versions):
    import requests

    target = LocalServerTarget.from_config(target_config)
    current = target.current(MODEL)

    response = requests.get(f"http://127.0.0.1:{target_config['port']}/_mlops/proxy", timeout=10)

    assert response.json() == {"proxy": "ok", "version": versions["ones"]}
    state = json.loads(Path(target_config["state_dir"], MODEL, "state.json").read_text())
    for private in (state["proxy"]["pid"], state["server"]["pid"], state["server"]["port"]):
        assert str(private) not in response.text
    assert target_config["state_dir"] not in response.text
    # The target itself knows its processes from its state file.
    assert current.ready
    assert current.details["proxy_pid"] == state["proxy"]["pid"]


def test_server_args_binding_beyond_loopback_are_refused_and_nothing_starts(target_config, versions, holdout):
    from airflow_mlops.serving import local

    children = set(local._CHILDREN)
    exposed = {**target_config, "server_args": ["-h", "0.0.0.0"]}

    with pytest.raises(ValueError, match="may not contain '-h'.*'host' setting"):
        deploy(exposed, versions["zeros"], holdout, task_id="deploy_exposed")

    assert set(local._CHILDREN) == children
    assert http_predict(f"http://127.0.0.1:{target_config['port']}", ROWS) == ([1, 1], versions["ones"])


def test_infra_validation_of_a_servable_model_records_latency(target_config, versions, holdout, client):
    result = infra_validate(target_config, versions["ones"], holdout)

    assert result["passed"] is True
    assert result["requests"] == 6
    assert result["rows"] == 5
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["max"]
    tags = client.get_model_version(MODEL, versions["ones"]).tags
    assert tags[T.INFRA_VALIDATION_PASSED] == "true"
    assert json.loads(tags[T.INFRA_VALIDATION_SUMMARY])["latency_ms"] == result["latency_ms"]


def test_infra_validation_stops_a_model_that_raises_before_it_serves(
    target_config, versions, holdout, client
):
    v2, v3 = versions["ones"], versions["raises"]

    with pytest.raises(InfraValidationError, match="feature store unreachable") as err:
        infra_validate(target_config, v3, holdout)

    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (MODEL, v3)
    assert "request 1 of 6 failed" in str(err.value)
    assert json.loads(client.get_model_version(MODEL, v3).tags[T.INFRA_VALIDATION_SUMMARY])["requests"] == 1

    assert f"Version {v3}" in str(err.value)
    assert "HTTP" in str(err.value)
    assert client.get_model_version(MODEL, v3).tags[T.INFRA_VALIDATION_PASSED] == "false"
    assert champion(client) == v2
    assert http_predict(f"http://127.0.0.1:{target_config['port']}", ROWS) == ([1, 1], v2)


def test_a_version_failing_the_smoke_test_is_rolled_back_automatically(
    target_config, versions, holdout, client
):
    v2, v4 = versions["ones"], versions["one_prediction"]
    client.set_registered_model_alias(MODEL, T.CHAMPION, v4)  # as the promote task would have done

    with pytest.raises(DeploymentVerificationError, match="smoke test failed") as err:
        deploy(target_config, v4, holdout, task_id="deploy_v4")

    assert f"version {v2} serves again" in str(err.value)
    assert err.value.retryable is False
    assert (err.value.model, err.value.version) == (MODEL, v4)
    assert err.value.reason.startswith("smoke test failed")
    assert http_predict(f"http://127.0.0.1:{target_config['port']}", ROWS) == ([1, 1], v2)
    assert champion(client) == v2
    history = read_history(client, MODEL)
    assert [(e["action"], e["version"], e["outcome"]) for e in history[-2:]] == [
        ("deploy", v4, "failed"),
        ("auto_rollback", v2, "succeeded"),
    ]
    assert "smoke test failed" in history[-1]["reason"]
    assert "smoke test failed" in client.get_model_version(MODEL, v4).tags[T.ROLLBACK_REASON]


def test_a_port_already_taken_is_refused_and_nothing_changes(target_config, versions, holdout, client):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(DeploymentError, match=f"Port {taken} .* already in use") as err:
            deploy({**target_config, "port": taken}, versions["zeros"], holdout, task_id="deploy_taken")

    assert (err.value.model, err.value.version) == (MODEL, versions["zeros"])

    assert http_predict(f"http://127.0.0.1:{target_config['port']}", ROWS) == ([1, 1], versions["ones"])
    assert champion(client) == versions["ones"]


def test_a_model_uri_that_does_not_resolve_is_refused_and_nothing_changes(target_config, versions):
    target = LocalServerTarget.from_config(target_config)

    with pytest.raises(DeploymentError, match="exited with code") as err:
        target.deploy(MODEL, "99", f"models:/{MODEL}/99")

    assert "Nothing was changed" in str(err.value)
    assert "Server log" in str(err.value)
    assert target.current(MODEL).version == versions["ones"]
    assert http_predict(f"http://127.0.0.1:{target_config['port']}", ROWS) == ([1, 1], versions["ones"])


def test_deploying_a_version_that_does_not_exist_fails_before_anything_starts(target_config, holdout):
    with pytest.raises(RegistryError, match="has no version 99") as err:
        deploy(target_config, 99, holdout, task_id="deploy_99")

    assert isinstance(err.value, ModelVersionNotFoundError)
    assert err.value.retryable is False
