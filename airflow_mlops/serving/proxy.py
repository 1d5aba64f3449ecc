"""
The local target's front door: a tiny reverse proxy that keeps a model's endpoint on one port.

It forwards every request to the model server named in the target's state file (``server.port``), re-reading
the file when it changes, so the local target switches versions by starting the new server on a spare port,
checking it, and rewriting the state file; clients keep calling the same port. Each answer carries the
header ``X-MLOps-Model-Version``. Connections to the model server are kept open and reused, and every answer
leaves in one write with ``TCP_NODELAY`` set, so a keep-alive client pays no delayed-ACK wait.

``GET /_mlops/proxy`` says whether the endpoint can answer, checking the model server (``GET /ping``) as it asks:

- ``200 {"proxy": "ok", "version": "3"}``: the model server answers (``version`` null, still 200, while the
  state file names no server: nothing is served yet);
- ``503 {"proxy": "backend_unavailable", "version": "3", "reason": "...", "since": "2026-12-05T17:00:00Z"}``: the
  model server does not answer; ``reason`` is the last error (``"connection refused"``, ``"no answer within
  2 s"``, ``"GET /ping answered HTTP 500"``) and ``since`` when the current failure began (UTC, ISO 8601).

Nothing else: the endpoint may be reachable by anyone who can reach the port, so the proxy's pid, the model
server's port, paths and the state file stay in the state file, which only the local target reads.

The proxy refuses what would hurt it, each answer a JSON ``{"error_code", "message"}``: a body declared larger
than ``--max-body-bytes`` (default 8 MiB; chunked bodies are counted as they arrive) is answered 413 before it
is read; a body that has not fully arrived within ``--read-timeout`` seconds (default 30) is answered 408; a
``POST``, ``PUT`` or ``PATCH`` without ``Content-Type`` is answered 415 (the model server answers 415 to the
types it does not take); a malformed ``Content-Length`` or chunk is answered 400. The connection is closed after
each of these. A model server that does not answer gives 502 (504 past ``--backend-timeout``).

With a ``capture`` entry in the state file (the local target's ``capture`` setting) the proxy also records
every answered request (:mod:`airflow_mlops.serving.capture`): it hands the request and the answer to a
background writer and answers at once. Every answer carries ``X-Request-Id`` (the client's, or a new one), the
id the capture stores. A request marked ``X-MLOps-Traffic`` (the package's smoke tests and probes) is stored
apart from production traffic, and only the model's signature columns are kept (the state's
``capture.signature``). The writer's counts go to ``capture-stats.json`` next to the state file.

With a ``shadow`` entry in the state file (``{"port", "version", "percent"}``, written by
:meth:`~airflow_mlops.serving.local.LocalServerTarget.start_shadow`) a copy of ``percent`` % of the production
requests answered 2xx (chosen by request id, :func:`mirrored`) goes to that model server after the client has
its answer, from one background thread (at most 1000 copies wait; more are dropped). The shadow's answer never
reaches the client; it is captured with the request's id, the shadow's version and ``X-MLOps-Traffic: shadow``.

With a ``canary`` entry in the state file (``{"port", "version", "percent"}``, written by
:meth:`~airflow_mlops.serving.local.LocalServerTarget.deploy_canary`) ``percent`` % of the production ``POST``
requests (chosen by request id, :func:`mirrored`) are answered by that model server instead: the client gets the
canary's answer, with the canary's version in ``X-MLOps-Model-Version``, and it is captured with that version
as production traffic. A request the canary does not answer at all (its server down) is captured against it
as a 502 and answered by ``server``. Requests marked ``X-MLOps-Traffic`` (smoke tests, probes) always go to
``server``.

Run as ``python -m airflow_mlops.serving.proxy --host H --port P --state FILE [--max-body-bytes N]
[--read-timeout S] [--backend-timeout S]``. Standard library only (and pyarrow once capture is on): it starts in
a fraction of a second and imports neither Airflow nor MLflow.
"""

from __future__ import annotations

import argparse
import email.utils
import gc
import http.client
import json
import os
import queue
import socket
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from threading import Lock, Thread
from typing import TYPE_CHECKING, Any, NamedTuple

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
#: Headers of the model server's answer that the proxy does not pass on (it writes its own ``Server`` and ``Date``).
_NOT_RETURNED = _HOP_BY_HOP | {"server", "date"}
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower()
#: :data:`airflow_mlops.serving.capture.TRAFFIC_HEADER`, here so that the proxy starts without importing capture.
TRAFFIC_HEADER = "X-MLOps-Traffic"
_TRAFFIC_KEY = TRAFFIC_HEADER.lower()
CAPTURE_STATS = "capture-stats.json"

