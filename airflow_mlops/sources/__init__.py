"""
Data sources of an ingest.

Files (:class:`FileSource`), a database query (:class:`SqlSource`), or your own (:class:`DataSource`): see
"Writing your own source" in docs/data.md.
"""

from __future__ import annotations

from airflow_mlops.sources.base import DataSource, SourceContext, SourceReading
from airflow_mlops.sources.files import FileSource
from airflow_mlops.sources.sql import SqlSource

__all__ = ["DataSource", "FileSource", "SourceContext", "SourceReading", "SqlSource"]
