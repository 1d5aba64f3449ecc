"""
What every Kubernetes API-server stand-in shares: the HTTP server, requests, label selectors and WebSocket frames.

:class:`StubServer` serves a threaded ``http.server`` on loopback; each request goes to the stand-in's
:meth:`StubServer.handle` as a :class:`Request` (send a JSON or text answer, read the body, check the bearer
token). A stand-in answers a WebSocket upgrade with :func:`accept_websocket` and talks ``v4.channel.k8s.io``
frames with :func:`ws_send` / :func:`ws_read` / :func:`ws_close`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "stub-token"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return "-".join(secrets.token_hex(n) for n in (4, 2, 2, 2, 6))


def matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, comma-separated."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class Request(BaseHTTPRequestHandler):
    """One HTTP request to a stand-in; every method is handed to ``stub.handle(self)``."""

    protocol_version = "HTTP/1.1"
    stub: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        self.stub.handle(self)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle


class StubServer:
    """What every API-server stand-in shares: its loopback URL, shutdown, and a kubeconfig pointing at it."""

    server: ThreadingHTTPServer

    def start(self) -> None:
        """Serve on a free loopback port, in a daemon thread."""
        handler = type("Handler", (Request,), {"stub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, request: Request) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
            "users": [{"name": "stub", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": namespace}}
            ],
            "current-context": "stub",
        }
        path.write_text(json.dumps(config))
        return path


# -- WebSocket (what exec uses) ------------------------------------------------------------------------------------


def accept_websocket(request: Request, protocol: str) -> None:
    """Answer the upgrade (101) with *protocol*; the connection closes after this request."""
    key = request.headers.get("Sec-WebSocket-Key", "")
    accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    request.send_response(101, "Switching Protocols")
    request.send_header("Upgrade", "websocket")
    request.send_header("Connection", "Upgrade")
    request.send_header("Sec-WebSocket-Accept", accept)
    request.send_header("Sec-WebSocket-Protocol", protocol)
    request.end_headers()
    request.close_connection = True


def ws_send(request: Request, channel: int, data: bytes) -> None:
    """One binary frame on a ``channel.k8s.io`` *channel* (1 stdout, 3 the status)."""
    payload = bytes([channel]) + data
    header = bytearray([0x82])  # FIN + binary
    if len(payload) < 126:
        header.append(len(payload))
    elif len(payload) < 65536:
        header += bytes([126]) + len(payload).to_bytes(2, "big")
    else:
        header += bytes([127]) + len(payload).to_bytes(8, "big")
    request.wfile.write(bytes(header) + payload)
    request.wfile.flush()


def ws_read(request: Request) -> bytes:
    """Read one (masked) client frame."""
    head = request.rfile.read(2)
    if len(head) < 2:
        return b""
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(request.rfile.read(2), "big")
    elif length == 127:
        length = int.from_bytes(request.rfile.read(8), "big")
    mask = request.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = request.rfile.read(length)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def ws_close(request: Request) -> None:
    """A close frame, code 1000."""
    request.wfile.write(b"\x88\x02\x03\xe8")
    request.wfile.flush()
