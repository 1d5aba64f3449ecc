"""
Per-connection MLflow credentials held in memory, never in ``os.environ``.

MLflow's REST client asks a named *request auth provider* (the ``mlflow.request_auth_provider`` entry point)
for a ``requests`` auth object on every call. :class:`AirflowConnectionAuthProvider` answers with an auth
object that looks up the credentials registered for the request's host in a :class:`contextvars.ContextVar`,
so two hooks talking to two servers in one process each send their own credentials, and nothing secret is
written to the environment. This module imports the standard library, ``requests`` (when auth is built) and
MLflow's provider base class: it is loaded by MLflow, or by the hook once MLflow is imported.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from urllib.parse import urlsplit

PROVIDER_NAME = "airflow-connection"


@dataclass(frozen=True)
class Credentials:
    """Basic-auth user/password or a bearer token for one MLflow server."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never show secrets, even in a debugger or a traceback
        kind = "token" if self.token else "basic" if self.username else "none"
        return f"Credentials(<{kind}>)"


_CREDENTIALS: contextvars.ContextVar[dict[str, Credentials] | None] = contextvars.ContextVar(
    "airflow_mlops_mlflow_credentials", default=None
)


def server_key(uri: str) -> str:
    """Return ``scheme://host:port`` of *uri*, the key credentials are stored under."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


# MLflow moves artifacts in its own thread pools, which do not inherit context variables. Those threads
# fall back to the credentials last registered for the same server in this process (an Airflow task runs
# in a process of its own, so this never crosses tasks).
_PROCESS_FALLBACK: dict[str, Credentials] = {}


def register(uri: str, credentials: Credentials) -> None:
    """Use *credentials* for every MLflow request to the server of *uri* made in the current context."""
    key = server_key(uri)
    current = dict(_CREDENTIALS.get() or {})
    current[key] = credentials
    _CREDENTIALS.set(current)
    _PROCESS_FALLBACK[key] = credentials


def lookup(uri: str) -> Credentials | None:
    """Return the credentials for the server of *uri*: this context's, else the process's latest."""
    key = server_key(uri)
    return (_CREDENTIALS.get() or {}).get(key) or _PROCESS_FALLBACK.get(key)


def _build_auth():
    import requests.auth

    class _ConnectionAuth(requests.auth.AuthBase):
        def __call__(self, request):
            creds = lookup(request.url)
            if creds is None:
                return request
            if creds.token:
                request.headers["Authorization"] = f"Bearer {creds.token}"
            elif creds.username:
                return requests.auth.HTTPBasicAuth(creds.username, creds.password or "")(request)
            return request

    return _ConnectionAuth()


try:
    from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
except ImportError:  # pragma: no cover - mlflow is a hard dependency; keep the module importable anyway
    RequestAuthProvider = object  # type: ignore[assignment,misc]


class AirflowConnectionAuthProvider(RequestAuthProvider):
    """MLflow request auth provider that sends the credentials of the Airflow connection in use."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self):
        return _build_auth()
