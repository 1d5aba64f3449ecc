"""Operator that gates a dataset snapshot on distribution drift from a reference snapshot."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops import tags
from airflow_mlops.data.drift_thresholds import DEFAULT_THRESHOLDS, check_thresholds
from airflow_mlops.data.snapshots import DRIFT_DIR, load_manifest, read_snapshot
from airflow_mlops.data.storage import join
from airflow_mlops.exceptions import (
    ConfigurationError,
    DataDriftError,
    DatasetConfigurationError,
    DatasetError,
    RegistryError,
)
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.utils.results import json_safe, keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import AirflowSkipException

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

__all__ = ["CHAMPION", "DRIFT_DIR", "ON_DRIFT", "DriftCheckOperator"]

ON_DRIFT = ("fail", "skip", "continue")
CHAMPION = "champion"


class DriftCheckOperator(BaseOperator):
    """
    Compare a dataset snapshot with a reference snapshot and stop the pipeline when it drifted.

    The reference is ``reference_uri``, or by default the snapshot the current ``champion`` of ``model_name``
    was trained on (its ``mlops.data.uri`` tag in the MLflow registry). Without a champion there is nothing
    to compare with: the check passes and says so. Numeric features are compared by PSI (reference quantile
    bins), the Kolmogorov-Smirnov statistic and the Wasserstein distance; categorical features by the
    L-infinity distance and the Jensen-Shannon distance; every feature by the change of its null rate. Columns
    the current snapshot lacks, or has and the reference does not, count as drift too (see
    :mod:`airflow_mlops.data.drift`).

    A JSON and a Markdown report are stored next to the snapshot, at
    ``<snapshot>/_drift/<reference id>/report.json`` and ``report.md``.

    Returns (XCom) ``{"drift", "dataset", "reference", "drifted_features", "missing_features",
    "added_features", "features", "report"}``, where ``features`` maps each feature to its metrics and
    exceeded metrics.

    :param dataset_uri: Snapshot URI to check, optionally with a ``#split``. (templated)
    :param reference_uri: Reference snapshot URI; default: the champion's training snapshot. (templated)
    :param model_name: Registered model whose champion gives the reference (needed without
        ``reference_uri``). (templated)
    :param thresholds: Default limits per metric (``psi``, ``ks``, ``wasserstein``, ``linf``,
        ``jensen_shannon``, ``null_rate``); a feature drifts when a metric exceeds its limit. Default
        ``{"psi": 0.2, "ks": 0.2, "linf": 0.2, "jensen_shannon": 0.2, "null_rate": 0.1}``.
    :param feature_thresholds: Limits per feature, overriding ``thresholds`` for it, e.g.
        ``{"income": {"psi": 0.3}}``.
    :param columns: Features to compare (default: every column of the reference except ``exclude_columns``,
        and columns of the current snapshot the reference lacks count as drift).
    :param exclude_columns: Columns not compared (the label, ids).
    :param on_drift: ``"fail"`` (raise :class:`~airflow_mlops.exceptions.DataDriftError`), ``"skip"`` (skip
        this task, so downstream tasks skip with the default trigger rule) or ``"continue"`` (log, succeed).
    :param bins: Number of reference quantile bins for PSI.
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` snapshots.
    :param mlflow_conn_id: Airflow ``mlflow`` connection of the registry.
    """

    template_fields: Sequence[str] = (
        "dataset_uri", "reference_uri", "model_name", "aws_conn_id", "mlflow_conn_id",
    )  # fmt: skip

    def __init__(
        self,
        *,
        dataset_uri: str,
        reference_uri: str | None = None,
        model_name: str | None = None,
        thresholds: dict[str, float] | None = None,
        feature_thresholds: dict[str, dict[str, float]] | None = None,
        columns: list[str] | None = None,
        exclude_columns: list[str] | None = None,
        on_drift: str = "fail",
        bins: int = 10,
        aws_conn_id: str | None = StorageHook.default_conn_name,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        # A template or another task's result (dataset_uri=ingest.output["uri"]) is checked once rendered.
        if not is_templated(dataset_uri) and (not isinstance(dataset_uri, str) or not dataset_uri.strip()):
            raise ValueError(f"dataset_uri must be a snapshot URI, got {dataset_uri!r}")
        if reference_uri is None and not model_name:
            raise ValueError(
                "Pass reference_uri (a snapshot URI) or model_name (its champion's training snapshot is used)"
            )
        if on_drift not in ON_DRIFT:
            raise ValueError(f"on_drift must be one of {', '.join(ON_DRIFT)}, got {on_drift!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if feature_thresholds is not None and not isinstance(feature_thresholds, dict):
            raise ValueError(
                f"feature_thresholds must be a dict of feature to limits, got {feature_thresholds!r}"
            )
        for label, value in (("columns", columns), ("exclude_columns", exclude_columns)):
            if value is not None and (
                not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f"{label} must be a list of column names, got {value!r}")
        self.dataset_uri = dataset_uri
        self.reference_uri = reference_uri
        self.model_name = model_name
        self.thresholds = check_thresholds(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.feature_thresholds = {
            str(feature): check_thresholds(limits, f"feature_thresholds[{feature!r}]")
            for feature, limits in (feature_thresholds or {}).items()
        }
        self.columns = list(columns) if columns else None
        self.exclude_columns = list(exclude_columns or [])
        self.on_drift = on_drift
        self.bins = bins
        self.aws_conn_id = aws_conn_id
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> StorageHook:
        """The storage hook of ``aws_conn_id`` (built on first use, never at parse time)."""
        return StorageHook(aws_conn_id=self.aws_conn_id)

    @keep_result
    def execute(self, context: Context) -> dict[str, Any]:
        """Compare the snapshot with its reference, store the report; fail, skip or continue on drift."""
        from airflow_mlops.data.drift import compute_drift, drift_message, report_folder, to_markdown

        if not isinstance(self.dataset_uri, str) or not self.dataset_uri.strip():
            raise DatasetConfigurationError(
                f"dataset_uri must be a snapshot URI, got {self.dataset_uri!r} once rendered",
                uri=str(self.dataset_uri),
            )
        uri = self.dataset_uri.strip()
        reference = (self.reference_uri or "").strip()
        if not reference and not self.model_name:
            raise ConfigurationError(
                f"No reference for {uri}: reference_uri and model_name rendered empty; pass a snapshot URI "
                "or the model whose champion's training snapshot is the reference",
                uri=uri,
            )
        found = reference or self._champion_reference()
        if found is None:
            self.log.info(
                "Model %r has no %s (or its version has no %s tag): no reference to compare %s with; passing",
                self.model_name, CHAMPION, tags.DATA_URI, uri,
            )  # fmt: skip
            return {
                "drift": False, "dataset": uri, "reference": None, "drifted_features": [],
                "missing_features": [], "added_features": [], "features": {}, "report": None,
            }  # fmt: skip
        reference = found
        storage = self.hook.storage_for(uri, reference)
        try:
            name = load_manifest(uri, storage).get("name")
            current_df = read_snapshot(uri, storage=storage)
            reference_df = read_snapshot(reference, storage=storage)
            reference_manifest = load_manifest(reference, storage)
        except (FileNotFoundError, ValueError) as err:
            raise DatasetError(
                f"Cannot check drift of {uri} against {reference}: {err}", uri=uri, reason=str(err)
            ) from err
        self.log.info(
            "Drift of %s (%d rows) against %s (%d rows)", uri, len(current_df), reference, len(reference_df)
        )
        report = compute_drift(
            reference_df, current_df, thresholds=self.thresholds, feature_thresholds=self.feature_thresholds,
            columns=self.columns, exclude_columns=self.exclude_columns, bins=self.bins,
        )  # fmt: skip
        report = {"dataset": uri, "reference": reference, **report}

        folder = report_folder(uri, reference, reference_manifest.get("snapshot_id"))
        report_uri = join(folder, "report.json")
        # Strict JSON: a NaN statistic (an all-null column) is null in the file, as in the task's result.
        text = json.dumps(json_safe(report), indent=2, sort_keys=True, allow_nan=False)
        storage.write_bytes(report_uri, text.encode())
        storage.write_bytes(join(folder, "report.md"), to_markdown(report).encode())
        summary = {**report, "report": report_uri}

        if not report["drift"]:
            self.log.info(
                "No drift beyond the thresholds in %d features; report %s",
                len(report["features"]),
                report_uri,
            )
            return summary
        message = drift_message(report, report_uri)
        if self.on_drift == "continue":
            self.log.warning("%s\n(on_drift=continue)", message)
            return summary
        if self.on_drift == "skip":
            self.log.warning("%s\n(on_drift=skip: skipping downstream tasks)", message)
            raise AirflowSkipException(message)
        raise DataDriftError(
            message, dataset=name, uri=uri, reason="drifted: " + ", ".join(
                [
                    *report["drifted_features"],
                    *(f"{column} (missing)" for column in report["missing_features"]),
                    *(f"{column} (added)" for column in report["added_features"][:20]),
                ]
            ),
        )  # fmt: skip

    def _champion_reference(self) -> str | None:
        """The training snapshot URI of the model's champion, or None if there is no champion."""
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.registry import get_alias_version, get_model_version

        model = str(self.model_name)
        client = MLflowHook(mlflow_conn_id=self.mlflow_conn_id).client
        try:
            version = get_alias_version(client, model, CHAMPION)
            if version is None:
                return None
            model_version = get_model_version(client, model, version)
        except RegistryError:
            raise
        except Exception as err:
            raise RegistryError(
                f"Cannot read the {CHAMPION} of model {self.model_name!r} from MLflow "
                f"(connection {self.mlflow_conn_id!r}): {err}"
            ) from err
        uri = (model_version.tags or {}).get(tags.DATA_URI)
        if uri:
            self.log.info(
                "Reference: snapshot %s of %s version %s (%s)", uri, self.model_name, version, CHAMPION
            )
        return uri or None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The snapshot checked (with per-feature assertions), its reference and the report, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import drift_lineage
        from airflow_mlops.utils.results import kept_result

        return drift_lineage(kept_result(self))
