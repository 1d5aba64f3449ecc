"""
How a served model is doing, from its captured traffic, without Airflow.

Feature drift compares the captured inputs with the champion's training snapshot, prediction drift compares the
captured predictions with the champion's predictions on its evaluation holdout (both with
:func:`airflow_mlops.data.drift.compute_drift`), data quality is a Great Expectations suite run on the captured
inputs (:mod:`airflow_mlops.data.expectations`), and live performance joins ground-truth labels on
``_request_id`` and compares a metric with the one the evaluation measured. :func:`verdict` turns the four, and
whether the endpoint answers, into ``healthy``, ``degraded`` (with reasons) or ``not_enough_traffic``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.capture import META_COLUMNS, PREDICTION, REQUEST_ID

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import pandas as pd

HEALTHY, DEGRADED, NOT_ENOUGH_TRAFFIC = "healthy", "degraded", "not_enough_traffic"
VERDICTS = (HEALTHY, DEGRADED, NOT_ENOUGH_TRAFFIC)
#: Live-performance metrics (scikit-learn names, as the evaluation reports them) and whether higher is better.
PERFORMANCE_METRICS: dict[str, bool] = {
    "accuracy_score": True,
    "f1_score": True,
    "precision_score": True,
    "recall_score": True,
    "mean_absolute_error": False,
    "root_mean_squared_error": False,
}
PREDICTION_FEATURE = "prediction"
#: Predictions with at most this many distinct values (class labels) are compared as categories.
MAX_CLASSES = 20


def feature_columns(captured: pd.DataFrame) -> list[str]:
    """The input columns of a capture (without the capture's own ``_`` columns)."""
    return [c for c in captured.columns if c not in META_COLUMNS]


def as_predictions(values: Any) -> pd.Series:
    """*values* as a Series; text that is all numbers as numbers."""
    import pandas as pd

    series = pd.Series(values).reset_index(drop=True)
    if series.dtype == object:
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.notna().sum() == series.notna().sum():
            series = numeric
    return series


def prediction_frames(reference: Any, current: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current predictions as one-column frames; class labels (few values) as categories."""
    import pandas as pd

    ref, cur = as_predictions(reference), as_predictions(current)
    numeric = pd.api.types.is_numeric_dtype(ref) and pd.api.types.is_numeric_dtype(cur)
    if numeric:  # 1 and 1.0 are the same class
        ref, cur = ref.astype(float), cur.astype(float)
    distinct = set(ref.dropna().unique()) | set(cur.dropna().unique())
    if len(distinct) <= MAX_CLASSES:
        ref, cur = ref.astype("string"), cur.astype("string")
    return pd.DataFrame({PREDICTION_FEATURE: ref}), pd.DataFrame({PREDICTION_FEATURE: cur})


def live_performance(
    captured: pd.DataFrame | Iterable[pd.DataFrame],
    labels: pd.DataFrame,
    label_column: str,
    metric: str,
    baseline: float | None,
    max_drop: float,
    min_labels: int,
) -> dict[str, Any]:
    """
    *metric* of the captured predictions against the labels joined on ``_request_id`` (one label per request).

    :param captured: The captured rows (with ``_request_id`` and ``_prediction``), or frames of them one after
        the other (joined one at a time).
    :param labels: Ground truth: ``_request_id`` and *label_column*; the last label of a request counts.
    :returns: ``{"metric", "value", "baseline", "labelled", "degraded"}``; ``value`` None below *min_labels*.
    """
    import numpy as np
    import pandas as pd
    from sklearn import metrics as skm

    if REQUEST_ID not in labels.columns or label_column not in labels.columns:
        raise ValueError(
            f"labels need the columns {REQUEST_ID!r} and {label_column!r}, got {list(labels.columns)}"
        )
    truth = labels[[REQUEST_ID, label_column]].drop_duplicates(REQUEST_ID, keep="last")
    frames = [captured] if isinstance(captured, pd.DataFrame) else captured
    pieces = [  # a merge keeps the captured rows' order
        frame[[REQUEST_ID, PREDICTION]].merge(truth, on=REQUEST_ID, how="inner") for frame in frames
    ]
    if pieces:
        joined = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
    else:
        joined = pd.DataFrame(columns=[REQUEST_ID, PREDICTION, label_column])
    joined = joined.dropna(subset=[PREDICTION, label_column])
    out: dict[str, Any] = {
        "metric": metric,
        "value": None,
        "baseline": baseline,
        "labelled": int(len(joined)),
    }
    if len(joined) < min_labels:
        out["degraded"] = False
        return out
    y_true, y_pred = _aligned(joined[label_column], joined[PREDICTION])
    if metric == "root_mean_squared_error":
        value = float(np.sqrt(skm.mean_squared_error(y_true.astype(float), y_pred.astype(float))))
    elif metric == "mean_absolute_error":
        value = float(skm.mean_absolute_error(y_true.astype(float), y_pred.astype(float)))
    else:
        value = float(getattr(skm, metric)(y_true, y_pred, **class_metric_kwargs(metric, y_true, y_pred)))
    out["value"] = round(value, 6)
    if baseline is not None:
        higher = PERFORMANCE_METRICS[metric]
        drop = (baseline - value) if higher else (value - baseline)
        out["drop"] = round(drop, 6)
        out["degraded"] = drop > max_drop
    else:
        out["degraded"] = False
    return out


def class_metric_kwargs(metric: str, y_true: Any, y_pred: Any) -> dict[str, Any]:
    """
    The scikit-learn arguments of a live classification *metric*.

    Macro averaging over more than two classes, else the positive class (1 when it is one of them, else the
    last class); none for accuracy.
    """
    if metric == "accuracy_score":
        return {}
    classes = sorted(set(y_true) | set(y_pred))
    return {"average": "macro"} if len(classes) > 2 else {"pos_label": 1.0 if 1.0 in classes else classes[-1]}


def _aligned(labels: pd.Series, predictions: pd.Series) -> tuple[Any, Any]:
    """Labels and predictions of one type: floats when both are numbers (1 == 1.0), else text."""
    import pandas as pd

    y_true, y_pred = as_predictions(labels), as_predictions(predictions)
    if pd.api.types.is_numeric_dtype(y_true) and pd.api.types.is_numeric_dtype(y_pred):
        return y_true.to_numpy(dtype=float), y_pred.to_numpy(dtype=float)
    return y_true.astype(str).to_numpy(), y_pred.astype(str).to_numpy()


def verdict(
    records: int,
    min_records: int,
    feature_drift: Mapping[str, Any] | None,
    prediction_drift: Mapping[str, Any] | None,
    data_quality: Mapping[str, Any] | None,
    performance: Mapping[str, Any] | None,
    endpoint_problem: str | None = None,
) -> tuple[str, list[str]]:
    """
    ``(verdict, reasons)`` of one window.

    Degraded when the endpoint is unavailable (*endpoint_problem*, the first reason) or any check says so;
    ``not_enough_traffic`` below *min_records* while the endpoint is up.
    """
    reasons = [endpoint_problem] if endpoint_problem else []
    if records < min_records:
        few = f"{records} captured rows in the window, fewer than min_records={min_records}"
        return (DEGRADED, [*reasons, few]) if reasons else (NOT_ENOUGH_TRAFFIC, [few])
    if feature_drift and feature_drift.get("drift"):
        named = [
            *feature_drift.get("drifted_features", []),
            *(f"{c} (missing)" for c in feature_drift.get("missing_features", [])),
        ]
        reasons.append("feature drift: " + ", ".join(named or ["new columns"]))
    if prediction_drift and prediction_drift.get("drift"):
        metrics = (prediction_drift.get("features") or {}).get(PREDICTION_FEATURE, {})
        exceeded = ", ".join(f"{m}={metrics['metrics'][m]:.3g}" for m in metrics.get("exceeded", []))
        reasons.append(f"prediction drift ({exceeded})" if exceeded else "prediction drift")
    if data_quality and not data_quality.get("success", True):
        failed = [f"{f.get('expectation')}({f.get('column') or ''})" for f in data_quality.get("failed", [])]
        reasons.append("data quality: " + ", ".join(failed[:10]))
    if performance and performance.get("degraded"):
        reasons.append(
            f"live {performance['metric']} {performance['value']:.4g} vs {performance['baseline']:.4g} at evaluation"
        )
    return (DEGRADED if reasons else HEALTHY), reasons


def quality_suite(features: Sequence[str], min_rows: int = 1) -> list[dict[str, Any]]:
    """The default suite of captured inputs: exactly the model's features, none of them null."""
    return [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": list(features), "exact_match": True},
        },
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": min_rows}},
        *({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}} for c in features),
    ]


