"""
Data sources of an ingest.

Files (:class:`FileSource`), a database query (:class:`SqlSource`), a Spark table, query or path
(:class:`SparkSource`, snapshotted by Spark itself), or your own (:class:`DataSource`): see
"Writing your own source" in docs/data.md. The classes load when first named, so that a DAG file importing
the ingest operator loads only the interface.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from airflow_mlops.sources.base import DataSource, SourceContext, SourceReading
    from airflow_mlops.sources.files import FileSource
    from airflow_mlops.sources.spark import SparkSource
    from airflow_mlops.sources.sql import SqlSource

__all__ = [
    "DataSource",
    "FileSource",
    "SourceContext",
    "SourceReading",
    "SparkSource",
    "SqlSource",
    "is_data_source",
]

_HOMES = {
    "DataSource": "base",
    "SourceContext": "base",
    "SourceReading": "base",
    "FileSource": "files",
    "SqlSource": "sql",
    "SparkSource": "spark",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def is_data_source(value: object) -> TypeGuard[DataSource]:
    """
    Whether *value* is a :class:`DataSource`, without loading the interface at parse time.

    An instance can exist only once its class's module is imported, so while it is not, nothing is one.
    """
    base = sys.modules.get(f"{__name__}.base")
    return base is not None and isinstance(value, base.DataSource)
