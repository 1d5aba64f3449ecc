"""A Spark table, query or data path as a data source: Spark fingerprints it and writes the snapshot itself."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.storage import is_local, local_path, scheme, split_conn
from airflow_mlops.exceptions import DatasetConfigurationError, DatasetError
from airflow_mlops.sources.base import DataSource, SourceContext, SourceReading
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from airflow_mlops.data.storage import Storage

__all__ = ["SparkSource"]

#: What a Spark source's fingerprint is of: its rows, hashed by Spark (order does not matter).
SHA256_OF_SPARK_ROWS = "spark-rows"
# Spark types as the manifest's schema writes them (pandas dtype names, as every other snapshot's).
_DTYPES = {
    "bigint": "int64", "int": "int32", "smallint": "int16", "tinyint": "int8", "double": "float64",
    "float": "float32", "boolean": "bool", "string": "object", "timestamp": "datetime64[ns]",
}  # fmt: skip


class SparkSource(DataSource):
    """
    The rows of a Spark table, Spark SQL query or data path, snapshotted by Spark: no row reaches the worker.

    Spark computes the content fingerprint (two 64-bit hashes of every row, each column with its null marker,
    summed, with the row count and the schema; the order of rows does not matter) and writes the snapshot's
    one Parquet file itself, to the data root (a local folder, or ``s3://`` written as ``s3a://``, which the
    Spark cluster must be able to write). The same rows give the same snapshot, which is then not written
    again. A split cannot be asked for (it would bring the rows to the worker): split in the trainer.

    :param spark_conn_id: The Spark connection (:class:`~airflow_mlops.hooks.spark.SparkHook`). (templated)
    :param table: A catalog table, or a path table such as ``parquet.`s3a://bucket/events```. (templated)
    :param query: A Spark SQL ``SELECT``, instead of ``table``. (templated)
    :param path: A file or folder Spark reads with ``format``, instead of ``table``. (templated)
    :param format: The format of ``path`` (``parquet``, ``orc``, ``json``, ``csv``, ``delta``...).
    """

    template_fields = ("spark_conn_id", "table", "query", "path")

    def __init__(
        self,
        spark_conn_id: str = "spark_default",
        table: str | None = None,
        query: str | None = None,
        path: str | None = None,
        format: str = "parquet",
    ) -> None:
        if not isinstance(spark_conn_id, str) or not spark_conn_id.strip():
            raise ValueError(f"spark_conn_id must be a Spark connection id, got {spark_conn_id!r}")
        given = [
            name for name, value in (("table", table), ("query", query), ("path", path)) if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"A SparkSource takes exactly one of table, query or path, got {given or 'none'}"
            )
        value = {"table": table, "query": query, "path": path}[given[0]]
        if not is_templated(value) and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{given[0]} must be a non-empty string, got {value!r}")
        self.spark_conn_id = spark_conn_id
        self.table = table
        self.query = query
        self.path = path
        self.format = format

    @property
    def uri(self) -> str:
        if self.table is not None:
            return f"spark://{self.spark_conn_id}/{self.table}"
        if self.path is not None:
            return str(self.path)
        return f"spark://{self.spark_conn_id}"

    def open(self, ctx: SourceContext) -> SourceReading:
        from airflow_mlops.data.spark_drift import SparkData
        from airflow_mlops.hooks.spark import SparkHook, import_pyspark

        import_pyspark()
        from pyspark.errors import PySparkException
        from pyspark.sql import functions as F  # noqa: N812

        name, uri = ctx.dataset, self.uri
        if not ctx.whole_copy:
            raise DatasetConfigurationError(
                f"Dataset {name!r}: a Spark source is snapshotted by Spark as it is, so it takes no split and "
                "needs server_side_copy=True (the default); split the snapshot in the trainer",
                dataset=name, uri=uri,
            )  # fmt: skip
        data = SparkData(
            table=_text(self.table), query=_text(self.query), path=_text(self.path), format=self.format
        )
        hook = SparkHook(spark_conn_id=str(self.spark_conn_id).strip())
        try:
            frame = data.frame(hook.get_conn())
            schema = {field.name: field.dataType.simpleString() for field in frame.schema.fields}
            marked = [part for c in frame.columns for part in (F.col(f"`{c}`"), F.col(f"`{c}`").isNull())]
            sums = [F.sum(F.xxhash64(*marked).cast("decimal(38,0)"))]
            sums.append(F.sum(F.xxhash64(F.lit("airflow-mlops"), *marked).cast("decimal(38,0)")))
            ctx.log.info("Dataset %s: Spark at %s fingerprints %s", name, hook.describe, data.describe())
            (row,) = frame.agg(F.count(F.lit(1)), *sums).collect()
        except PySparkException as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
            raise DatasetError(
                f"Dataset {name!r}: Spark cannot read {data.describe()}: {reason}",
                dataset=name, uri=uri, reason=reason,
            ) from err  # fmt: skip
        rows = int(row[0])
        if not rows:
            raise DatasetError(
                f"Dataset {name!r}: {data.describe()} has no rows", dataset=name, uri=uri, reason="no rows"
            )
        text = "|".join([repr(sorted(schema.items())), str(rows), str(row[1]), str(row[2])])
        sha256 = hashlib.sha256(text.encode()).hexdigest()
        ctx.log.info("Dataset %s: %d rows, fingerprint %s", name, rows, sha256)

        def copy(dest: str) -> None:
            _write(frame, dest, ctx.storage_hook.storage_for(dest), name, uri)

        def read() -> Any:  # never called: the snapshot is always Spark's copy
            raise AssertionError("a Spark source is only copied")

        return SourceReading(
            sha256=sha256, sha256_of=SHA256_OF_SPARK_ROWS, format="spark",
            described={
                "source": uri, "source_files": [], "spark": hook.describe,
                **({"query": data.query} if data.query else {}),
            },
            read=read, copy=copy, rows=rows,
            schema={column: _DTYPES.get(kind, kind) for column, kind in schema.items()},
        )  # fmt: skip


def _text(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def _write(frame: DataFrame, dest: str, storage: Storage, name: str, uri: str) -> None:
    """Spark writes one Parquet file into a staging folder next to *dest*; it becomes *dest*."""
    from pyspark.errors import PySparkException

    staging = dest + ".spark-staging"
    spark_path = str(local_path(staging)) if is_local(staging) else _hadoop_uri(staging)
    try:
        frame.coalesce(1).write.mode("overwrite").parquet(spark_path)
    except PySparkException as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
        raise DatasetError(
            f"Dataset {name!r}: Spark cannot write the snapshot to {staging}: {reason}",
            dataset=name, uri=uri, reason=reason,
        ) from err  # fmt: skip
    parts = [u for u in storage.list_uris(staging) if u.rsplit("/", 1)[-1].startswith("part-")]
    if len(parts) != 1:
        raise DatasetError(
            f"Dataset {name!r}: Spark wrote {len(parts)} data files to {staging}, expected one",
            dataset=name, uri=uri, reason="not one data file",
        )  # fmt: skip
    storage.copy(parts[0], dest)
    for leftover in storage.list_uris(staging):
        storage.delete(leftover)
    storage.delete(staging)


def _hadoop_uri(uri: str) -> str:
    """*uri* as Spark's Hadoop filesystems name it (``s3://`` is ``s3a://``), without a connection id."""
    uri = split_conn(uri)[1]
    protocol = scheme(uri)
    return _HADOOP_SCHEMES.get(protocol, protocol) + uri[len(protocol) :]


# The Hadoop connector of each object store whose name differs from the URI scheme.
_HADOOP_SCHEMES = {"s3": "s3a"}
