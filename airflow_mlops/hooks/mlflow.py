"""Hook for an MLflow tracking server and model registry."""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_mlops.exceptions import ConnectionSetupError, ServiceUnavailableError
from airflow_mlops.utils.outages import describe_error, wait_out
from airflow_mlops.utils.urls import URLCredentials, split_credentials
from airflow_mlops.version_compat import AirflowNotFoundException

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow import MlflowClient

_REMOTE_SCHEMES = ("http", "https")


def _connection_type() -> dict[str, Any]:
    """The ``mlflow`` entry of the provider metadata's ``connection-types``."""
    from airflow_mlops.get_provider_info import get_provider_info

    return next(
        entry for entry in get_provider_info()["connection-types"] if entry["connection-type"] == "mlflow"
    )


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
    verification off when false. User-info in the host or ``registry_uri`` (``https://user:pw@host``) is
    taken out of the URI and used as login/password (masked in logs); it may not contradict the
    connection's own login/password, and a non-HTTP URI (a database) may not carry a password at all.

    Credentials are kept in memory for the current execution context only: they are never written to
    ``os.environ``, logged, or returned in XCom (see :mod:`airflow_mlops.hooks._mlflow_auth`).

    A server that cannot be reached (a restart) is waited out: :meth:`get_conn` waits for ``/health`` to
    answer, and each call of its client is tried again with backoff, for up to *outage_timeout* seconds
    (:mod:`airflow_mlops.hooks._mlflow_outages`); then :class:`ServiceUnavailableError` (retryable) names the
    server and the time waited.

    :param mlflow_conn_id: The Airflow connection to use.
    :param outage_timeout: Seconds to wait out an unreachable server; default ``[mlops] service_outage_timeout``
        (300).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(
        self, mlflow_conn_id: str = default_conn_name, outage_timeout: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self._outage_timeout = outage_timeout

    @property
    def outage_timeout(self) -> float:
        """Seconds calls wait out an unreachable server (the argument, else ``[mlops] service_outage_timeout``)."""
        if self._outage_timeout is None:
            from airflow_mlops.utils.config import service_outage_timeout

            self._outage_timeout = service_outage_timeout()
        return self._outage_timeout

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """
        The connection form's extra fields, for Airflow 3.1.

        Airflow 3.2+ reads them from ``conn-fields`` in the provider metadata and never calls this; 3.1 only
        knows this method. Both are built from the same ``conn-fields`` entry.
        """
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, PasswordField, StringField

        widgets: dict[str, Any] = {}
        for name, field in _connection_type()["conn-fields"].items():
            schema = field.get("schema", {})
            label = lazy_gettext(field["label"])
            description = field.get("description", "")
            if "boolean" in schema.get("type", []):
                widgets[name] = BooleanField(label, description=description, default=schema.get("default"))
            elif schema.get("format") == "password":
                widgets[name] = PasswordField(label, description=description, widget=BS3PasswordFieldWidget())
            else:
                widgets[name] = StringField(label, description=description, widget=BS3TextFieldWidget())
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's hidden and relabelled fields, for Airflow 3.1 (``ui-field-behaviour`` on 3.2+)."""
        behaviour = _connection_type()["ui-field-behaviour"]
        return {
            "hidden_fields": list(behaviour.get("hidden-fields", [])),
            "relabeling": dict(behaviour.get("relabeling", {})),
            "placeholders": dict(behaviour.get("placeholders", {})),
        }

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
        if "://" not in host:
            host = f"{conn.schema if conn.schema in _REMOTE_SCHEMES else 'http'}://{host}"
        tracking = self._split_uri("host", host)
        tracking_uri = tracking.url
        parts = urlsplit(tracking_uri)
        if conn.port and parts.scheme in _REMOTE_SCHEMES and parts.port is None:
            tracking_uri = parts._replace(netloc=f"{parts.netloc}:{conn.port}").geturl()
        registry = self._split_uri("registry_uri extra", (extra.get("registry_uri") or "").strip())
        username = self._merge("user name", "login", conn.login, tracking.username, registry.username)
        password = self._merge("password", "password", conn.password, tracking.password, registry.password)
        return {
            "tracking_uri": tracking_uri.rstrip("/"),
            "registry_uri": registry.url or None,
            "username": username,
            "password": password,
            "token": extra.get("token") or None,
            "verify_tls": _truthy(extra.get("verify_tls"), default=True),
        }

    def _split_uri(self, field: str, uri: str) -> URLCredentials:
        """
        *uri* of the connection's *field* without user-info, and the user-info's credentials (masked).

        Credentials in an ``http(s)`` URI become the connection's basic-auth credentials; other URIs (a
        database) are refused, because MLflow can only read their credentials from the URI itself.
        """
        from airflow.sdk.log import mask_secret

        try:
            split = split_credentials(uri)
        except ValueError as err:
            raise ConnectionSetupError(f"MLflow connection {self.mlflow_conn_id!r}: {field}: {err}") from None
        if split.password:
            mask_secret(split.password)
        if split.password and urlsplit(split.url).scheme not in _REMOTE_SCHEMES:
            raise ConnectionSetupError(
                f"MLflow connection {self.mlflow_conn_id!r}: the {field} {split.url!r} carries a password in "
                "its URI, which would reach logs, links and trainers. Point the connection at an MLflow "
                "tracking server (http(s)://host:port) with the credentials in login/password, or give the "
                "database its password outside the URI (for example PGPASSWORD or ~/.pgpass)."
            )
        if urlsplit(split.url).scheme not in _REMOTE_SCHEMES:
            # A database keeps its user name in its URI, where MLflow reads it.
            return URLCredentials(uri, None, None)
        return split

    def _merge(self, what: str, field: str, own: str | None, *from_uris: str | None) -> str | None:
        """The connection's *field*, or the one value the URIs' user-info gives; refuse two different ones."""
        values = {value for value in (own, *from_uris) if value}
        if len(values) > 1:
            raise ConnectionSetupError(
                f"MLflow connection {self.mlflow_conn_id!r} gives two different {what}s: one in its {field} "
                "and one in the user-info of its host or registry_uri (user:password@). Keep the "
                "credentials in login/password only and remove them from the URI."
            )
        return values.pop() if values else None

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
        """
        Wait until the server answers ``/health``, for up to :attr:`outage_timeout` seconds.

        :raises ServiceUnavailableError: naming the connection, the URI and the time waited, if it does not.
        """
        if not self.is_remote:
            return
        import requests

        def probe() -> None:
            try:
                response = requests.get(
                    f"{self.tracking_uri}/health", timeout=timeout, verify=self._settings["verify_tls"]
                )
            except requests.exceptions.SSLError as err:
                raise ServiceUnavailableError(
                    f"MLflow server {self.tracking_uri} (connection {self.mlflow_conn_id!r}) is unreachable: "
                    f"{describe_error(err)}",
                    uri=self.tracking_uri, reason="tls",
                ) from err  # fmt: skip
            if response.status_code >= 500:
                raise requests.HTTPError(f"HTTP {response.status_code} on /health", response=response)

        def is_down(err: BaseException) -> bool:
            return isinstance(err, requests.RequestException) and not isinstance(err, requests.exceptions.SSLError)

        self._wait_out(probe, is_transient=is_down)

    def _wait_out(self, call: Callable[[], Any], is_transient: Callable[[BaseException], bool]) -> Any:
        """``call()``, trying again for :attr:`outage_timeout` seconds while *is_transient* says so."""
        window = self.outage_timeout

        def give_up(err: BaseException, waited: float) -> ServiceUnavailableError:
            return ServiceUnavailableError(
                f"MLflow server {self.tracking_uri} (connection {self.mlflow_conn_id!r}) is unreachable: "
                f"{describe_error(err)}; tried for {waited:.0f} s ([mlops] service_outage_timeout = "
                f"{window:g} s)",
                uri=self.tracking_uri, reason="unreachable", waited=round(waited, 1),
            )  # fmt: skip

        return wait_out(
            call,
            what=f"MLflow server {self.tracking_uri}",
            window=window,
            is_transient=is_transient,
            give_up=give_up,
            logger=self.log,
        )

    def get_conn(self) -> MlflowClient:
        """
        Return an :class:`mlflow.MlflowClient` for the connection.

        Also points MLflow's fluent API (``mlflow.start_run``, ``mlflow.models.evaluate``, model loading)
        at the connection's tracking and registry URIs for the rest of this task. Waits for an unreachable
        server first, and the client's calls wait one out, for up to :attr:`outage_timeout` seconds.
        """
        import mlflow

        from airflow_mlops.hooks._mlflow_outages import is_transient, outage_tolerant_client

        self.check_reachable()
        self._register_credentials()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        return outage_tolerant_client(
            tracking_uri=self.tracking_uri,
            registry_uri=self.registry_uri,
            call_through=lambda call: self._wait_out(call, is_transient),
        )

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

