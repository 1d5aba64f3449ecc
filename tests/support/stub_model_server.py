"""
A stand-in model server for the endpoint proxy's tests, run as its own process so it can be killed.

``python -m tests.support.stub_model_server --port N``: ``GET /ping`` answers 200; ``POST /invocations``
answers ``{"predictions": [<bytes received>], "content_type": <the request's Content-Type>}``. HTTP/1.1,
keep-alive, standard library only (it starts in a fraction of a second).
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            self._answer(200, b"\n", "text/plain")
        else:
            self._answer(404, b'{"error_code": "NOT_FOUND"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = {"predictions": [len(body)], "content_type": self.headers.get("Content-Type")}
        self._answer(200, json.dumps(payload).encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
