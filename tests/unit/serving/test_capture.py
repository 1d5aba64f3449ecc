"""
Capture of served predictions: the background writer on real files, and the endpoint proxy as a real process
recording what it forwards.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from airflow_mlops.data.storage import Storage
from airflow_mlops.serving.base import post_invocations
from airflow_mlops.serving.capture import (
    PREDICTION,
    REQUEST_ID,
    VERSION,
    CaptureWriter,
    check_capture_settings,
    count_captures,
    hour_of,
    read_captures,
)
from airflow_mlops.serving.local import LocalServerTarget
from airflow_mlops.serving.proxy import REQUEST_ID_HEADER, STATUS_PATH
from tests.conftest import free_port
from tests.support.proxy import start_proxy, write_state

WINDOW = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))


def scoring(rows: list[dict]) -> tuple[bytes, bytes]:
    """A scoring request and the answer a model predicting ``2 * x`` gives."""
    request = json.dumps({"dataframe_records": rows}).encode()
    answer = json.dumps({"predictions": [2 * r["x"] for r in rows]}).encode()
    return request, answer


def frame(root):
    return read_captures(str(root), "churn", *WINDOW)


def test_captured_rows_land_in_hourly_parquet_files_with_their_request(tmp_path):
    writer = CaptureWriter(str(tmp_path), redact=["email"], flush_seconds=60)
    request, answer = scoring([{"x": 1.0, "email": "a@example.com"}, {"x": 2.5, "email": "b@example.com"}])

    assert writer.submit("churn", "4", "req-1", 200, request, answer)
    assert writer.flush()

    files = list((tmp_path / "captures" / "model=churn").glob("hour=*/part-*.parquet"))
    assert [f.parent.name for f in files] == [f"hour={hour_of(datetime.now(UTC))}"]
    captured = frame(tmp_path)
    assert captured["x"].tolist() == [1.0, 2.5]
    assert captured[PREDICTION].tolist() == [2.0, 5.0]
    assert set(captured[REQUEST_ID]) == {"req-1"}
    assert set(captured[VERSION]) == {"4"}
    # Redacted: stored as the hash of the value, never the value.
    assert captured["email"].tolist() == [hashlib.sha256(b"a@example.com").hexdigest(),
                                          hashlib.sha256(b"b@example.com").hexdigest()]  # fmt: skip
    assert "example.com" not in b"".join(f.read_bytes() for f in files).decode(errors="replace")
    writer.close()


def test_a_request_queued_without_waking_the_writer_is_still_written(tmp_path):
    # The proxy queues a request before its answer and wakes the writer after it; a wake that never comes (a
    # stop between the two) loses nothing: the writer takes the queue at its next flush, or at close.
    writer = CaptureWriter(str(tmp_path), flush_seconds=0.3)
    assert writer.submit("churn", "1", "unwoken", 200, *scoring([{"x": 3.0}]), wake=False)
    deadline = time.monotonic() + 10
    while writer.stats()["written_rows"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert frame(tmp_path)["x"].tolist() == [3.0]

    assert writer.submit("churn", "1", "at-close", 200, *scoring([{"x": 4.0}]), wake=False)
    writer.close()
    assert sorted(frame(tmp_path)["x"]) == [3.0, 4.0]


def test_a_window_reads_only_its_own_rows(tmp_path):
    writer = CaptureWriter(str(tmp_path))
    for index in range(3):
        writer.submit("churn", "1", f"r{index}", 200, *scoring([{"x": float(index)}]))
    writer.submit("churn", "1", "failed", 500, *scoring([{"x": 9.0}]))
    writer.submit("other", "1", "o", 200, *scoring([{"x": 7.0}]))
    writer.flush()

    assert sorted(frame(tmp_path)["x"]) == [0.0, 1.0, 2.0]  # answered requests of this model only
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert read_captures(str(tmp_path), "churn", later, later + timedelta(hours=1)).empty
    # The refused request is stored apart and never counted as production traffic.
    assert count_captures(str(tmp_path), "churn", *WINDOW) == 3
    assert count_captures(str(tmp_path), "churn", *WINDOW, traffic="rejected") == 1
    writer.close()


def test_an_unavailable_store_loses_nothing_and_is_counted(tmp_path):
    blocked = tmp_path / "captures"
    blocked.write_text("not a folder")  # the store cannot be written until this goes
    writer = CaptureWriter(str(tmp_path), flush_seconds=0.2)
    for index in range(5):
        writer.submit("churn", "1", f"r{index}", 200, *scoring([{"x": float(index)}]))
    writer.flush()

    stats = writer.stats()
    assert stats["write_errors"] >= 1
    assert stats["pending_rows"] == 5
    assert "captures" in stats["last_error"]

    blocked.unlink()
    deadline = time.monotonic() + 30
    while writer.stats()["written_rows"] < 5 and time.monotonic() < deadline:
        writer.flush()
        time.sleep(0.2)
    assert sorted(frame(tmp_path)["x"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert writer.stats()["pending_rows"] == 0
    writer.close()


class _StuckStorage(Storage):
    """A store that hangs until released (a fault injected into the writer's one write call)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write_bytes(self, uri: str, data: bytes) -> None:
        self.release.wait(30)
        super().write_bytes(uri, data)


def test_a_full_queue_drops_captures_without_waiting(tmp_path):
    storage = _StuckStorage()
    writer = CaptureWriter(str(tmp_path), queue_size=2, batch_rows=1, storage=storage)
    request, answer = scoring([{"x": 1.0}])
    started = time.perf_counter()
    accepted = [writer.submit("churn", "1", f"r{i}", 200, request, answer) for i in range(50)]
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0  # 50 submits while the store hangs: none of them waited for it
    assert accepted.count(False) >= 40
    assert writer.stats()["dropped_requests"] == accepted.count(False)
    storage.release.set()
    writer.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"redact": "email"}, "list of column names"),
        ({"batch_rows": 0}, "positive integer"),
        ({"flush_seconds": -1}, "flush_seconds"),
        ({"bucket": "x"}, "unknown keys"),
        ("yes", "True or a dict"),
    ],
)
def test_bad_capture_settings_are_refused_by_the_local_target(settings, message):
    with pytest.raises(ValueError, match=message):
        LocalServerTarget(capture=settings)


