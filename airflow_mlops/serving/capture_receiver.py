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
never comes is dropped after ``--pair-timeout`` seconds. An answer that carries an ``error`` (the model refused
the request) is stored as rejected traffic; ``X-MLOps-Traffic``, as a header of the event or forwarded by the
logger's ``metadataHeaders`` (``ce-metadata``), stores it as synthetic traffic.

What it accepts:

- a shared token, read from the environment variable ``--token-env`` (default ``MLOPS_CAPTURE_TOKEN``, fed by a
  Kubernetes Secret; the KServe target reads the same token from an Airflow connection). A client sends it as
  ``Authorization: Bearer <token>``; KServe's logger, which sends no headers of its own, sends
  ``key=<HMAC-SHA256(token, "<model>" newline "<version>")>`` in the query, which the target writes into each revision's
  logger URL: a key that lets its holder write only that model version's traffic. Without either: 401.
- model names the registry allows (400 otherwise) and, with ``--model`` (repeatable), only those models (403);
- bodies up to ``--max-body`` bytes (413 beyond).

Files are written only under ``--root`` (each path is resolved and checked). It listens on loopback unless
``--host`` says otherwise (``0.0.0.0`` in a pod behind its Service)::

    MLOPS_CAPTURE_TOKEN=... python -m airflow_mlops.serving.capture_receiver --host 0.0.0.0 --port 8080
        --root s3://ml-data/mlops [--model churn] [--redact email] [--signatures signatures.json]

Standard library, pyarrow, and boto3 for ``s3://`` roots (credentials from the standard AWS environment);
``--mlflow-signatures`` also needs mlflow.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from airflow_mlops.serving.capture import TRAFFIC_HEADER, CaptureWriter, check_model_name, check_signature

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

log = logging.getLogger(__name__)

#: Environment variable the receiver reads its token from by default.
TOKEN_ENV = "MLOPS_CAPTURE_TOKEN"
#: Largest event body accepted by default (bytes).
MAX_BODY = 16 * 1024 * 1024
_VERSION = re.compile(r"[0-9]{1,12}")


def logger_key(token: str, model: str, version: str) -> str:
    """The key KServe's logger URL carries for one model version: HMAC-SHA256 of model, newline, version (hex)."""
    return hmac.new(token.encode(), f"{model}\n{version}".encode(), hashlib.sha256).hexdigest()


