"""The ``[mlops]`` options, read when a task runs (never while a DAG file is parsed)."""

from __future__ import annotations


def allowed_sources() -> list[str]:
    """``[mlops] allowed_sources``, parsed (empty: the data root and the demo data folder)."""
    from airflow_mlops.data.sources import parse_allowed_sources
    from airflow_mlops.version_compat import conf

    return parse_allowed_sources(conf.get("mlops", "allowed_sources", fallback=""))


def approval_required() -> bool:
    """``[mlops] require_approval`` (default True): only gated, approved versions may become champion or serve."""
    from airflow_mlops.version_compat import conf

    return conf.getboolean("mlops", "require_approval", fallback=True)


#: Default of ``[mlops] release_wait_timeout``: longer than the lease of a deploy with the default settings.
DEFAULT_RELEASE_WAIT_TIMEOUT = 3600.0


def release_wait_timeout() -> float:
    """``[mlops] release_wait_timeout`` (seconds, default one hour): how long a rollback waits for another release."""
    from airflow_mlops.version_compat import conf

    return conf.getfloat("mlops", "release_wait_timeout", fallback=DEFAULT_RELEASE_WAIT_TIMEOUT)


#: Default of ``[mlops] service_outage_timeout``: outlasts a restart of MLflow or of an S3-compatible store.
DEFAULT_SERVICE_OUTAGE_TIMEOUT = 300.0


def service_outage_timeout() -> float:
    """
    ``[mlops] service_outage_timeout`` (seconds, default 300): how long calls to MLflow and S3 wait out an outage.

    A call that cannot reach its server is tried again with backoff for this long before the task fails
    (retryable); 0 fails at the first refused connection.
    """
    from airflow_mlops.version_compat import conf

    value = conf.getfloat("mlops", "service_outage_timeout", fallback=DEFAULT_SERVICE_OUTAGE_TIMEOUT)
    if value < 0:
        from airflow_mlops.exceptions import ConfigurationError

        raise ConfigurationError(f"[mlops] service_outage_timeout must be 0 or more seconds, got {value:g}")
    return value
