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
