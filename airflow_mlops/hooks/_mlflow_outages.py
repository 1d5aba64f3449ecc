"""
An :class:`mlflow.MlflowClient` whose calls wait out a tracking server that is down (a restart).

MLflow's REST client already retries with ``urllib3`` (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 7, and
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, default 2): a count, not a time, with pauses of up to 120 s, so a server
back after two minutes is seen up to two minutes later, and what it waits for cannot be set in seconds. The
client built here runs each public method through :func:`airflow_mlops.utils.outages.wait_out` instead, which
tries again for ``[mlops] service_outage_timeout`` seconds with pauses of at most 10 s. While one of its calls
runs, MLflow's own retries are cut to a short burst (2 retries, backoff factor 1: a few seconds) unless those
variables are set in the environment, so that the window, not MLflow's count, decides how long a call waits.
MLflow's fluent API (``mlflow.start_run``, ``mlflow.models.evaluate``, model loading) keeps MLflow's own
retries.

MLflow is imported when the first client is built.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mlflow import MlflowClient

#: MLflow's own retries while a call of the client runs: (variable, value).
_BURST = (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"))
_GATEWAY_STATUSES = frozenset({429, 502, 503, 504})
_burst_lock = threading.Lock()
_burst_depth = 0
_burst_set: list[str] = []
_local = threading.local()


def is_transient(err: BaseException) -> bool:
    """
    Whether *err* says the MLflow server could not be reached, so the request cannot have been carried out.

    True for a refused, reset or timed-out connection, for a 429 or 5xx that MLflow's own retries gave up on,
    and for MLflow's ``TEMPORARILY_UNAVAILABLE``-like answers (HTTP 429/502/503/504); False for TLS errors, read
    timeouts (the server may have acted on the request) and MLflow's other answers (a 4xx: the request is
    wrong).
    """
    import requests

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.SSLError):
            return False
        if isinstance(current, requests.exceptions.ConnectionError | requests.exceptions.RetryError):
            return True
        if isinstance(current, ConnectionRefusedError | ConnectionResetError):
            return True
        status = getattr(current, "get_http_status_code", None)
        if callable(status) and getattr(current, "error_code", None) != "INTERNAL_ERROR":
            try:
                if int(status()) in _GATEWAY_STATUSES:
                    return True
            except (TypeError, ValueError):
                pass
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _short_mlflow_retries() -> Iterator[None]:
    """Cut MLflow's own retries to a short burst while calls run (variables a user set are left alone)."""
    global _burst_depth
    with _burst_lock:
        if _burst_depth == 0:
            _burst_set.clear()
            for name, value in _BURST:
                if name not in os.environ:
                    os.environ[name] = value
                    _burst_set.append(name)
        _burst_depth += 1
    try:
        yield
    finally:
        with _burst_lock:
            _burst_depth -= 1
            if _burst_depth == 0:
                for name in _burst_set:
                    os.environ.pop(name, None)
                _burst_set.clear()


def outage_tolerant_client(
    *, tracking_uri: str, registry_uri: str, call_through: Callable[[Callable[[], Any]], Any]
) -> MlflowClient:
    """
    An ``MlflowClient`` whose public methods run through *call_through* (the hook's outage window).

    A method called from inside another (MLflow's client calls its own methods) runs directly: only the
    outermost call waits, so the window is not spent twice.

    :param call_through: Runs a zero-argument callable and returns its result, waiting out an outage.
    """
    return _client_class()(tracking_uri=tracking_uri, registry_uri=registry_uri, call_through=call_through)


@functools.cache
def _client_class() -> Any:
    from mlflow import MlflowClient

    class OutageTolerantClient(MlflowClient):
        """See :func:`outage_tolerant_client`."""

        def __init__(self, *args: Any, call_through: Callable[[Callable[[], Any]], Any], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._call_through = call_through

        def __getattribute__(self, name: str) -> Any:
            value = super().__getattribute__(name)
            if name.startswith("_") or not inspect.ismethod(value):
                return value
            call_through = super().__getattribute__("_call_through")

            @functools.wraps(value)
            def call(*args: Any, **kwargs: Any) -> Any:
                if getattr(_local, "inside", False):
                    return value(*args, **kwargs)

                def attempt() -> Any:
                    _local.inside = True
                    try:
                        with _short_mlflow_retries():
                            return value(*args, **kwargs)
                    finally:
                        _local.inside = False

                return call_through(attempt)

            return call

    return OutageTolerantClient