#: Default of ``--max-body-bytes``: far above a batch of predictions, far below what hurts the machine.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Default of ``--read-timeout``: seconds a request body may take to arrive.
DEFAULT_READ_TIMEOUT = 30.0
#: Default of ``--backend-timeout``: seconds the model server may take to answer.
DEFAULT_BACKEND_TIMEOUT = 300.0
#: :data:`TRAFFIC_HEADER` value of the requests mirrored to a shadow, with which their answers are captured.
SHADOW = "shadow"
#: Mirrored requests waiting for the shadow; beyond it a copy is dropped (counted), never the request.
_MIRROR_QUEUE = 1000
#: An idle keep-alive client connection is closed after this many seconds.
_IDLE_TIMEOUT = 120.0
#: How long the status waits for the model server's ``/ping``.
_PROBE_TIMEOUT = 2.0
#: Idle connections to the model server kept for reuse, and for how long (uvicorn closes them after 5 s).
_POOL_SIZE = 16
_POOL_IDLE_SECONDS = 4.0
#: After a refusal, what the client still sends is read and dropped for this long before the close.
_LINGER_SECONDS = 2.0
#: Threads waiting for a new connection, at most (more are started while all are busy, and end when done).
_MAX_IDLE_ACCEPTORS = 32
#: Seconds a thread holds the interpreter while another waits for it (Python's default: 0.005).
_SWITCH_INTERVAL = 0.0005
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_MAX_LINE = 65536
_MAX_HEADERS = 100
#: A request's line and headers together, at most (bytes); more is answered 431.
_MAX_HEAD = 65536
_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
#: Bytes asked of the kernel per read: a one-row prediction and its answer arrive in one.
_RECV_SIZE = 65536
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_SERVER_HEADER = "Server: airflow-mlops-proxy"
#: Control characters of a request line, escaped in the access log (a line cannot forge another).
_CONTROL_CHARS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
#: Errors of a reused connection that the model server closed meanwhile: the request is sent again, once.
_STALE_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


@dataclass(frozen=True)
class ProxySettings:
    """The proxy's limits (command-line options)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT
    backend_timeout: float = DEFAULT_BACKEND_TIMEOUT


class _Refused(Exception):
    """A request the proxy answers itself, without reading further or forwarding it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _StateReader:
    """The ``server`` entry of the state file, re-read when the file's mtime or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = Lock()
        self._stamp: tuple[int, int] | None = None
        self._server: dict[str, Any] | None = None
        self._capture: dict[str, Any] | None = None
        self._shadow: dict[str, Any] | None = None
        self._canary: dict[str, Any] | None = None
        self._model: str = ""

    def capture(self) -> tuple[str, dict[str, Any] | None]:
        """The model name and the ``capture`` settings of the state last read."""
        return self._model, self._capture

    def shadow(self) -> dict[str, Any] | None:
        """The ``shadow`` entry of the state last read (a candidate that gets a mirror of the traffic), or None."""
        return self._shadow

    def canary(self) -> dict[str, Any] | None:
        """The ``canary`` entry of the state last read (a version answering a share of the traffic), or None."""
        return self._canary

    def backend(self) -> dict[str, Any] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return self._server
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
                shadow = state.get("shadow") if isinstance(state, dict) else None
                self._shadow = (
                    shadow
                    if isinstance(shadow, dict) and shadow.get("port") and _share(shadow.get("percent")) > 0
                    else None
                )
                canary = state.get("canary") if isinstance(state, dict) else None
                self._canary = (
                    canary
                    if isinstance(canary, dict) and canary.get("port") and _share(canary.get("percent")) > 0
                    else None
                )
                self._stamp = stamp
            return self._server


class _Answer(NamedTuple):
    """The model server's answer: status, reason, headers to pass on, body, and whether it closes."""

    status: int
    reason: str
    #: Its header lines (``Name: value``) passed on to the client, in order: all but :data:`_NOT_RETURNED`.
    passed: list[str]
    body: bytes
    will_close: bool
    #: The headers by lower-case name (the first of repeated ones).
    fields: dict[str, str]


class _RequestHeaders:
    """
    A request's headers: by lower-case name, and the lines passed on to the model server.

    Filled by :meth:`_ClientConnection._parse` with one dictionary per request rather than the email package's
    message, whose every lookup walks and lower-cases all the headers.
    """

    __slots__ = ("_first", "forwarded")

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        #: The header lines (``Name: value``) passed on to the model server, in order, without the hop-by-hop
        #: ones and the request id, which the proxy sets.
        self.forwarded: list[str] = []

    def add(self, name: str, value: str, line: str) -> None:
        lower = name.lower()
        if lower not in self._first:
            self._first[lower] = value
        if lower not in _HOP_BY_HOP and lower != _REQUEST_ID_KEY:
            self.forwarded.append(line)

    def get(self, lower_name: str) -> str | None:
        """The first value of the header named *lower_name* (in lower case: names are read in any case)."""
        return self._first.get(lower_name)


