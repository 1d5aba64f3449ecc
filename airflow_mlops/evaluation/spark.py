"""
Batch scoring of a holdout by Spark for ``EvaluateModelOperator(spark_conn_id=...)``.

Each model is applied where the data is, with ``mlflow.pyfunc.spark_udf`` (the executors load the model; the
driver's Python environment serves as theirs), to exactly the input columns of its signature. Only the label,
the slice columns and one prediction column per model reach the worker, which computes the metrics from them
(``mlflow.models.evaluate`` on the predictions), so the feature columns of the holdout never leave Spark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

#: Column of the worker's frame holding the predictions of model *key* (``prediction_column(key)``).
_PREDICTION_PREFIX = "_mlops_prediction_"


def prediction_column(key: str) -> str:
    """The column of :func:`score_on_spark`'s frame with the predictions of the model named *key*."""
    return _PREDICTION_PREFIX + key


def spark_uri(file_uri: str) -> str:
    """The URI Spark reads a file at: ``s3://`` as ``s3a://`` (Hadoop's S3 connector), others as they are."""
    return "s3a://" + file_uri[len("s3://") :] if file_uri.startswith("s3://") else file_uri


def missing_columns(frame: DataFrame, wanted: Sequence[str]) -> list[str]:
    """The *wanted* columns the Spark frame lacks."""
    return [column for column in wanted if column not in frame.columns]


def score_on_spark(
    session: SparkSession,
    frame: DataFrame,
    target: str,
    keep: Sequence[str],
    models: Mapping[str, tuple[str, Sequence[str]]],
    result_type: str,
) -> pd.DataFrame:
    """
    Score *frame* with each model in one Spark job and bring back only the label, *keep* and the predictions.

    :param frame: The holdout, as a Spark DataFrame.
    :param target: The label column.
    :param keep: Other columns the worker needs (the slice columns).
    :param models: ``{key: (model URI, its input columns)}``.
    :param result_type: Spark type of the predictions (the label's for a classifier, ``double`` otherwise).
    :return: A pandas frame: *target*, *keep* and ``prediction_column(key)`` per model, one row per holdout row.
    """
    import mlflow
    from pyspark.sql import functions as F  # noqa: N812

    selected: list[Any] = [F.col(target), *(F.col(c) for c in keep if c != target)]
    for key, (uri, columns) in models.items():
        predict = mlflow.pyfunc.spark_udf(session, uri, result_type=result_type, env_manager="local")
        selected.append(predict(F.struct(*(F.col(c) for c in columns))).alias(prediction_column(key)))
    return frame.select(*selected).toPandas()


def label_type(frame: DataFrame, target: str, model_type: str) -> str:
    """The Spark type of the predictions: the label's for a classifier (class labels), ``double`` otherwise."""
    if model_type != "classifier":
        return "double"
    return str(frame.schema[target].dataType.simpleString())
