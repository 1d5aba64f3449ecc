"""Hook for a Spark cluster: a Spark Connect server (``sc://``) or a master URL, as a ``SparkSession``."""

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseHook

from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.version_compat import AirflowNotFoundException

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: What to install for the Spark engine.
SPARK_EXTRA_HINT = "pip install 'airflow-provider-mlops[spark]'"
#: Master URLs a ``spark`` connection may give (besides ``sc://`` for Spark Connect).
MASTER_PREFIXES = ("local", "spark://", "yarn", "k8s://", "mesos://")
_DEFAULT_CONNECT_PORT = 15002


def import_pyspark() -> Any:
    """The ``pyspark.sql`` module, or a :class:`ConnectionSetupError` saying which extra to install."""
    try:
        import pyspark.sql
    except ImportError as err:
        raise ConnectionSetupError(
            f"The Spark engine needs pyspark, which is not installed: {SPARK_EXTRA_HINT}"
        ) from err
    return pyspark.sql


class SparkHook(BaseHook):
    """
    A ``SparkSession`` built from an Airflow connection, for the Spark engine of the data stages.

    The connection's host is either a Spark Connect URL (``sc://host``, port from the URL or the connection's
    port, default 15002; the password is sent as the Connect ``token`` and the login as its ``user_id``) or a
    master URL (``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://https://host``) for a session whose
    driver runs in the worker. Extras: ``app_name`` and ``conf``, a dict of Spark settings
    (``{"spark.executor.memory": "4g"}``). Connections made for the Apache Spark provider (types ``spark``
    and ``spark_connect``) work as they are.

    The token is masked in logs and never part of an error message or a returned value.

    :param spark_conn_id: The Airflow connection to use.
    """

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    conn_type = "mlops_spark"
    hook_name = "Spark session (MLOps)"

    def __init__(self, spark_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spark_conn_id = spark_conn_id

    @cached_property
    def settings(self) -> dict[str, Any]:
        """``{"remote" or "master", "app_name", "conf", "describe"}`` of the connection; ``describe`` has no secret."""
        try:
            conn = self.get_connection(self.spark_conn_id)
        except AirflowNotFoundException as err:
            raise ConnectionSetupError(
                f"Spark connection {self.spark_conn_id!r} is not defined. Create a connection whose host is a "
                "Spark Connect URL (sc://host:15002) or a master URL (local[2], spark://host:7077, yarn)."
            ) from err
        extra = conn.extra_dejson
        host = (conn.host or "").strip()
        conf = extra.get("conf") or {}
        if not isinstance(conf, dict):
            raise ConnectionSetupError(
                f"Spark connection {self.spark_conn_id!r}: the conf extra must be a dict of Spark settings, "
                f"got {type(conf).__name__}"
            )
        settings: dict[str, Any] = {
            "app_name": str(extra.get("app_name") or "airflow-mlops"),
            "conf": {str(k): str(v) for k, v in conf.items()},
        }
        if host.startswith("sc://") or conn.conn_type == "spark_connect":
            settings["remote"], settings["describe"] = self._connect_url(conn, host)
            return settings
        if (
            conn.conn_type == "spark"
            and host
            and "://" not in host
            and not host.startswith(("local", "yarn"))
        ):
            host = f"spark://{host}"  # the Apache Spark provider's connections give the master's host alone
        if conn.port and host.startswith("spark://") and urlsplit(host).port is None:
            host = f"{host}:{conn.port}"
        if not host.startswith(MASTER_PREFIXES):
            raise ConnectionSetupError(
                f"Spark connection {self.spark_conn_id!r}: host {host!r} is neither a Spark Connect URL "
                f"(sc://host:port) nor a master URL ({', '.join(p.rstrip(':/') for p in MASTER_PREFIXES)})"
            )
        settings["master"] = settings["describe"] = host
        return settings

    def _connect_url(self, conn: Any, host: str) -> tuple[str, str]:
        """The ``sc://`` URL with the token and user, and the same URL without any secret (for messages)."""
        from airflow.sdk.log import mask_secret

        if not host.startswith("sc://"):
            host = "sc://" + host
        base, _, params_text = host.partition("/;")
        parts = urlsplit(base)
        if parts.username or parts.password:
            raise ConnectionSetupError(
                f"Spark connection {self.spark_conn_id!r}: the host carries user-info; put the token in the "
                "connection's password and the user in its login"
            )
        params = dict(p.split("=", 1) for p in params_text.split(";") if "=" in p)
        if conn.password:
            params["token"] = conn.password
        if conn.login:
            params["user_id"] = conn.login
        if params.get("token"):
            mask_secret(params["token"])
        netloc = parts.netloc if parts.port else f"{parts.netloc}:{conn.port or _DEFAULT_CONNECT_PORT}"
        url = f"sc://{netloc}/" + "".join(f";{k}={quote(str(v), safe='')}" for k, v in params.items())
        shown = {k: ("***" if k == "token" else v) for k, v in params.items()}
        return url, f"sc://{netloc}/" + "".join(f";{k}={v}" for k, v in shown.items())

    @property
    def describe(self) -> str:
        """Where the connection points, without its token (for logs and messages)."""
        return str(self.settings["describe"])

    def get_conn(self) -> SparkSession:
        """
        The ``SparkSession`` of the connection (the active one of this process when it has the same master).

        :raises ConnectionSetupError: pyspark is missing, or the connection is malformed.
        """
        settings = self.settings  # a malformed connection is named before pyspark is even imported
        sql = import_pyspark()
        builder = sql.SparkSession.builder.appName(settings["app_name"])
        if "remote" in settings:
            builder = builder.remote(settings["remote"])
        else:
            builder = builder.master(settings["master"])
            if settings["master"].startswith("local"):
                # Local executors run Python UDFs (the models of batch evaluation) in the worker's interpreter,
                # not in whichever python3 is first on the PATH.
                os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in settings["conf"].items():
            builder = builder.config(key, value)
        self.log.info("Spark session at %s", self.describe)
        return builder.getOrCreate()

    def test_connection(self) -> tuple[bool, str]:
        """Run ``SELECT 1`` in the session: ``(True, message)`` or ``(False, the error)``."""
        try:
            (row,) = self.get_conn().sql("SELECT 1 AS ok").collect()
            return bool(row["ok"] == 1), f"Spark at {self.describe} answered"
        except Exception as err:
            return False, f"Spark at {self.describe}: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