class CaptureReceiver(ThreadingHTTPServer):
    """
    The receiver's HTTP server: checks who posts, pairs logged requests and answers, and captures each pair.

    :param address: ``(host, port)`` to listen on.
    :param writer: Where pairs go.
    :param token: The shared token a sender must present (bearer header, or the per-model-version key).
    :param models: Only these models are accepted (None: any model name the registry allows).
    :param pair_timeout: Seconds a half pair waits for its other half.
    :param max_body: Largest body accepted (bytes); larger ones are answered 413 unread.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        writer: CaptureWriter,
        token: str,
        models: Iterable[str] | None = None,
        pair_timeout: float = 60.0,
        max_body: int = MAX_BODY,
    ) -> None:
        if not token:
            raise ValueError("the capture receiver needs a token: it accepts no unauthenticated writes")
        self.writer = writer
        self.token = token
        self.models = None if models is None else frozenset(check_model_name(m) for m in models)
        self.pair_timeout = pair_timeout
        self.max_body = max_body
        self._halves: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.unpaired = 0
        super().__init__(address, _Handler)

    def authorized(self, authorization: str | None, key: str | None, model: str, version: str) -> bool:
        """Whether the bearer token or the model version's key is the one this receiver was given."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and presented and hmac.compare_digest(presented.strip(), self.token):
            return True
        return bool(key) and hmac.compare_digest(str(key), logger_key(self.token, model, version))

    def add(self, event_id: str, kind: str, model: str, version: str, body: bytes, traffic: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [k for k, v in self._halves.items() if now - v["at"] > self.pair_timeout]
            for key in stale:
                del self._halves[key]
            self.unpaired += len(stale)
            pair_key = f"{model}\n{version}\n{event_id}"  # one sender cannot complete another model's pair
            half = self._halves.setdefault(pair_key, {"at": now, "traffic": None})
            half[kind] = body
            half["traffic"] = half["traffic"] or traffic
            if "request" not in half or "response" not in half:
                return
            del self._halves[pair_key]
        status = 400 if _is_error(half["response"]) else 200
        self.writer.submit(model, version, event_id, status, half["request"], half["response"], half["traffic"])


def _is_error(body: bytes) -> bool:
    """Whether a logged answer is an error (the model refused the request) rather than predictions."""
    try:
        answer = json.loads(body)
    except ValueError:
        return True
    return isinstance(answer, dict) and ("error" in answer or "error_code" in answer)


def _traffic(headers: Any) -> str | None:
    """The ``X-MLOps-Traffic`` value of an event: its own header, or the logger's forwarded ``ce-metadata``."""
    value = headers.get(TRAFFIC_HEADER)
    if value:
        return str(value)
    try:
        metadata = json.loads(headers.get("ce-metadata") or "{}")
    except ValueError:
        return None
    if not isinstance(metadata, dict):
        return None
    for key, found in metadata.items():
        if str(key).lower() == TRAFFIC_HEADER.lower():
            found = found[0] if isinstance(found, list) and found else found
            return str(found) if found else None
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CaptureReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, message: str = "", headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps({"message": message}).encode() if message else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:  # the body may be unread: this connection carries nothing more
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200, "ok")

    def _refuse(self) -> bool:
        """Answer a request that may not write (401, 400, 403, 413) without reading its body; True if refused."""
        query = parse_qs(urlsplit(self.path).query)
        model = (query.get("model") or [self.headers.get("ce-inferenceservicename") or ""])[0]
        version = (query.get("version") or [""])[0]
        if not self.server.authorized(
            self.headers.get("Authorization"), (query.get("key") or [""])[0], model, version
        ):
            self._answer(401, "a capture token is required", {"WWW-Authenticate": "Bearer"})
            return True
        try:
            check_model_name(model)
        except ValueError:
            self._answer(400, "?model= must be a registered model name")
            return True
        if not _VERSION.fullmatch(version):
            self._answer(400, "?version= must be a model version number")
            return True
        if self.server.models is not None and model not in self.server.models:
            self._answer(403, f"this receiver does not capture model {model!r}")
            return True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.server.max_body:
            self._answer(413, f"bodies up to {self.server.max_body} bytes are accepted")
            return True
        self._model, self._version, self._length = model, version, length
        return False

    def do_POST(self) -> None:
        if self._refuse():
            return
        body = self.rfile.read(self._length)
        event_id = self.headers.get("ce-id") or ""
        kind = (self.headers.get("ce-type") or "").rsplit(".", 1)[-1]
        if not event_id or kind not in ("request", "response"):
            self._answer(400, "expected a KServe logger CloudEvent (ce-id, ce-type)")
            return
        self._answer(202)
        self.server.add(event_id, kind, self._model, self._version, body, _traffic(self.headers))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _signature_source(args: argparse.Namespace) -> Mapping[str, Any] | Callable[..., Any] | None:
    """What the writer keeps of each model: ``--signatures FILE`` (model -> columns), or the MLflow registry."""
    if args.signatures:
        with open(args.signatures, encoding="utf-8") as fh:
            raw = json.load(fh)
        if not isinstance(raw, dict):
            raise ValueError(f"{args.signatures} must hold a JSON object: model name -> {{column: type}}")
        table = {check_model_name(m): check_signature(s, f"signature of {m}") for m, s in raw.items()}
        return lambda model, version: table.get(model)
    if args.mlflow_signatures:
        import functools

        from airflow_mlops.serving.capture import signature_of

        @functools.lru_cache(maxsize=256)
        def lookup(model: str, version: str) -> Mapping[str, str] | None:
            try:
                return signature_of(f"models:/{model}/{version}")
            except Exception as err:  # the registry down: store every column rather than lose the traffic
                log.warning("No signature of %s v%s (%s): storing every input column", model, version, err)
                return None

        return lookup
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until it is signalled; pending captures are written on the way out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--root", required=True, help="data root of the captures (folder or s3:// prefix)")
    parser.add_argument("--token-env", default=TOKEN_ENV, help="environment variable holding the token")
    parser.add_argument("--model", action="append", default=None, help="a model it captures (repeatable)")
    parser.add_argument("--redact", action="append", default=[], help="a column stored hashed (repeatable)")
    parser.add_argument("--signatures", help="JSON file: model name -> {input column: MLflow type}")
    parser.add_argument("--mlflow-signatures", action="store_true",
                        help="read each model version's signature from MLflow (MLFLOW_TRACKING_URI)")  # fmt: skip
    parser.add_argument("--max-body", type=int, default=MAX_BODY)
    parser.add_argument("--flush-seconds", type=float, default=10.0)
    parser.add_argument("--pair-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get(args.token_env, "")
    if not token:
        sys.stderr.write(f"capture receiver: set the token in ${args.token_env} (a Kubernetes Secret)\n")
        return 2
    try:
        signatures = _signature_source(args)
        models = None if args.model is None else [check_model_name(m) for m in args.model]
    except (OSError, ValueError) as err:
        sys.stderr.write(f"capture receiver: {err}\n")
        return 2
    writer = CaptureWriter(args.root, redact=args.redact, flush_seconds=args.flush_seconds, signature=signatures)
    try:
        server = CaptureReceiver(
            (args.host, args.port), writer, token, models, args.pair_timeout, args.max_body
        )
    except OSError as err:
        sys.stderr.write(f"capture receiver: cannot listen on {args.host}:{args.port}: {err}\n")
        writer.close()
        return 3
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
