"""
The local target's front door: a tiny reverse proxy that keeps a model's endpoint on one port.

It forwards every request to the model server named in the target's state file (``server.port``), re-reading
the file when it changes, so the local target switches versions by starting the new server on a spare port,
checking it, and rewriting the state file; clients keep calling the same port. Each answer carries the
header ``X-MLOps-Model-Version``. ``GET /_mlops/proxy`` answers ``{"proxy": "ok", "version": "3"}`` (``version``
null while nothing is served) and nothing else: the endpoint may be reachable by anyone who can reach the
port, so the proxy's pid, the model server's port, paths and the state file stay in the state file, which only
the local target reads.

Run as ``python -m airflow_mlops.serving.proxy --host H --port P --state FILE``. Standard library only:
it starts in a fraction of a second and imports neither Airflow nor MLflow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

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


class _StateReader:
    """The ``server`` entry of the state file, re-read when the file's mtime or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = Lock()
        self._stamp: tuple[int, int] | None = None
        self._server: dict[str, Any] | None = None

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
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() not in ("server", "date"):
                self.send_header(key, value)
        self.send_header(VERSION_HEADER, version)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _StateReader) -> None:
        self.state = state
        super().__init__(address, _Handler)


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
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