class _BackendConnection:
    """
    One HTTP/1.1 connection to the model server.

    Not :class:`http.client.HTTPConnection`: that sends the request line and headers and the body in two
    writes and parses each answer's headers with the email package; a request here leaves in one write and an
    answer is read into one buffer, usually with one ``recv``. The socket blocks, with the kernel's timeouts
    (:func:`_kernel_timeouts`), so no call waits in ``poll`` first.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.key = (host, port)
        self.host_header = f"{host}:{port}"
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        _kernel_timeouts(self.sock, timeout)
        self.buffer = bytearray()

    def close(self) -> None:
        self.sock.close()

    def closed_by_peer(self) -> bool:
        """Whether the idle connection has something to read: the server closed it (or broke the protocol)."""
        if self.buffer:
            return True
        try:
            self.sock.recv(1, _PEEK)
        except BlockingIOError:
            return False  # nothing to read: still open
        except OSError:
            return True
        return True

    def _more(self) -> bool:
        """Read what has arrived into the buffer; False at the end of the connection."""
        try:
            data = self.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            raise TimeoutError("the model server did not answer in time") from None
        self.buffer += data
        return bool(data)

    def exchange(self, method: str, target: str, headers: list[str], body: bytes) -> _Answer:
        """Send a request (*headers*: lines ``Name: value``, without ``Host`` and ``Content-Length``); its answer."""
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}", *headers]
        if body or method in _BODY_METHODS:
            head.append(f"Content-Length: {len(body)}")
        try:
            self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except BlockingIOError:
            raise TimeoutError("the model server did not take the request in time") from None
        while True:
            lines = self._head()
            version, _, rest = lines[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise http.client.BadStatusLine(lines[0][:100])
            status = int(code)
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue) is followed by the final one
        passed: list[str] = []
        fields: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if not sep or "\n" in line:
                raise http.client.HTTPException("malformed header line in the answer")
            key = key.strip().lower()
            if key not in fields:
                fields[key] = value.strip()
            if key not in _NOT_RETURNED:
                passed.append(line)
        will_close = version == "HTTP/1.0" or "close" in fields.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            data = self._chunked()
        elif fields.get("content-length", "").strip().isdigit():
            data = self._exactly(int(fields["content-length"]))
        else:  # delimited by the end of the connection
            while self._more():
                pass
            data, will_close = bytes(self.buffer), True
            self.buffer.clear()
        return _Answer(status, reason, passed, data, will_close, fields)

    def _head(self) -> list[str]:
        """The status line and header lines of the next answer."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buffer[:end]
                del self.buffer[: end + 4]
                return head.decode("latin-1").split("\r\n")
            if len(self.buffer) > _MAX_HEAD:
                raise http.client.HTTPException("the answer's headers are too long")
            if not self._more():
                if self.buffer:
                    raise http.client.IncompleteRead(bytes(self.buffer))
                raise http.client.RemoteDisconnected("closed the connection without answering")

    def _exactly(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not self._more():
                raise http.client.IncompleteRead(bytes(self.buffer), length - len(self.buffer))
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        return data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_LINE or not self._more():
                raise http.client.HTTPException("malformed chunk in the answer")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            try:
                size = int(self._line().split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise http.client.HTTPException("malformed chunk in the answer") from None
            if size == 0:
                while self._line():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._line()


def _kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """
    Let the kernel end a read or write on blocking *sock* after *seconds* (``BlockingIOError``).

    Python's own socket timeout makes every call wait in ``poll`` first: two system calls each, on every
    request of a proxy whose cost is its system calls.
    """
    whole = int(seconds)
    limit = struct.pack("ll", whole, max(int((seconds - whole) * 1_000_000), 0 if whole else 1))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


class _BackendPool:
    """Open connections to the model server, reused across requests (the newest first)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = Lock()
        self._key: tuple[str, int] | None = None
        self._idle: list[tuple[_BackendConnection, float]] = []

    def get(self, host: str, port: int) -> tuple[_BackendConnection, bool]:
        """A connection to *host*:*port*, and whether it was used before."""
        now = time.monotonic()
        with self._lock:
            if self._key != (host, port):  # another server now: what was kept for the old one goes
                stale, self._idle, self._key = self._idle, [], (host, port)
            else:
                stale = []
            found = None
            while self._idle:
                conn, since = self._idle.pop()
                if now - since < _POOL_IDLE_SECONDS and not conn.closed_by_peer():
                    found = conn
                    break
                stale.append((conn, since))
        for conn, _ in stale:
            conn.close()
        if found is not None:
            return found, True
        return _BackendConnection(host, port, self.timeout), False

    def put(self, conn: _BackendConnection) -> None:
        with self._lock:
            if conn.key == self._key and len(self._idle) < _POOL_SIZE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()


def _describe(err: BaseException) -> str:
    """A short reason for a failed call to the model server, without addresses or ports."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, http.client.RemoteDisconnected):
        return "closed the connection without answering"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return type(err).__name__


class _BackendHealth:
    """Whether the model server answered: the status endpoint's probe and every forwarded request."""

    def __init__(self) -> None:
        self._lock = Lock()
        self.reason: str | None = None
        self.since: str | None = None

    def failed(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.reason = reason

    def answered(self) -> None:
        if self.reason is not None:
            with self._lock:
                self.reason = self.since = None


class _Clock:
    """The ``Date`` header and the log's time, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._http = self._log = ""

    def now(self) -> tuple[str, str]:
        """The ``Date`` header's value and the log's time, now."""
        now = time.time()
        if int(now) != self._second:
            self._http = email.utils.formatdate(now, usegmt=True)
            self._log = time.strftime("%d/%b/%Y %H:%M:%S", time.localtime(now))
            self._second = int(now)
        return self._http, self._log


_clock = _Clock()


class _ClientConnection:
    """
    One client connection: its requests read, answered and logged one after another (HTTP/1.1 keep-alive).

    Not :class:`http.server.BaseHTTPRequestHandler`: that reads a request line by line through a buffered file,
    parses the headers with the email package, and, with a timeout set, waits in ``poll`` before every read
    and write; here a request is read into one buffer (usually one ``recv``), its headers split into one
    dictionary, and the socket blocks with the kernel's timeouts (:func:`_kernel_timeouts`).
    """

    def __init__(self, server: _ProxyServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buffer = bytearray()
        self.method = self.path = self.requestline = ""
        self.headers = _RequestHeaders()
        self.close_connection = True
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers go out as written
        _kernel_timeouts(sock, _IDLE_TIMEOUT)

    def serve(self) -> None:
        """Answer requests until the client closes the connection, goes idle, or a request closes it."""
        try:
            while self._one_request():
                pass
        except OSError:
            pass  # the client went away, or stopped reading
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    # -- reading ------------------------------------------------------------------------------------------

    def _more(self) -> bool:
        """Read what has arrived into the buffer; False at the end of the connection."""
        try:
            data = self.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            raise TimeoutError from None  # the kernel's receive timeout
        self.buffer += data
        return bool(data)

    def _read_head(self) -> bytes | None:
        """The request line and headers, up to the blank line; None when the connection ends or idles out."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            bare = buffer.find(b"\n\n", 0, len(buffer) if end < 0 else end)  # bare line feeds, as http.server takes
            if bare >= 0:
                head = bytes(buffer[:bare])
                del buffer[: bare + 2]
                return head
            if end >= 0:
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                return head
            if len(buffer) > _MAX_HEAD:
                raise _Refused(
                    431, "REQUEST_HEADER_FIELDS_TOO_LARGE", f"The request's headers exceed {_MAX_HEAD} bytes."
                )
            try:
                if not self._more():
                    return None
            except TimeoutError:
                return None  # idle for _IDLE_TIMEOUT: closed, as the client may expect of a kept connection

    def _one_request(self) -> bool:
        """Read, answer and log one request; whether the connection stays open for the next."""
        self.method = self.path = self.requestline = ""
        try:
            head = self._read_head()
        except _Refused as refusal:
            self._refuse(refusal)
            return False
        if head is None:
            return False
        if not self._parse(head):
            return False
        if self.method not in _METHODS:
            self._error(501, "UNSUPPORTED_METHOD", f"Unsupported method ({self.method!r}).")
            return False
        self._forward()
        return not self.close_connection

    def _parse(self, head: bytes) -> bool:
        """
        The request line and headers, checked as :class:`http.server.BaseHTTPRequestHandler` checks them.

        Folded (obsolete multi-line) headers are refused. False (the error answered) when malformed.
        """
        lines = head.decode("iso-8859-1").split("\n")
        self.requestline = requestline = lines[0].rstrip("\r")
        words = requestline.split()
        if len(words) != 3:
            self._error(400, "BAD_REQUEST", f"Bad request syntax ({requestline!r}).")
            return False
        method, path, version = words
        try:
            if not version.startswith("HTTP/"):
                raise ValueError
            major, minor = version[5:].split(".")
            number = (int(major), int(minor))
        except ValueError:
            self._error(400, "BAD_REQUEST", f"Bad request version ({version!r}).")
            return False
        if number >= (2, 0):
            self._error(505, "HTTP_VERSION_NOT_SUPPORTED", f"Invalid HTTP version ({version}).")
            return False
        if len(lines) > _MAX_HEADERS + 1:
            self._error(431, "REQUEST_HEADER_FIELDS_TOO_LARGE", "Too many headers.")
            return False
        self.method = method
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        headers = _RequestHeaders()
        for line in lines[1:]:
            line = line.rstrip("\r")
            name, sep, value = line.partition(":")
            if not sep or not name or name[0] in " \t" or name != name.rstrip() or "\r" in line:
                self._error(400, "BAD_REQUEST", "Malformed header line.")
                return False
            headers.add(name, value.strip(), line)
        self.headers = headers
        connection = (headers.get("connection") or "").lower()
        self.close_connection = number < (1, 1) and connection != "keep-alive" or connection == "close"
        if (headers.get("expect") or "").lower() == "100-continue" and number >= (1, 1):
            declared = (headers.get("content-length") or "").strip()
            if declared.isdigit() and int(declared) > self.server.settings.max_body_bytes:
                self._refuse(self._too_large(f"declares {declared} bytes"))
                return False
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_body(self) -> bytes:
        """The request body, refused (:class:`_Refused`) when too large, malformed or too slow to arrive."""
        settings = self.server.settings
        chunked = "chunked" in (self.headers.get("transfer-encoding") or "").lower()
        length = 0
        if not chunked:
            declared = (self.headers.get("content-length") or "0").strip()
            if not declared.isdigit():
                raise _Refused(
                    400, "BAD_REQUEST", f"Content-Length must be a number of bytes, got {declared!r}."
                )
            length = int(declared)
            if length > settings.max_body_bytes:
                raise self._too_large(f"declares {length} bytes")
        if self.method in _BODY_METHODS and not self.headers.get("content-type"):
            raise _Refused(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "The request has no Content-Type header; send the body's type (a model server takes "
                "application/json, text/csv or application/x-parquet).",
            )
        if not chunked and length <= len(self.buffer):  # all here already: the usual case
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
            return body
        deadline = time.monotonic() + settings.read_timeout
        try:
            return self._read_chunked(deadline) if chunked else self._read_exactly(length, deadline)
        except TimeoutError:
            raise _Refused(
                408,
                "REQUEST_TIMEOUT",
                f"The request body did not arrive within {settings.read_timeout:g} s.",
            ) from None
        finally:
            _kernel_timeouts(self.sock, _IDLE_TIMEOUT)

    def _too_large(self, what: str) -> _Refused:
        limit = self.server.settings.max_body_bytes
        return _Refused(
            413,
            "REQUEST_TOO_LARGE",
            f"The request body {what}; this endpoint takes at most {limit} bytes. Send fewer rows per request.",
        )

    def _more_by(self, deadline: float) -> None:
        """Read more of the body, waiting until *deadline* at most; a body that ends early is refused."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        _kernel_timeouts(self.sock, remaining)
        if not self._more():
            raise _Refused(400, "BAD_REQUEST", "The request body ended before all of it arrived.")

    def _read_exactly(self, length: int, deadline: float) -> bytes:
        while len(self.buffer) < length:
            self._more_by(deadline)
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def _read_line(self, deadline: float) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > 1026:
                raise _Refused(400, "BAD_REQUEST", "The chunked request body is malformed.")
            self._more_by(deadline)
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def _read_chunked(self, deadline: float) -> bytes:
        limit = self.server.settings.max_body_bytes
        parts: list[bytes] = []
        received = 0
        while True:
            line = self._read_line(deadline).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise _Refused(400, "BAD_REQUEST", "The chunked request body is malformed.") from None
            if size < 0:
                raise _Refused(400, "BAD_REQUEST", "The chunked request body is malformed.")
            if size == 0:
                while self._read_line(deadline) not in (b"\r\n", b"\n"):  # trailers
                    pass
                return b"".join(parts)
            received += size
            if received > limit:
                raise self._too_large(f"grows past {limit} bytes")
            parts.append(self._read_exactly(size, deadline))
            self._read_line(deadline)

    # -- answering ----------------------------------------------------------------------------------------

    def _send(
        self, status: int, headers: list[str], body: bytes, reason: str | None = None, length: str | None = None
    ) -> None:
        """
        The status line, *headers* (lines ``Name: value``) and *body* in one write.

        Small writes would wait for delayed ACKs. ``Content-Length`` is *length*, else the body's. The access log line is written after the answer, so that the client never waits for the log file.
        """
        if reason is None:
            reason = _REASONS.get(status, "")
        http_date, log_date = _clock.now()
        head = [f"HTTP/1.1 {status} {reason}", _SERVER_HEADER, f"Date: {http_date}", *headers]
        head.append(f"Content-Length: {len(body) if length is None else length}")
        if self.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(data if self.method == "HEAD" else data + body)
        sys.stderr.write(f'{log_date} "{self.requestline.translate(_CONTROL_CHARS)}" {status} -\n')

    def _reply(self, status: int, payload: dict[str, Any], version: str | None = None) -> None:
        headers = ["Content-Type: application/json"]
        if version:
            headers.append(f"{VERSION_HEADER}: {version}")
        self._send(status, headers, json.dumps(payload).encode())

    def _error(self, status: int, code: str, message: str) -> None:
        """Answer a request the proxy could not read, and close the connection."""
        self.close_connection = True
        self._reply(status, {"error_code": code, "message": message})

    def _refuse(self, refusal: _Refused) -> None:
        """
        Answer *refusal* and close the connection, what is left of the body unread.

        The close is a lingering one: after the answer the proxy stops sending and discards what the client
        still sends for up to ``_LINGER_SECONDS``; closing a socket with unread data at once resets the
        connection, and the client's TCP may drop the answer before its program reads it.
        """
        self.close_connection = True
        self._reply(refusal.status, {"error_code": refusal.code, "message": refusal.message})
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            while (remaining := deadline - time.monotonic()) > 0:
                _kernel_timeouts(self.sock, remaining)
                if not self.sock.recv(1 << 16):
                    break
        except OSError:
            pass

    def _status(self) -> None:
        backend = self.server.state.backend()
        version = (str(backend.get("version") or "") or None) if backend else None
        if backend is not None:
            self.server.probe(backend)
        health = self.server.health
        if backend is None or health.reason is None:
            self._reply(200, {"proxy": "ok", "version": version}, version)
            return
        self._reply(
            503,
            {
                "proxy": "backend_unavailable",
                "version": version,
                "reason": f"the model server of version {version} does not answer: {health.reason}",
                "since": health.since,
            },
            version,
        )

    def _forward(self) -> None:
        try:
            body = self._read_body()
        except _Refused as refusal:
            self._refuse(refusal)
            return
        if self.path == STATUS_PATH:
            self._status()
            return
        backend = self.server.state.backend()
        if backend is None:
            self._reply(503, {"error_code": "NO_MODEL", "message": "No model version is being served here."})
            return
        rid = _request_id(self.headers.get(_REQUEST_ID_KEY))
        headers = [*self.headers.forwarded, f"{REQUEST_ID_HEADER}: {rid}"]
        canary = self.server.state.canary()
        started = time.perf_counter()
        answer: _Answer | None = None
        if (
            canary is not None
            and self.method == "POST"
            and not self.headers.get(_TRAFFIC_KEY)
            and mirrored(rid, _share(canary.get("percent")))
        ):
            try:
                answer = self.server.exchange(canary, self.method, self.path, body, headers)
                backend = canary
            except (OSError, http.client.HTTPException):
                # The canary did not answer: counted against it, and the version serving answers instead.
                writer = self.server.capture_writer() if body else None
                if writer is not None:
                    writer.submit(
                        self.server.state.capture()[0], str(canary.get("version", "")), rid, 502, body, b"",
                        latency_ms=(time.perf_counter() - started) * 1000,
                    )  # fmt: skip
                started = time.perf_counter()
        version = str(backend.get("version", ""))
        try:
            if answer is None:
                answer = self.server.exchange(backend, self.method, self.path, body, headers)
        except (OSError, http.client.HTTPException) as err:
            timed_out = isinstance(err, TimeoutError)
            self._reply(
                504 if timed_out else 502,
                {
                    "error_code": "BACKEND_TIMEOUT" if timed_out else "BACKEND_UNAVAILABLE",
                    "message": f"Model server for version {version}: {_describe(err)}",
                },
                version,
            )
            return
        # Queued (never written) before the answer goes out: a client that has its answer knows the record
        # is pending, and a SIGTERM right after still writes it. The writer is woken after the answer.
        writer = self.server.capture_writer() if self.method == "POST" and body else None
        if writer is not None:
            writer.submit(
                self.server.state.capture()[0], version, rid, answer.status, body, answer.body,
                self.headers.get(_TRAFFIC_KEY), latency_ms=(time.perf_counter() - started) * 1000, wake=False,
            )  # fmt: skip
        out = [*answer.passed, f"{VERSION_HEADER}: {version}", f"{REQUEST_ID_HEADER}: {rid}"]
        length = answer.fields.get("content-length") if self.method == "HEAD" else None
        self._send(answer.status, out, answer.body, answer.reason, length)
        if writer is not None:
            writer.wake()
        shadow = self.server.state.shadow()
        if (
            shadow is not None
            and self.method == "POST"
            and body
            and 200 <= answer.status < 300
            and not self.headers.get(_TRAFFIC_KEY)
            and mirrored(rid, _share(shadow.get("percent")))
        ):  # after the answer went out: the client never waits for the shadow
            self.server.mirror(shadow, self.path, body, headers, rid)


def _share(percent: Any) -> float:
    """A shadow's or canary's ``percent`` (0-100) as a number; anything else is 0 (none of the traffic)."""
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        return 0.0
    return min(max(float(percent), 0.0), 100.0)


def mirrored(rid: str, percent: float) -> bool:
    """Whether the request *rid* is among the *percent* % a shadow or a canary gets (by its id)."""
    return zlib.crc32(rid.encode()) % 10000 < percent * 100


def _request_id(header: str | None) -> str:
    """The client's request id when it is a short plain one, else 32 random hex digits (a UUID4's length)."""
    if header and len(header) <= 128 and all(c.isalnum() or c in "._:-" for c in header):
        return header
    return os.urandom(16).hex()


class _ProxyServer:
    """The listening socket, the threads that serve its connections, and what they share."""

    def __init__(
        self, address: tuple[str, int], state: _StateReader, settings: ProxySettings | None = None
    ) -> None:
        self.state = state
        self.settings = settings or ProxySettings()
        self.pool = _BackendPool(self.settings.backend_timeout)
        self.health = _BackendHealth()
        self._writer: CaptureWriter | None = None
        self._writer_settings: dict[str, Any] | None = None
        self._writer_lock = Lock()
        self._workers_lock = Lock()
        self._idle_acceptors = 0
        self._mirrors: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=_MIRROR_QUEUE)
        self._mirror_pool = _BackendPool(self.settings.backend_timeout)
        self._mirror_thread: Thread | None = None
        self.mirror_counts = {"mirrored": 0, "answered": 0, "failed": 0, "dropped": 0}
        self._frozen_after_write = False
        self.listener = socket.create_server(address, backlog=128)  # SO_REUSEADDR, as http.server sets it

    def mirror(
        self, shadow: dict[str, Any], path: str, body: bytes, headers: list[str], rid: str
    ) -> None:
        """Queue a copy of a production request for the shadow; never blocks (a full queue drops it, counted)."""
        with self._workers_lock:
            if self._mirror_thread is None:
                self._mirror_thread = Thread(target=self._mirror_loop, name="mlops-shadow", daemon=True)
                self._mirror_thread.start()
        try:
            self._mirrors.put_nowait((shadow, path, body, headers, rid))
        except queue.Full:
            self.mirror_counts["dropped"] += 1

    def _mirror_loop(self) -> None:
        """Send each mirrored request to the shadow and capture its answer as ``shadow`` traffic."""
        while True:
            shadow, path, body, headers, rid = self._mirrors.get()
            self.mirror_counts["mirrored"] += 1
            host, port = shadow.get("host") or "127.0.0.1", int(shadow["port"])
            try:
                started = time.perf_counter()
                conn, _ = self._mirror_pool.get(host, port)
                try:
                    answer = conn.exchange("POST", path, [*headers, f"{TRAFFIC_HEADER}: {SHADOW}"], body)
                except BaseException:
                    conn.close()
                    raise
                if answer.will_close:
                    conn.close()
                else:
                    self._mirror_pool.put(conn)
            except (OSError, http.client.HTTPException) as err:
                self.mirror_counts["failed"] += 1
                sys.stderr.write(f"shadow version {shadow.get('version')}: {_describe(err)}\n")
                continue
            self.mirror_counts["answered"] += 1
            writer = self.capture_writer()
            if writer is not None:
                writer.submit(
                    self.state.capture()[0], str(shadow.get("version", "")), rid, answer.status, body, answer.body,
                    SHADOW, latency_ms=(time.perf_counter() - started) * 1000,
                )  # fmt: skip

    def serve_forever(self) -> None:
        """
        Serve until the process is signalled.

        Each connection is served by the thread that accepted it: threads wait in ``accept`` themselves, so a
        new connection wakes one thread, not a listener and then a worker. The last idle one starts another
        before it serves; at most ``_MAX_IDLE_ACCEPTORS`` wait at once.
        """
        self._start_acceptor()
        while True:
            time.sleep(3600)  # the main thread waits for signals

    def _start_acceptor(self) -> None:
        Thread(target=self._accept_loop, name="mlops-proxy", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            with self._workers_lock:
                if self._idle_acceptors >= _MAX_IDLE_ACCEPTORS:
                    return
                self._idle_acceptors += 1
            try:
                sock, _ = self.listener.accept()
            except OSError:
                with self._workers_lock:
                    self._idle_acceptors -= 1
                if self.listener.fileno() < 0:
                    return  # closed: the proxy is stopping
                time.sleep(0.01)  # e.g. out of file descriptors for a moment
                continue
            with self._workers_lock:
                self._idle_acceptors -= 1
                last = self._idle_acceptors == 0
            if last:
                self._start_acceptor()
            _ClientConnection(self, sock).serve()

    def server_close(self) -> None:
        self.listener.close()

    def exchange(
        self, backend: dict[str, Any], method: str, path: str, body: bytes, headers: list[str]
    ) -> _Answer:
        """Send one request to the model server (on a kept connection when there is one) and read its answer."""
        host, port = backend.get("host") or "127.0.0.1", int(backend["port"])
        while True:
            try:
                conn, reused = self.pool.get(host, port)
            except OSError as err:
                self.health.failed(_describe(err))
                raise
            try:
                answer = conn.exchange(method, path, headers, body)
            except BaseException as err:
                conn.close()
                if reused and isinstance(err, _STALE_ERRORS):
                    continue  # closed by the server while it was idle here: again, on a new connection
                if isinstance(err, OSError | http.client.HTTPException):
                    self.health.failed(_describe(err))
                raise
            self.health.answered()
            if answer.will_close:
                conn.close()
            else:
                self.pool.put(conn)
            return answer

    def probe(self, backend: dict[str, Any]) -> None:
        """Ask the model server ``GET /ping`` now and record whether it answered."""
        conn = http.client.HTTPConnection(
            backend.get("host") or "127.0.0.1", int(backend["port"]), timeout=_PROBE_TIMEOUT
        )
        try:
            conn.request("GET", "/ping")
            response = conn.getresponse()
            response.read()
        except TimeoutError:
            self.health.failed(f"no answer within {_PROBE_TIMEOUT:g} s")
            return
        except (OSError, http.client.HTTPException) as err:
            self.health.failed(_describe(err))
            return
        finally:
            conn.close()
        if response.status == 200:
            self.health.answered()
        else:
            self.health.failed(f"GET /ping answered HTTP {response.status}")

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
        # What the writer's first file loads (pyarrow asks pandas about every table), loaded now rather than
        # holding the interpreter for a second while requests wait.
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from airflow_mlops.serving.capture import CaptureWriter

        try:
            return CaptureWriter(
                str(settings["uri"]),
                redact=settings.get("redact") or (),
                signature=settings.get("signature"),
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
        if not self._frozen_after_write:
            # The first file imported what the writer writes with (pyarrow.parquet, pandas): like start-up's
            # modules (main), kept out of the collector's sight.
            self._frozen_after_write = True
            gc.freeze()

    def close_capture(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until it is signalled (``python -m airflow_mlops.serving.proxy --port N --state FILE``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True, help="state file of the local deploy target")
    parser.add_argument(
        "--max-body-bytes", type=_positive(int), default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies are answered 413 (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--read-timeout", type=_positive(float), default=DEFAULT_READ_TIMEOUT,
        help="seconds a request body may take to arrive, else 408 (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--backend-timeout", type=_positive(float), default=DEFAULT_BACKEND_TIMEOUT,
        help="seconds the model server may take to answer, else 504 (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = ProxySettings(args.max_body_bytes, args.read_timeout, args.backend_timeout)
    try:
        server = _ProxyServer((args.host, args.port), _StateReader(args.state), settings)
    except OSError as err:
        sys.stderr.write(f"cannot listen on {args.host}:{args.port}: {err}\n")
        return 3
    sys.stderr.write(
        f"proxy listening on {args.host}:{args.port}, state {args.state}, bodies up to {settings.max_body_bytes} "
        f"bytes arriving within {settings.read_timeout:g} s\n"
    )
    sys.stderr.flush()
    import logging
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (a deploy replacing the proxy, a stop) writes what was captured before the process ends.
    signal.signal(signal.SIGTERM, _interrupt)
    server.state.backend()  # the state's capture settings, read now
    server.capture_writer()  # started now, so the first prediction does not wait for it
    # What start-up made (modules, the capture writer) lives as long as the process: out of the collector's
    # sight, a full collection no longer walks it while a request waits (18 to 33 ms with capture on).
    gc.freeze()
    # A request thread back from the network waits for the interpreter while the capture writer writes a file
    # (5 to 15 ms of Python for a few thousand rows): at most 0.5 ms at a time rather than the default 5 ms.
    sys.setswitchinterval(_SWITCH_INTERVAL)
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