def run_quality(frame: pd.DataFrame, expectations: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Run *expectations* on *frame* with Great Expectations; the summary of :func:`~...expectations.summarize`."""
    from airflow_mlops.data.expectations import build_suite, dataframe_batch, ephemeral_context, summarize

    suite = build_suite(expectations, "expectations", f"{name}-captures")
    context = ephemeral_context()
    batch = dataframe_batch(context, f"{name}-captures", frame)
    return summarize(batch.validate(suite, result_format="SUMMARY"))


def drift_plot(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str], title: str) -> Any:
    """A matplotlib figure: reference against current distribution of each of *columns* (at most 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(columns)[:6] or list(current.columns)[:1]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3), squeeze=False)
    for ax, column in zip(axes[0], shown, strict=False):
        ref, cur = reference[column].dropna(), current[column].dropna()
        if ref.dtype.kind in "fiu" and cur.dtype.kind in "fiu":
            ax.hist(
                [ref.to_numpy(float), cur.to_numpy(float)],
                bins=30,
                density=True,
                label=["reference", "served"],
            )
        else:
            freq = (
                ref.astype(str).value_counts(normalize=True).to_frame("reference")
                .join(cur.astype(str).value_counts(normalize=True).to_frame("served"), how="outer")
                .fillna(0.0)
            )  # fmt: skip
            freq.plot.bar(ax=ax)
        ax.set_title(column)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def read_labels(uri: str, label_column: str, storage: Any) -> pd.DataFrame:
    """
    Ground truth that arrived: the Parquet or CSV file(s) at *uri* (a glob too).

    The files hold ``_request_id`` and *label_column*; a glob that matches nothing gives an empty frame.

    :raises DatasetError: if a file cannot be read.
    """
    import io

    import pandas as pd

    from airflow_mlops.exceptions import DatasetError

    uri = uri.strip()
    uris = storage.glob(uri) if any(c in uri for c in "*?[") else [uri]
    frames = []
    try:
        for item in uris:
            source: Any = io.BytesIO(storage.read_bytes(item)) if item.startswith("s3://") else item
            frames.append(pd.read_csv(source) if item.endswith(".csv") else pd.read_parquet(source))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DatasetError(f"Cannot read the labels {uri}: {err}", uri=uri) from err
    if not frames:
        return pd.DataFrame(columns=[REQUEST_ID, label_column])
    return pd.concat(frames, ignore_index=True)
