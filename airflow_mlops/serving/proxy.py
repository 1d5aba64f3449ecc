"""
The local target's front door: a tiny reverse proxy that keeps a model's endpoint on one port.

It forwards every request to the model server named in the target's state file (``server.port``), re-reading
the file when it changes, so the local target switches versions by starting the new server on a spare port,
checking it, and rewriting the state file; clients keep calling the same port. Each answer carries the
header ``X-MLOps-Model-Version``. ``GET /_mlops/proxy`` answers ``{"proxy": "ok", "version": "3"}`` (``version``
null while nothing is served) and nothing else: the endpoint may be reachable by anyone who can reach the
port, so the proxy's pid, the model server's port, paths and the state file stay in the state file, which only
the local target reads.

With a ``capture`` entry in the state file (the local target's ``capture`` setting) the proxy also records
every answered request (:mod:`airflow_mlops.serving.capture`): it hands the request and the answer to a
background writer and answers at once. Every answer carries ``X-Request-Id`` (the client's, or a new one), the
id the capture stores. The writer's counts go to ``capture-stats.json`` next to the state file.

Run as ``python -m airflow_mlops.serving.proxy --host H --port P --state FILE``. Standard library only (and
pyarrow once capture is on): it starts in a fraction of a second and imports neither Airflow nor MLflow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.serving.capture import CaptureWriter

VERSION_HEADER = "X-MLOps-Model-Version"
STATUS_PATH = "/_mlops/proxy"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
_BACKEND_TIMEOUT = 300.0
REQUEST_ID_HEADER = "X-Request-Id"
CAPTURE_STATS = "capture-stats.json"


class _StateReader:
    """The ``server`` entry of the state file, re-read when the file's mtime or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = Lock()
        self._stamp: tuple[int, int] | None = None
        self._server: dict[str, Any] | None = None
        self._capture: dict[str, Any] | None = None
        self._model: str = ""

    def capture(self) -> tuple[str, dict[str, Any] | None]:
        """The model name and the ``capture`` settings of the state last read."""
        return self._model, self._capture

    def backend(self) -> dict[str, Any] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    with open(self.path, encoding="utf-8") as fh:
                        state = json.load(fh)
                except (OSError, ValueError):
                    return self._server  # being replaced; the rename is atomic, try again next request
                server = state.get("server") if isinstance(state, dict) else None
                self._server = server if isinstance(server, dict) and server.get("port") else None
                capture = state.get("capture") if isinstance(state, dict) else None
                self._capture = capture if isinstance(capture, dict) and capture.get("uri") else None
                self._model = str(state.get("model_name") or "") if isinstance(state, dict) else ""
                self._stamp = stamp
            return self._server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "airflow-mlops-proxy"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {format % args}\n")

    def _reply(self, status: int, payload: dict[str, Any], version: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if version:
            self.send_header(VERSION_HEADER, version)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _forward(self) -> None:
        body = self._read_body()
        if self.path == STATUS_PATH:
            backend = self.server.state.backend()
            version = (str(backend.get("version") or "") or None) if backend else None
            self._reply(200, {"proxy": "ok", "version": version}, version)
            return
        backend = self.server.state.backend()
        if backend is None:
            self._reply(503, {"error_code": "NO_MODEL", "message": "No model version is being served here."})
            return
        version = str(backend.get("version", ""))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        rid = _request_id(self.headers.get(REQUEST_ID_HEADER))
        headers[REQUEST_ID_HEADER] = rid
        conn = http.client.HTTPConnection(
            backend.get("host") or "127.0.0.1", int(backend["port"]), timeout=_BACKEND_TIMEOUT
        )
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except OSError as err:
            self._reply(
                502,
                {
                    "error_code": "BACKEND_UNAVAILABLE",
                    "message": f"Model server for version {version}: {err}",
                },
                version,
            )
            return
        finally:
            conn.close()
        # Queued (never written) before the answer goes out: a client that has its answer knows the record
        # is pending, and a SIGTERM right after still writes it.
        if self.command == "POST" and body:
            writer = self.server.capture_writer()
            if writer is not None:
                writer.submit(self.server.state.capture()[0], version, rid, response.status, body, data)
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() not in ("server", "date"):
                self.send_header(key, value)
        self.send_header(VERSION_HEADER, version)
        self.send_header(REQUEST_ID_HEADER, rid)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward


def _request_id(header: str | None) -> str:
    if header and len(header) <= 128 and all(c.isalnum() or c in "._:-" for c in header):
        return header
    import uuid

    return uuid.uuid4().hex


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _StateReader) -> None:
        self.state = state
        self._writer: CaptureWriter | None = None
        self._writer_settings: dict[str, Any] | None = None
        self._writer_lock = Lock()
        super().__init__(address, _Handler)

    def capture_writer(self) -> CaptureWriter | None:
        """The capture writer of the state's ``capture`` settings (None when capture is off)."""
        _, settings = self.state.capture()
        if settings == self._writer_settings:
            return self._writer
        with self._writer_lock:
            if settings != self._writer_settings:
                old, self._writer = self._writer, None
                if old is not None:
                    old.close()
                if settings is not None:
                    self._writer = self._start_writer(settings)
                self._writer_settings = settings
        return self._writer

    def _start_writer(self, settings: dict[str, Any]) -> CaptureWriter | None:
        from airflow_mlops.serving.capture import CaptureWriter

        try:
            return CaptureWriter(
                str(settings["uri"]),
                redact=settings.get("redact") or (),
                batch_rows=int(settings.get("batch_rows") or 5000),
                flush_seconds=float(settings.get("flush_seconds") or 10.0),
                queue_size=int(settings.get("queue_size") or 10000),
                max_pending=int(settings.get("max_pending") or 200000),
                on_stats=self._save_stats,
            )
        except Exception as err:  # capture must never stop the endpoint from serving
            sys.stderr.write(f"capture is off: cannot start the capture writer: {err}\n")
            return None

    def _save_stats(self, stats: dict[str, Any]) -> None:
        folder = os.path.dirname(os.path.abspath(self.state.path))
        fd, tmp = tempfile.mkstemp(prefix=".capture-stats.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(stats, fh)
            os.replace(tmp, os.path.join(folder, CAPTURE_STATS))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def close_capture(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until it is signalled (``python -m airflow_mlops.serving.proxy --port N --state FILE``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True, help="state file of the local deploy target")
    args = parser.parse_args(argv)
    try:
        server = _ProxyServer((args.host, args.port), _StateReader(args.state))
    except OSError as err:
        sys.stderr.write(f"cannot listen on {args.host}:{args.port}: {err}\n")
        return 3
    sys.stderr.write(f"proxy listening on {args.host}:{args.port}, state {args.state}\n")
    sys.stderr.flush()
    import logging
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (a deploy replacing the proxy, a stop) writes what was captured before the process ends.
    signal.signal(signal.SIGTERM, _interrupt)
    server.capture_writer()  # started now, so the first prediction does not wait for it
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close_capture()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
