"""
Monitoring what really served, with a real MLflow server, real capture files and ``dag.test()``: null feature
values reach XCom and a retraining request, a window with mixed types is read with the signature's types and its
bad rows reported, and a dead model server behind a live endpoint is a degraded verdict, not a lack of traffic.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from types import SimpleNamespace

import pytest

from airflow_mlops.operators.monitoring import (
    LAST_RETRAINING_TAG,
    MONITORING_VERDICT_TAG,
    MonitorModelOperator,
    RequestRetrainingOperator,
    _proxy_problem,
)
from airflow_mlops.serving.capture import CaptureWriter, hour_of, parquet_bytes
from airflow_mlops.serving.local import LocalServerTarget
from tests.conftest import free_port, stop_process
from tests.support.context import context_for
from tests.support.dags import serialize_dag
from tests.support.monitoring import FEATURES, customers, make_champion

pytestmark = pytest.mark.integration

MODEL = "traffic_churn"


@pytest.fixture(scope="module")
def champion(mlflow_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("traffic")
    version = make_champion(mlflow_server.uri, root, MODEL)
    return SimpleNamespace(root=root, version=version, mlflow=mlflow_server)


def capture(root, version: str, rows: list[dict], prefix: str) -> None:
    """Production traffic as the serving side captures it (the model's signature known)."""
    writer = CaptureWriter(str(root), signature={"tenure_months": "double", "monthly_spend": "double"})
    for index, row in enumerate(rows):
        body = json.dumps({"dataframe_records": [row]}).encode()
        writer.submit(MODEL, version, f"{prefix}-{index}", 200, body, json.dumps({"predictions": [1]}).encode())
    writer.close()


def test_null_feature_values_reach_xcom_and_the_retraining_request_runs(champion, airflow_db, tmp_path):
    from airflow.sdk import DAG
    from mlflow import MlflowClient

    frame = customers(300, seed=3)
    rows = [{f: (None if index % 3 == 0 and f == "monthly_spend" else r[f]) for f in FEATURES}
            for index, r in enumerate(frame.to_dict("records"))]  # fmt: skip
    capture(tmp_path, champion.version, rows, "nulls")
    with DAG(
        "mlops_test_monitoring_nulls", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC),
        render_template_as_native_obj=True,
    ) as dag:  # fmt: skip
        monitor = MonitorModelOperator(
            task_id="monitor", model_name=MODEL, capture_uri=str(tmp_path), min_records=100, aws_conn_id=None,
            window=timedelta(hours=2), window_end=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        )  # fmt: skip
        retrain = RequestRetrainingOperator(
            task_id="request_retraining", model_name=MODEL, monitoring="{{ ti.xcom_pull(task_ids='monitor') }}",
            cooldown=0,
        )  # fmt: skip
        monitor >> retrain
    serialize_dag(dag)

    dag_run = dag.test()

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {"monitor": "success", "request_retraining": "success"}
    ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "monitor")
    result = ti.xcom_pull(task_ids="monitor")
    assert result["verdict"] == "degraded"
    assert result["data_quality"]["success"] is False
    assert any(r.startswith("data quality: expect_column_values_to_not_be_null(monthly_spend") for r in
               result["reasons"])  # fmt: skip
    json.dumps(result, allow_nan=False)
    client = MlflowClient(champion.mlflow.uri)
    tags = client.get_registered_model(MODEL).tags
    assert json.loads(tags[LAST_RETRAINING_TAG])["airflow"]["run_id"] == dag_run.run_id
    json.loads(tags[MONITORING_VERDICT_TAG], parse_constant=lambda c: pytest.fail(f"{c} in the verdict tag"))


def test_a_window_with_mixed_types_is_monitored_and_its_bad_rows_reported(champion, tmp_path):
    good = customers(150, seed=4)
    capture(tmp_path, champion.version, good[FEATURES].to_dict("records"), "good")
    # A file from before the capture knew the signature: a client's "ten" made the column text.
    now = datetime.now(UTC)
    folder = tmp_path / "captures" / f"model={MODEL}" / f"hour={hour_of(now)}"
    records = [
        {"tenure_months": value, "monthly_spend": 55.0, "_request_id": f"old-{i}", "_row": 0, "_timestamp": now,
         "_model": MODEL, "_version": champion.version, "_status": 200, "_prediction": 1}
        for i, value in enumerate(["12", "ten", "7.5"])
    ]  # fmt: skip
    (folder / "part-old.parquet").write_bytes(parquet_bytes(records))
    op = MonitorModelOperator(
        task_id="monitor_mixed", model_name=MODEL, capture_uri=str(tmp_path), min_records=100, aws_conn_id=None,
    )  # fmt: skip

    result = op.execute(context_for(op))

    assert result["records"] == 152
    assert result["bad_rows"] == {"count": 1, "columns": ["tenure_months"]}
    assert result["verdict"] in ("healthy", "degraded")
    assert result["feature_drift"]["features"]["tenure_months"]["kind"] == "numeric"


@pytest.fixture
def dead_backend_endpoint(tmp_path):
    """A real endpoint proxy whose model server is gone (as after a kill -9), in a local target's state."""
    port, dead_port = free_port(), free_port()
    target = LocalServerTarget(port=port, state_dir=str(tmp_path / "serving"), max_restarts=0)
    state_path = target.state_path(MODEL)
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps({
        "endpoint": f"http://127.0.0.1:{port}", "model_name": MODEL,
        "proxy": {"host": "127.0.0.1", "port": port},
        "server": {"pid": 2**22 + 7, "create_time": 1.0, "port": dead_port, "host": "127.0.0.1", "version": "1",
                   "model_uri": f"models:/{MODEL}/1", "started_at": "2026-12-05T10:00:00+00:00"},
    }))  # fmt: skip
    proxy = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving.proxy", "--port", str(port), "--state", str(state_path)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:  # listening (its status may well say the backend is down)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proxy.poll() is None, "the proxy exited"
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.1)
    yield target
    stop_process(proxy)


def test_a_dead_model_server_is_a_degraded_verdict_not_a_lack_of_traffic(champion, dead_backend_endpoint, tmp_path):
    op = MonitorModelOperator(
        task_id="monitor_dead", model_name=MODEL, capture_uri=str(tmp_path), min_records=100, aws_conn_id=None,
        target=dead_backend_endpoint, wait_for_traffic=timedelta(minutes=10),
    )  # fmt: skip

    result = op.execute(context_for(op))  # no wait for traffic that cannot come

    assert result["verdict"] == "degraded"
    assert result["reasons"][0].startswith(f"endpoint unavailable: GET {dead_backend_endpoint.endpoint}/ping")
    assert "502" in result["reasons"][0]
    assert result["endpoint"] == {"available": False, "reason": result["reasons"][0]}
    assert result["records"] == 0
    # A new model would not bring the endpoint back: no retraining is asked for (nor a cool-down started).
    from airflow.sdk.exceptions import AirflowSkipException

    retrain = RequestRetrainingOperator(task_id="retrain_dead", model_name=MODEL, monitoring=result, cooldown=0)
    with pytest.raises(AirflowSkipException, match="retraining would not bring the endpoint"):
        retrain.execute(context_for(retrain))


class _Unhealthy(BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps({"proxy": "degraded", "message": "model server of version 3 is not running"}).encode()
        self.send_response(503)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_proxy_status_other_than_200_says_why_the_endpoint_is_unavailable():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        problem = _proxy_problem(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()

    assert problem == (
        f"endpoint unavailable: GET http://127.0.0.1:{server.server_address[1]}/_mlops/proxy answered HTTP 503: "
        "model server of version 3 is not running"
    )
