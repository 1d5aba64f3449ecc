"""A database query as a data source, through any common.sql connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops.data.snapshots import SHA256_OF_ROWS
from airflow_mlops.exceptions import ConfigurationError, ConnectionSetupError, DatasetError
from airflow_mlops.sources.base import DataSource, SourceContext, SourceReading
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SqlSource"]


class SqlSource(DataSource):
    """
    The rows of a query, through any common.sql connection.

    The connection's hook must be a common.sql ``DbApiHook`` (postgres, mysql, sqlite, snowflake, ...;
    ``pip install 'airflow-provider-mlops[sql]'``).

    The query runs once per try; the fingerprint is the SHA-256 of the rows, so the same rows give the same
    snapshot. A query that fails or returns no rows fails the task (not retried).

    :param sql_conn_id: The connection of the database.
    :param sql: The query. (templated)
    """

    template_fields = ("sql_conn_id", "sql")

    def __init__(self, sql_conn_id: str, sql: str) -> None:
        if not isinstance(sql_conn_id, str) or not sql_conn_id:
            raise ValueError("sql needs sql_conn_id: the Airflow connection of the database to query")
        if not is_templated(sql) and (not isinstance(sql, str) or not sql.strip()):
            raise ValueError(f"sql must be a non-empty query, got {sql!r}")
        self.sql_conn_id = sql_conn_id
        self.sql = sql

    @property
    def uri(self) -> str:
        return f"sql://{self.sql_conn_id}"

    def open(self, ctx: SourceContext) -> SourceReading:
        from airflow_mlops.data.sources import frame_sha256

        if not isinstance(self.sql, str) or not self.sql.strip():
            raise ConfigurationError(
                f"Dataset {ctx.dataset!r}: sql must be a non-empty query, got {self.sql!r}",
                dataset=ctx.dataset,
            )
        df = self._query(ctx, self.sql.strip())
        content_sha256 = frame_sha256(df)
        ctx.log.info("Dataset %s: query returned %d rows, sha256 %s", ctx.dataset, len(df), content_sha256)
        return SourceReading(
            sha256=content_sha256,
            sha256_of=SHA256_OF_ROWS,
            format="sql",
            described={
                "source": self.uri,
                "query": self.sql.strip(),
                "source_files": [],
                "bytes": int(df.memory_usage(index=False, deep=True).sum()),
            },
            read=lambda: df,
        )

    def _query(self, ctx: SourceContext, query: str) -> pd.DataFrame:
        name, source = ctx.dataset, self.uri
        try:
            db_hook: Any = BaseHook.get_connection(str(self.sql_conn_id)).get_hook()
        except Exception as err:
            raise ConnectionSetupError(
                f"Dataset {name!r}: cannot build a database hook from connection {self.sql_conn_id!r}: {err}. "
                "Define the connection, and install the Airflow provider of its type (SQL databases also need "
                "pip install 'airflow-provider-mlops[sql]', the common.sql provider).",
                dataset=name, uri=source,
            ) from err  # fmt: skip
        if not hasattr(db_hook, "get_df") and not hasattr(db_hook, "get_pandas_df"):
            raise ConnectionSetupError(
                f"Dataset {name!r}: connection {self.sql_conn_id!r} gives a {type(db_hook).__name__}, which "
                "is not a common.sql DbApiHook (no get_df): use a SQL database connection",
                dataset=name, uri=source,
            )  # fmt: skip
        ctx.log.info("Dataset %s: running query on connection %s", name, self.sql_conn_id)
        try:
            if hasattr(db_hook, "get_df"):
                df = db_hook.get_df(query, df_type="pandas")
            else:  # common.sql before 1.26
                df = db_hook.get_pandas_df(query)
        except Exception as err:
            raise DatasetError(
                f"Dataset {name!r}: query on connection {self.sql_conn_id!r} failed: {err}",
                dataset=name, uri=source, reason=str(err),
            ) from err  # fmt: skip
        df.columns = [str(column) for column in df.columns]
        if len(df) == 0:
            raise DatasetError(
                f"Dataset {name!r}: query on connection {self.sql_conn_id!r} returned no rows",
                dataset=name, uri=source, reason="no rows",
            )  # fmt: skip
        return df
