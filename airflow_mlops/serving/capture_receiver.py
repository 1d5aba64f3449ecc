"""
A CloudEvents HTTP receiver for KServe's request/response logger.

It lands what a KServe predictor served in the same capture layout as the local target
(:mod:`airflow_mlops.serving.capture`).

KServe's logger (``spec.predictor.logger``, set by ``KServeTarget(capture_logger={"url": ...})``) posts every
request and every answer as a binary-mode CloudEvent: the payload is the body, ``ce-id`` is shared by a
request and its answer, ``ce-type`` ends in ``.request`` or ``.response``. The receiver pairs them by id
(``ce-id`` becomes the capture's ``_request_id``), takes the model and version from the URL's query
(``?model=<name>&version=<version>``, which the target writes into each revision's logger URL), and hands each
pair to a :class:`~airflow_mlops.serving.capture.CaptureWriter`. It answers 202 at once; a request whose answer
never comes is dropped after ``--pair-timeout`` seconds.

Run it next to the cluster (a Deployment and a Service the logger URL names)::

    python -m airflow_mlops.serving.capture_receiver --port 8080 --root s3://ml-data/mlops [--redact email]

Standard library, pyarrow, and boto3 for ``s3://`` roots (credentials from the standard AWS environment).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_mlops.serving.capture import CaptureWriter

log = logging.getLogger(__name__)


class CaptureReceiver(ThreadingHTTPServer):
    """
    The receiver's HTTP server: pairs logged requests and answers, and captures each pair.

    :param address: ``(host, port)`` to listen on.
    :param writer: Where pairs go.
    :param pair_timeout: Seconds a half pair waits for its other half.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], writer: CaptureWriter, pair_timeout: float = 60.0) -> None:
        self.writer = writer
        self.pair_timeout = pair_timeout
        self._halves: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.unpaired = 0
        super().__init__(address, _Handler)

    def add(self, event_id: str, kind: str, model: str, version: str, body: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [k for k, v in self._halves.items() if now - v["at"] > self.pair_timeout]
            for key in stale:
                del self._halves[key]
            self.unpaired += len(stale)
            half = self._halves.setdefault(event_id, {"at": now, "model": model, "version": version})
            half[kind] = body
            if "request" not in half or "response" not in half:
                return
            del self._halves[event_id]
        self.writer.submit(half["model"] or model, half["version"] or version, event_id, 200,
                           half["request"], half["response"])  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CaptureReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, message: str = "") -> None:
        data = json.dumps({"message": message}).encode() if message else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200, "ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event_id = self.headers.get("ce-id") or ""
        kind = (self.headers.get("ce-type") or "").rsplit(".", 1)[-1]
        query = parse_qs(urlsplit(self.path).query)
        model = (query.get("model") or [self.headers.get("ce-inferenceservicename") or ""])[0]
        version = (query.get("version") or [""])[0]
        if not event_id or kind not in ("request", "response") or not model:
            self._answer(400, "expected a KServe logger CloudEvent (ce-id, ce-type) and ?model=...")
            return
        self._answer(202)
        self.server.add(event_id, kind, model, version, body)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until it is signalled; pending captures are written on the way out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - it serves the cluster's logger
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--root", required=True, help="data root of the captures (folder or s3:// prefix)")
    parser.add_argument("--redact", action="append", default=[], help="a column stored hashed (repeatable)")
    parser.add_argument("--flush-seconds", type=float, default=10.0)
    parser.add_argument("--pair-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    writer = CaptureWriter(args.root, redact=args.redact, flush_seconds=args.flush_seconds)
    server = CaptureReceiver((args.host, args.port), writer, args.pair_timeout)
    signal.signal(signal.SIGTERM, _interrupt)
    log.info("capture receiver listening on %s:%s, captures under %s", args.host, args.port, args.root)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