def test_capture_defaults_to_the_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path))
    assert LocalServerTarget(capture=True).capture_settings()["uri"] == str(tmp_path)
    assert LocalServerTarget().capture_settings() is None
    assert check_capture_settings({"redact": ["b", "a", "b"]})["redact"] == ["a", "b"]


# -- the proxy ------------------------------------------------------------------------------------------------


class _Scorer(BaseHTTPRequestHandler):
    """A scoring server answering ``2 * x`` per row (what the proxy forwards to)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["dataframe_records"]
        body = json.dumps({"predictions": [2 * r["x"] for r in rows]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def scorer():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_proxy_captures_what_it_forwards_and_writes_it_when_stopped(tmp_path, scorer):
    state = tmp_path / "serving" / "churn" / "state.json"
    state.parent.mkdir(parents=True)
    store = tmp_path / "store"
    state.write_text(
        json.dumps(
            {
                "model_name": "churn",
                "server": {"host": "127.0.0.1", "port": scorer, "version": "5"},
                "capture": check_capture_settings(
                    {"uri": str(store), "redact": ["email"], "flush_seconds": 600}
                ),
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving.proxy", "--port", str(port), "--state", str(state)],
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url + STATUS_PATH, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.05)
        mine = requests.post(
            url + "/invocations",
            json={"dataframe_records": [{"x": 1.5, "email": "c@example.com"}]},
            headers={REQUEST_ID_HEADER: "client-id-1"},
            timeout=10,
        )
        theirs = requests.post(url + "/invocations", json={"dataframe_records": [{"x": 3.0}]}, timeout=10)
        assert mine.json() == {"predictions": [3.0]}
        assert mine.headers[REQUEST_ID_HEADER] == "client-id-1"
        generated = theirs.headers[REQUEST_ID_HEADER]
        assert generated not in ("", "client-id-1")
    finally:
        proc.send_signal(signal.SIGTERM)  # flush_seconds is long: what is pending is written on the way out
        proc.wait(timeout=20)

    captured = read_captures(str(store), "churn", *WINDOW).sort_values("x")
    assert captured[REQUEST_ID].tolist() == ["client-id-1", generated]
    assert captured[PREDICTION].tolist() == [3.0, 6.0]
    assert captured[VERSION].tolist() == ["5", "5"]
    assert captured["email"].iloc[0] == hashlib.sha256(b"c@example.com").hexdigest()
    stats = json.loads((state.parent / "capture-stats.json").read_text())
    assert (stats["written_rows"], stats["write_errors"]) == (2, 0)


def test_the_package_s_own_predictions_are_not_production_traffic_and_only_signature_columns_are_kept(
    tmp_path, scorer
):
    state = tmp_path / "serving" / "churn" / "state.json"
    store = tmp_path / "store"
    settings = check_capture_settings({"uri": str(store), "flush_seconds": 600, "signature": {"x": "double"}})
    write_state(state, scorer, version="5", capture=settings)
    proxy = start_proxy(state)
    try:
        client = requests.post(
            proxy.url + "/invocations",
            json={"dataframe_records": [{"x": 1.5, "ssn": "078-05-1120"}]},
            headers={REQUEST_ID_HEADER: "client"},
            timeout=10,
        )
        assert client.json() == {"predictions": [3.0]}
        # What a deploy's smoke test, infra validation and canary probes send.
        assert post_invocations(proxy.url, [{"x": 2.0}, {"x": 4.0}]) == [4.0, 8.0]
    finally:
        proxy.proc.send_signal(signal.SIGTERM)  # flush_seconds is long: pending rows are written at exit
        proxy.proc.wait(timeout=20)

    production = frame(store)
    assert production[REQUEST_ID].tolist() == ["client"]
    assert "ssn" not in production.columns
    assert count_captures(str(store), "churn", *WINDOW) == 1
    assert count_captures(str(store), "churn", *WINDOW, traffic="synthetic") == 2
    stats = json.loads((state.parent / "capture-stats.json").read_text())
    assert stats["rows_by_traffic"] == {"production": 1, "synthetic": 2}
    assert stats["dropped_columns"] == {"ssn": 1}
