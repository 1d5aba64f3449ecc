"""Hook for an MLflow tracking server and model registry."""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_mlops.exceptions import ConnectionSetupError, ServiceUnavailableError

if TYPE_CHECKING:
    from mlflow import MlflowClient

_REMOTE_SCHEMES = ("http", "https")


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class MLflowHook(BaseHook):
    """
    Talk to MLflow (tracking and registry) with the settings of an Airflow connection.

    The connection's host holds the tracking URI: ``http(s)://host:port`` for a tracking server, or any URI
    MLflow accepts (``sqlite:///mlflow.db`` for the embedded default). A host without a scheme is read as
    ``http://host:port``. Login/password give basic auth; the ``token`` extra gives bearer auth; the
    ``registry_uri`` extra points the registry elsewhere; ``verify_tls`` (default true) turns TLS
    verification off when false.

    Credentials are kept in memory for the current execution context only: they are never written to
    ``os.environ``, logged, or returned in XCom (see :mod:`airflow_mlops.hooks._mlflow_auth`).

    :param mlflow_conn_id: The Airflow connection to use.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def _settings(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException as err:
            raise ConnectionSetupError(
                f"MLflow connection {self.mlflow_conn_id!r} is not defined. Create a connection of type "
                f"'mlflow' whose host is the tracking URI (for example http://127.0.0.1:5000)."
            ) from err
        extra = conn.extra_dejson
        host = (conn.host or "").strip()
        if not host:
            raise ConnectionSetupError(
                f"MLflow connection {self.mlflow_conn_id!r} has no host: set it to the tracking URI "
                "(http(s)://host:port, or sqlite:///path/to/mlflow.db)."
            )
        if "://" in host:
            tracking_uri = host
            if conn.port and urlsplit(host).scheme in _REMOTE_SCHEMES and urlsplit(host).port is None:
                parts = urlsplit(host)
                tracking_uri = parts._replace(netloc=f"{parts.hostname}:{conn.port}").geturl()
        else:
            scheme = conn.schema if conn.schema in _REMOTE_SCHEMES else "http"
            tracking_uri = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        return {
            "tracking_uri": tracking_uri.rstrip("/"),
            "registry_uri": (extra.get("registry_uri") or "").strip() or None,
            "username": conn.login or None,
            "password": conn.password or None,
            "token": extra.get("token") or None,
            "verify_tls": _truthy(extra.get("verify_tls"), default=True),
        }

    @property
    def tracking_uri(self) -> str:
        """The tracking URI of the connection (never carries credentials)."""
        return self._settings["tracking_uri"]

    @property
    def registry_uri(self) -> str:
        """The registry URI of the connection; the tracking URI unless the ``registry_uri`` extra is set."""
        return self._settings["registry_uri"] or self.tracking_uri

    @property
    def is_remote(self) -> bool:
        return urlsplit(self.tracking_uri).scheme in _REMOTE_SCHEMES

    def _register_credentials(self) -> None:
        from airflow_mlops.hooks import _mlflow_auth

        settings = self._settings
        creds = _mlflow_auth.Credentials(
            username=settings["username"], password=settings["password"], token=settings["token"]
        )
        for uri in {self.tracking_uri, self.registry_uri}:
            if urlsplit(uri).scheme in _REMOTE_SCHEMES:
                _mlflow_auth.register(uri, creds)
        if self.is_remote:
            # Names the in-memory auth provider; holds no secret.
            os.environ["MLFLOW_TRACKING_AUTH"] = _mlflow_auth.PROVIDER_NAME
            if not settings["verify_tls"]:
                os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = "true"

    def check_reachable(self, timeout: float = 10.0) -> None:
        """Raise :class:`ServiceUnavailableError` naming the connection and URI if the server does not answer."""
        if not self.is_remote:
            return
        import requests

        try:
            response = requests.get(
                f"{self.tracking_uri}/health", timeout=timeout, verify=self._settings["verify_tls"]
            )
        except requests.RequestException as err:
            raise ServiceUnavailableError(
                f"MLflow server {self.tracking_uri} (connection {self.mlflow_conn_id!r}) is unreachable: "
                f"{type(err).__name__}"
            ) from err
        if response.status_code >= 500:
            raise ServiceUnavailableError(
                f"MLflow server {self.tracking_uri} (connection {self.mlflow_conn_id!r}) answered "
                f"HTTP {response.status_code} on /health"
            )

    def get_conn(self) -> MlflowClient:
        """
        Return an :class:`mlflow.MlflowClient` for the connection.

        Also points MLflow's fluent API (``mlflow.start_run``, ``mlflow.models.evaluate``, model loading)
        at the connection's tracking and registry URIs for the rest of this task.
        """
        import mlflow

        self.check_reachable()
        self._register_credentials()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    @cached_property
    def client(self) -> MlflowClient:
        """The client of :meth:`get_conn`, built once per hook."""
        return self.get_conn()

    def child_env(self) -> dict[str, str]:
        """
        Environment for a child process (the local training runtime) that talks to the same server.

        This is the local counterpart of the Kubernetes Secret references a training pod receives: it
        goes straight into the child's environment and nowhere else.
        """
        settings = self._settings
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_REGISTRY_URI": self.registry_uri}
        if settings["token"]:
            env["MLFLOW_TRACKING_TOKEN"] = settings["token"]
        elif settings["username"]:
            env["MLFLOW_TRACKING_USERNAME"] = settings["username"]
            env["MLFLOW_TRACKING_PASSWORD"] = settings["password"] or ""
        if not settings["verify_tls"]:
            env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
        return env

    def test_connection(self) -> tuple[bool, str]:
        """Test the connection by listing one experiment."""
        try:
            self.get_conn().search_experiments(max_results=1)
        except ConnectionSetupError as err:
            return False, str(err)
        except Exception as err:
            return False, f"Cannot reach MLflow at {self.tracking_uri}: {err}"
        return True, f"Connected to MLflow at {self.tracking_uri}"

    def describe(self) -> str:
        """Short, secret-free description for logs."""
        return json.dumps({"conn_id": self.mlflow_conn_id, "tracking_uri": self.tracking_uri})
