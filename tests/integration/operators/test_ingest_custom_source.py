"""
A source of one's own (tests/support/sources.py, the example of docs/data.md): JSON lines from a real HTTP
server on loopback, ingested in a real ``dag.test()`` run with its URL templated, and validated downstream.
"""

from __future__ import annotations

import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_mlops.data.snapshots import load_manifest, read_snapshot
from airflow_mlops.exceptions import DatasetConfigurationError, ServiceUnavailableError
from airflow_mlops.operators.ingest import IngestDatasetOperator
from airflow_mlops.operators.validation import ValidateDatasetOperator
from tests.support.dags import serialize_dag
from tests.support.sources import JsonLinesSource

pytestmark = pytest.mark.integration


class Rows:
    """What the HTTP server answers: a status and a body, changed by the test."""

    status = 200
    body = b""
    gets = 0


def lines(count: int, shift: int = 0) -> bytes:
    return b"".join(b'{"x": %d, "label": %d}\n' % (i + shift, i % 2) for i in range(count))


@pytest.fixture(scope="module")
def http_rows():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            Rows.gets += 1
            self.send_response(Rows.status)
            self.send_header("Content-Length", str(len(Rows.body)))
            self.end_headers()
            self.wfile.write(Rows.body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_source_of_ones_own_is_ingested_templated_and_validated_in_a_dag_run(
    airflow_db, http_rows, tmp_path
):
    from airflow.sdk import DAG

    Rows.status, Rows.body = 200, lines(40)
    with DAG(
        "mlops_custom_source", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
        params={"port": http_rows},
    ) as dag:  # fmt: skip
        ingest = IngestDatasetOperator(
            task_id="ingest", dataset_name="from_http",
            source=JsonLinesSource(url="http://127.0.0.1:{{ params.port }}/rows.jsonl"),
            data_root=str(tmp_path / "root"), split={"train": 0.75, "holdout": 0.25}, label_column="label",
        )  # fmt: skip
        ValidateDatasetOperator(
            task_id="validate",
            dataset_uri=ingest.output,
            expectations=[{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "label"}}],
            data_docs=False,
        )
    serialize_dag(dag)

    dag_run = dag.test()

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {"ingest": "success", "validate": "success"}
    result = dag_run.get_task_instance("ingest").xcom_pull(task_ids="ingest")
    assert result["rows"] == 40
    assert len(read_snapshot(result["splits"]["train"])) == 30
    assert list(read_snapshot(result["uri"])["x"]) == list(range(40))
    manifest = load_manifest(result["uri"])
    url = f"http://127.0.0.1:{http_rows}/rows.jsonl"
    assert (manifest["source"], manifest["format"], manifest["bytes"]) == (url, "jsonl", len(lines(40)))


def test_a_source_of_ones_own_keeps_the_snapshot_contract(http_rows, data_root):
    def ingest(**kwargs):
        op = IngestDatasetOperator(
            task_id="ingest", dataset_name="from_http", data_root=str(data_root),
            source=JsonLinesSource(url=f"http://127.0.0.1:{http_rows}/rows.jsonl"), **kwargs,
        )  # fmt: skip
        return op.execute(context={})

    Rows.status, Rows.body = 200, lines(20)
    first = ingest()
    # The same content is the same snapshot, written once; new content is a new one.
    written = load_manifest(first["uri"])["created_at"]
    assert ingest() == first
    assert load_manifest(first["uri"])["created_at"] == written
    Rows.body = lines(20, shift=1)
    assert ingest()["snapshot_id"] != first["snapshot_id"]

    # The operator's checks hold for any source: a missing label column writes nothing.
    with pytest.raises(Exception, match="label column 'target' is missing from http://127.0.0.1"):
        ingest(label_column="target")

    # The source says whether to retry: a server error is retried, a wrong URL is not.
    Rows.status = 503
    with pytest.raises(ServiceUnavailableError, match="rows.jsonl answered 503"):
        ingest()
    Rows.status = 404
    with pytest.raises(DatasetConfigurationError, match="rows.jsonl answered 404"):
        ingest()
    Rows.status, Rows.body = 200, b"not json\n"
    with pytest.raises(Exception, match="'from_http': not JSON lines"):
        ingest()
