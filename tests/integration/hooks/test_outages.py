"""
A restart of MLflow or of the S3 store is waited out; a longer outage fails retryable, saying what and how long.

Each test stops a server process of its own (not the session's) and starts it again on the same port. A
password in an endpoint URL reaches neither an error nor a log.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback

import pytest

from airflow_mlops.exceptions import (
    ConfigurationError,
    ServiceUnavailableError,
    StorageUnavailableError,
)
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.utils.config import service_outage_timeout
from tests.conftest import free_port, set_connection
from tests.support import outages

MLFLOW_OUTAGE_S = 20.0
S3_OUTAGE_S = 15.0
SECRET = f"endpoint-secret-{secrets.token_hex(6)}"


@pytest.fixture(scope="module")
def restarting_mlflow(tmp_path_factory):
    server = outages.mlflow_server(tmp_path_factory.mktemp("mlflow-outage"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def restarting_s3(tmp_path_factory):
    server = outages.moto_server(tmp_path_factory.mktemp("s3-outage"))
    server.start()
    yield server
    server.stop()


def _in_thread(results: dict, key: str, call) -> threading.Thread:
    def run() -> None:
        try:
            results[key] = call()
        except Exception as err:
            results[key] = err

    thread = threading.Thread(target=run, name=key, daemon=True)
    thread.start()
    return thread


def test_the_outage_window_is_an_mlops_option_of_five_minutes(monkeypatch):
    monkeypatch.delenv("AIRFLOW__MLOPS__SERVICE_OUTAGE_TIMEOUT", raising=False)
    assert service_outage_timeout() == 300.0
    monkeypatch.setenv("AIRFLOW__MLOPS__SERVICE_OUTAGE_TIMEOUT", "-1")
    with pytest.raises(ConfigurationError, match="service_outage_timeout"):
        service_outage_timeout()


def test_mlflow_calls_made_while_the_server_restarts_succeed_once_it_is_back(restarting_mlflow, capsys):
    set_connection("mlflow_outage", conn_type="mlflow", host=restarting_mlflow.url)
    client = MLflowHook("mlflow_outage", outage_timeout=180).get_conn()
    client.create_registered_model("outage_model")

    restarting_mlflow.stop()
    down_at = time.monotonic()
    restart = restarting_mlflow.start_after(MLFLOW_OUTAGE_S)
    results: dict = {}
    # A task that starts during the outage (get_conn waits for /health), beside one whose call is under way.
    starting = _in_thread(
        results,
        "new task",
        lambda: [m.name for m in MLflowHook("mlflow_outage", outage_timeout=180).get_conn().search_registered_models()],
    )
    model = client.get_registered_model("outage_model")
    restart.join()
    starting.join(timeout=240)

    assert model.name == "outage_model"
    assert results["new task"] == ["outage_model"]
    assert restarting_mlflow.back_at - down_at >= MLFLOW_OUTAGE_S
    logged = capsys.readouterr()  # the hooks log through Airflow's structured logging
    assert f"MLflow server {restarting_mlflow.url} is unreachable" in logged.out + logged.err
    assert "trying again in" in logged.out + logged.err


#: How long MLflow is down in the longest test: a restart on a busy machine, well inside the default window.
LONG_OUTAGE_S = 180.0


def test_a_registration_made_while_mlflow_is_down_for_three_minutes_succeeds_with_one_version(
    restarting_mlflow, monkeypatch
):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.operators.registry import RegisterModelOperator
    from tests.support.context import context_for

    monkeypatch.delenv("AIRFLOW__MLOPS__SERVICE_OUTAGE_TIMEOUT", raising=False)  # the default: 300 s
    set_connection("mlflow_outage", conn_type="mlflow", host=restarting_mlflow.url)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(restarting_mlflow.url)
    try:
        with mlflow.start_run(experiment_id=mlflow.create_experiment("long-outage")) as run:
            info = mlflow.sklearn.log_model(
                LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model", pip_requirements=["scikit-learn"]
            )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    op = RegisterModelOperator(
        task_id="register", model_name="long_outage", model_uri=info.model_uri, mlflow_conn_id="mlflow_outage"
    )

    restarting_mlflow.stop()
    down_at = time.monotonic()
    restart = restarting_mlflow.start_after(LONG_OUTAGE_S)
    # The task starts while MLflow is down and finishes once it is back, as one try.
    result = op.execute(context_for(op))
    restart.join()

    assert restarting_mlflow.back_at - down_at >= LONG_OUTAGE_S
    assert (result["model_name"], result["version"], result["run_id"]) == ("long_outage", 1, run.info.run_id)
    client = MLflowHook("mlflow_outage").get_conn()
    assert [v.version for v in client.search_model_versions("name='long_outage'")] == ["1"]


def test_an_mlflow_outage_longer_than_the_window_fails_retryable_naming_server_and_time(restarting_mlflow):
    set_connection("mlflow_outage", conn_type="mlflow", host=restarting_mlflow.url)
    client = MLflowHook("mlflow_outage", outage_timeout=5).get_conn()
    restarting_mlflow.stop()  # and not started again

    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as raised:
        client.get_registered_model("outage_model")
    assert time.monotonic() - started >= 5
    message = str(raised.value)
    assert f"MLflow server {restarting_mlflow.url} (connection 'mlflow_outage') is unreachable" in message
    assert "tried for" in message
    assert "service_outage_timeout = 5 s" in message
    assert raised.value.retryable
    assert raised.value.uri == restarting_mlflow.url
    assert raised.value.waited >= 5

    with pytest.raises(ServiceUnavailableError, match=r"is unreachable: .*service_outage_timeout = 1 s"):
        MLflowHook("mlflow_outage", outage_timeout=1).get_conn()


def _storage(server, window: float):
    set_connection(
        "aws_outage", conn_type="aws", login="testing", password="testing",
        extra={"endpoint_url": server.url, "region_name": "us-east-1"},
    )  # fmt: skip
    return StorageHook("aws_outage", outage_timeout=window).get_conn()


def test_s3_calls_made_while_the_store_restarts_answer_once_it_is_back(restarting_s3, caplog):
    caplog.set_level(logging.INFO)
    storage = _storage(restarting_s3, 120)
    storage.s3.create_bucket(Bucket="outage")
    storage.write_bytes("s3://outage/a.txt", b"before")

    restarting_s3.stop()
    down_at = time.monotonic()
    restart = restarting_s3.start_after(S3_OUTAGE_S)
    results: dict = {}
    listing = _in_thread(results, "listing", lambda: storage.list_entries("s3://outage/"))
    answer = storage.exists("s3://outage/a.txt")
    restart.join()
    listing.join(timeout=180)

    # Answers of the store, not connection errors; moto keeps objects in memory, so it comes back empty.
    assert answer is False
    assert isinstance(results["listing"], FileNotFoundError)
    assert "No bucket 'outage'" in str(results["listing"])
    assert restarting_s3.back_at - down_at >= S3_OUTAGE_S
    assert f"S3 endpoint {restarting_s3.url} is unreachable" in caplog.text
    storage.s3.create_bucket(Bucket="outage")
    storage.write_bytes("s3://outage/a.txt", b"after")
    assert storage.read_bytes("s3://outage/a.txt") == b"after"


def test_an_s3_outage_longer_than_the_window_fails_retryable_naming_endpoint_object_and_time(restarting_s3):
    storage = _storage(restarting_s3, 3)
    restarting_s3.stop()  # and not started again

    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as raised:
        storage.read_bytes("s3://outage/a.txt")
    assert time.monotonic() - started >= 3
    error = raised.value
    assert f"S3 endpoint {restarting_s3.url} is unreachable (get_object s3://outage/a.txt)" in str(error)
    assert "tried for" in str(error)
    assert "outage window 3 s" in str(error)
    assert isinstance(error, ServiceUnavailableError)
    assert error.retryable
    assert isinstance(error, ConnectionError)  # what storage code outside Airflow catches
    assert error.uri == "s3://outage/a.txt"
    assert error.endpoint == restarting_s3.url
    assert error.waited >= 3


def test_a_password_in_an_endpoint_url_is_in_no_error_and_no_log(monkeypatch, caplog, capsys):
    from airflow.sdk.log import _secrets_masker

    caplog.set_level(logging.INFO)
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://ops:{SECRET}@{down}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # A connection without endpoint_url: boto3 reads AWS_ENDPOINT_URL_S3 itself.
    set_connection("aws_env_endpoint", conn_type="aws", login="testing", password="testing")
    set_connection("mlflow_userinfo", conn_type="mlflow", host=f"http://ops:{SECRET}@{down}")

    errors = []
    for conn_id in (None, "aws_env_endpoint"):
        with pytest.raises(StorageUnavailableError) as raised:
            StorageHook(conn_id, outage_timeout=1).get_conn().read_bytes("s3://bucket/key")
        errors.append(raised.value)
    with pytest.raises(ServiceUnavailableError) as raised:
        MLflowHook("mlflow_userinfo", outage_timeout=1).get_conn()
    errors.append(raised.value)

    for error in errors:
        assert down in str(error)  # the endpoint is named...
        assert SECRET not in "".join(traceback.format_exception(error))  # ...without its password, causes too
    logged = capsys.readouterr()
    assert SECRET not in caplog.text + logged.out + logged.err
    assert SECRET not in _secrets_masker().redact(f"connecting with {SECRET}")
