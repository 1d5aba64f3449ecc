"""
Evaluate a candidate model against the champion on a holdout snapshot and gate it on thresholds.

Metrics come from ``mlflow.models.evaluate`` (default evaluator); the gate is
``mlflow.validate_evaluation_results`` with one ``MetricThreshold`` per gated metric. What the gate, the slice
checks and the report decide is plain Python in :mod:`airflow_mlops.evaluation`; this module runs it on
MLflow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseOperator

from airflow_mlops import tags as T
from airflow_mlops.evaluation.thresholds import (
    allowed_metrics,
    check_average,
    check_model_type,
    custom_metrics,
    parse_thresholds,
    resolve_model_type,
)
from airflow_mlops.exceptions import (
    ConfigurationError,
    ModelEvaluationError,
    ModelGateFailedError,
    ModelVersionNotFoundError,
    ServiceUnavailableError,
)
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import (
    MLflowModelVersionLink,
    MLflowRunLink,
    browser_url,
    data_docs_url,
    model_version_url,
    run_url,
)
from airflow_mlops.operators.base import ModelOperatorMixin, rendered_arguments
from airflow_mlops.registry import (
    TAG_VALUE_MAX,
    delete_alias_if_points_to,
    error_code,
    get_alias_version,
    get_model_version,
    get_or_create_experiment,
    parse_version,
    tag_value,
    validate_model_name,
    write_signed_tags,
)
from airflow_mlops.results import model_version, result_value, snapshot_uri
from airflow_mlops.utils.context import airflow_lineage_tags
from airflow_mlops.utils.results import json_safe, keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import SkipMixin

if TYPE_CHECKING:
    import pandas as pd
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from mlflow import ActiveRun, MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airflow_mlops.data.spark_drift import SparkData
    from airflow_mlops.results import EvaluationResult

_EVALUATION_EXPERIMENT = "mlops-evaluation"
#: Context variable holding the rejection label, and the ``map_index_template`` that shows it.
GATE_LABEL = "mlops_gate_label"
GATE_LABEL_TEMPLATE = "{{ " + GATE_LABEL + " }}"
#: Longest label Airflow stores (``task_instance.rendered_map_index`` is a 250-character column).
_GATE_LABEL_MAX = 250


def _check_holdout(data: Any, table: Any, query: Any, spark_conn_id: Any, rendered: bool = False) -> None:
    """Exactly one holdout is given, and a Spark table or query comes with ``spark_conn_id``."""
    given = [
        name
        for name, value in (("holdout_data", data), ("holdout_table", table), ("holdout_query", query))
        if value not in (None, "")
    ]
    error = ConfigurationError if rendered else ValueError
    if len(given) > 1 or (not given and not rendered):  # rendered empty: execute names the argument
        raise error(
            "Give the holdout as one of holdout_data (a snapshot URI, e.g. '<snapshot-uri>#holdout'), "
            f"holdout_table or holdout_query (a Spark table or query, with spark_conn_id); got {given or 'none'}"
        )
    if given and given[0] != "holdout_data" and spark_conn_id in (None, ""):
        raise error(f"{given[0]} is read by Spark: give spark_conn_id (the Spark connection) too")


def label_rejection(context: Mapping[str, Any], reason: str) -> str:
    """
    Label the running task instance ``gate rejected: <reason>`` (at most 250 characters).

    Airflow's task runner renders the context's ``map_index_template`` once ``execute`` ends (also when it raises)
    and stores the result as the task instance's label, which the UI lists in the "Map Index" column of the run's
    Task Instances, for an unmapped task too. The label is the context variable ``mlops_gate_label``; the
    template becomes ``{{ mlops_gate_label }}`` unless the task has a ``map_index_template`` of its own (which
    may use the variable).
    """
    label = f"gate rejected: {reason}"
    if len(label) > _GATE_LABEL_MAX:
        label = label[: _GATE_LABEL_MAX - 1] + "…"
    variables = cast("dict[str, Any]", context)
    variables[GATE_LABEL] = label
    if variables.get("map_index_template") is None:
        variables["map_index_template"] = GATE_LABEL_TEMPLATE
    return label


class EvaluateModelOperator(ModelOperatorMixin, BaseOperator, SkipMixin):
    """
    Evaluate a candidate model version against the champion on a holdout snapshot and gate it.

    Both models are evaluated on the same rows with ``mlflow.models.evaluate`` (default evaluator) inside
    an MLflow run ``evaluate <model> v<version>`` that has one nested run per model; the gate applies
    ``mlflow.validate_evaluation_results`` per metric. Without a champion (first run, or the ``champion``
    alias points at a version that no longer exists) only absolute ``threshold`` values apply and the report
    says so. The candidate version gets the tags ``mlops.evaluation.summary``, ``mlops.gate.decision``
    (``passed``/``rejected``) and ``mlops.gate.reason``.

    When the gate rejects the candidate, the result is still pushed to XCom and the direct downstream
    tasks are skipped (so nothing gets promoted), or the task fails with
    :class:`~airflow_mlops.exceptions.ModelGateFailedError` if ``fail_on_gate`` is set. Either way the task
    log ends with one warning line ``Gate REJECTED ...: <reason>`` naming the tasks skipped, and the task
    instance's label becomes ``gate rejected: <reason>`` (:func:`label_rejection`): Airflow's task SDK lets a
    task set no note, and skipped tasks carry no reason, but a task's rendered ``map_index_template`` is
    stored and shown, for an unmapped task too, in the "Map Index" column of the run's Task Instances list.

    Each model gets exactly the input columns of its MLflow signature (the columns it was trained on, see
    :func:`~airflow_mlops.trainer.models.log_model`); a holdout that lacks one fails without retry, naming
    it. A model without a signature gets every holdout column but the target.

    The report (Markdown, logged as ``evaluation/report.md``) has the comparison table, the slice table,
    the upstream validation and drift summaries, the gated metrics of past champions and links to the
    evaluation run, the model version and the Data Docs. The default evaluator's plots (ROC, precision-recall,
    confusion matrix... when matplotlib is installed) are logged to the candidate's nested run, and a
    ``evaluation/champion_history.png`` of the past champions' gated metrics to the evaluation run.

    Returns (XCom) an :class:`~airflow_mlops.results.EvaluationResult`, ``{"passed", "model_name",
    "candidate_version", "candidate_model_uri", "champion_version",
    "metrics", "report", "reason", "evaluation_run_id", "slices", "artifacts", "links"}``; ``metrics`` maps
    every metric the candidate produced to ``{"candidate", "champion", "delta", "passed"}`` (``passed`` is
    None for metrics not gated); ``slices`` has one row per segment and metric (see
    :func:`~airflow_mlops.evaluation.slices.check_slices`); ``artifacts`` maps plot names to artifact URIs;
    ``links`` holds the MLflow and Data Docs URLs.

    :param model_name: Registered model name (templated).
    :param candidate_version: Version of the candidate (templated), or a result naming it: the
        registration's whole result (``register.output``).
    :param candidate_model_uri: Model URI to evaluate instead (templated), or a result holding a
        ``model_uri``; used when no version is given (``models:/<name>/<version>`` and
        ``models:/<name>@<alias>`` also identify the version to tag).
    :param holdout_data: Snapshot URI of the holdout rows (templated), e.g. ``<snapshot-uri>#holdout``, or
        an ingest's whole result (``ingest.output``: its ``holdout`` split).
    :param target: Name of the label column in the holdout.
    :param thresholds: Gate spec (templated) ``{metric: {"threshold", "min_absolute_change",
        "min_relative_change", "greater_is_better"}}``, or a JSON string of it (e.g. from DAG params).
        ``min_absolute_change: 0`` means "no worse than the champion".
    :param model_type: ``"classifier"`` or ``"regressor"``; default: what the gated metrics imply
        (``accuracy_score`` -> classifier, ``root_mean_squared_error`` -> regressor), else what the candidate's
        signature outputs (labels or floats). Metrics of the other type are refused, in ``__init__`` for
        literal thresholds and after rendering for templated ones.
    :param average: How ``precision_score``, ``recall_score``, ``f1_score`` and ``roc_auc`` of a multiclass
        classifier average over its classes (templated): ``"weighted"`` (default, MLflow's: per-class values
        weighted by support), ``"macro"`` (every class counts the same) or ``"micro"`` (global counts; for a
        single-label classifier it equals accuracy, and MLflow gives no ``roc_auc``). Slice checks use it too.
        Binary classifiers score their positive label whatever it says.
    :param extra_metrics: Custom metrics computed next to the built-in ones, shown in the report and
        gateable in ``thresholds`` by name: :class:`~airflow_mlops.evaluation.thresholds.CustomMetric`
        ``(name, eval_fn, greater_is_better)`` (no MLflow import in the DAG file) or metrics made with
        ``mlflow.models.make_metric``.
    :param fail_on_gate: Fail the task when the gate rejects, instead of skipping downstream tasks.
    :param slices: Optional slice checks (templated): ``{"column": "region", "metrics": {"accuracy_score":
        {"max_regression": 0.05}}, "min_rows": 30}``, a list of them, or a JSON string. Each metric is
        computed per value of ``column`` for candidate and champion on the same holdout rows; a segment where
        the candidate is worse than the champion by more than ``max_regression`` rejects the candidate.
        Segments with fewer than ``min_rows`` rows (default 30) are reported as "not enough rows" and do not
        gate; without a champion the slice metrics are reported only.
    :param validation_summary: Result of the upstream data validation (templated), e.g. ``validate.output``;
        shown in the report, with a link to its ``data_docs_uri`` when present.
    :param drift_summary: Result of an upstream drift check (templated), e.g. ``drift.output``; shown in the
        report.
    :param report_intro: Markdown put before the report (templated), e.g. why the run started; the report is
        the body of the approval request.
    :param experiment_name: MLflow experiment of the evaluation runs; default: the experiment of the
        candidate's training run, else ``mlops-evaluation``.
    :param mlflow_conn_id: The MLflow connection to use.
    :param aws_conn_id: The ``aws`` connection used to read ``s3://`` holdouts.
    :param spark_conn_id: Airflow Spark connection (:class:`~airflow_mlops.hooks.spark.SparkHook`): the models
        score the holdout where Spark runs (``mlflow.pyfunc.spark_udf``, see
        :mod:`airflow_mlops.evaluation.spark`) and only the label, the slice columns and the predictions reach
        the worker. The holdout is then ``holdout_data`` (Spark reads the snapshot split's Parquet file;
        ``s3://`` as ``s3a://``), ``holdout_table`` or ``holdout_query``. Metrics that need probabilities
        (``roc_auc``, ``log_loss``, ``precision_recall_auc``) are computed in the worker only. (templated)
    :param holdout_table: A Spark table of the holdout (``db.table``, or a path table such as
        ``parquet.`s3a://bucket/holdout```), with ``spark_conn_id``, instead of ``holdout_data``. (templated)
    :param holdout_query: A Spark SQL ``SELECT`` of the holdout, with ``spark_conn_id``. (templated)
    """

    template_fields: Sequence[str] = (
        "model_name",
        "candidate_version",
        "candidate_model_uri",
        "holdout_data",
        "target",
        "thresholds",
        "average",
        "slices",
        "validation_summary",
        "drift_summary",
        "report_intro",
        "experiment_name",
        "mlflow_conn_id",
        "aws_conn_id",
        "spark_conn_id",
        "holdout_table",
        "holdout_query",
    )
    template_fields_renderers = {
        "holdout_query": "sql",
        "thresholds": "json",
        "slices": "json",
        "validation_summary": "json",
        "drift_summary": "json",
        "report_intro": "md",
    }
    inherits_from_skipmixin = True
    operator_extra_links = (MLflowModelVersionLink(), MLflowRunLink())
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        model_name: str,
        thresholds: dict[str, dict[str, Any]] | str,
        holdout_data: str | None = None,
        candidate_version: int | str | None = None,
        candidate_model_uri: str | None = None,
        target: str = "label",
        model_type: str | None = None,
        average: str = "weighted",
        extra_metrics: Sequence[Any] | None = None,
        fail_on_gate: bool = False,
        slices: dict[str, Any] | list[dict[str, Any]] | str | None = None,
        validation_summary: dict[str, Any] | str | None = None,
        drift_summary: dict[str, Any] | str | None = None,
        report_intro: str | None = None,
        experiment_name: str | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        spark_conn_id: str | None = None,
        holdout_table: str | None = None,
        holdout_query: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        _check_holdout(holdout_data, holdout_table, holdout_query, spark_conn_id)
        if model_type is not None:
            check_model_type(model_type)
        if not is_templated(average):
            check_average(average)
        custom = custom_metrics(extra_metrics)
        if not is_templated(model_name):
            validate_model_name(model_name)
        if candidate_version in (None, "") and not candidate_model_uri:
            raise ValueError(
                "Give candidate_version (the registered version to evaluate) or candidate_model_uri"
            )
        known_name = None if is_templated(model_name) else model_name
        if candidate_version not in (None, "") and not is_templated(candidate_version):
            version = model_version(candidate_version, "candidate_version", known_name)
            parse_version(version, str(model_name), "candidate_version")
        # Literal arguments are checked now; templates and other tasks' results once rendered, in execute.
        if holdout_data is not None and not is_templated(holdout_data):
            holdout = snapshot_uri(holdout_data, "holdout_data", "holdout")
            if not isinstance(holdout, str) or not holdout.strip():
                raise ValueError("holdout_data must be a snapshot URI, e.g. '<snapshot-uri>#holdout'")
        if not is_templated(target) and (not isinstance(target, str) or not target):
            raise ValueError("target must be the name of the label column in the holdout data")
        known_type = model_type
        if not is_templated(thresholds):
            known_type = resolve_model_type(model_type, thresholds, custom)
            # Metrics that fit either type (score, custom ones): the type comes from the model's signature.
            parse_thresholds(thresholds, known_type or "regressor", custom)
        if slices is not None and not is_templated(slices) and known_type is not None:
            from airflow_mlops.evaluation.slices import parse_slices

            parse_slices(slices, known_type)
        for field, value in (("validation_summary", validation_summary), ("drift_summary", drift_summary)):
            if value is not None and not isinstance(value, Mapping | str) and not is_templated(value):
                raise ValueError(
                    f"{field} must be a dict (the upstream task's result) or a template of one, got {value!r}"
                )
        self.model_name = model_name
        self.candidate_version = candidate_version
        self.candidate_model_uri = candidate_model_uri
        self.holdout_data = holdout_data
        self.target = target
        self.thresholds = thresholds
        self.model_type = model_type
        self.average = average
        self.extra_metrics = list(extra_metrics) if extra_metrics is not None else None
        self.fail_on_gate = fail_on_gate
        self.slices = slices
        self.validation_summary = validation_summary
        self.drift_summary = drift_summary
        self.report_intro = report_intro
        self.experiment_name = experiment_name
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self.spark_conn_id = spark_conn_id
        self.holdout_table = holdout_table
        self.holdout_query = holdout_query

    # -- execute ---------------------------------------------------------------------------------------

    @keep_result
    def execute(self, context: Context) -> EvaluationResult:
        from airflow_mlops.evaluation import report as reporting  # not needed to parse the DAG
        from airflow_mlops.evaluation.gate import gate_decision, gate_metric
        from airflow_mlops.evaluation.slices import check_slices, parse_slices
        from airflow_mlops.signing import record_keys

        keys = record_keys()  # the gate decision is signed: no key fails here, before any work
        with rendered_arguments(model=str(self.model_name)):
            # Other tasks' whole results stand for the version, the model URI and the holdout split.
            self.candidate_version = model_version(
                self.candidate_version, "candidate_version", self.model_name
            )
            self.candidate_model_uri = result_value(
                self.candidate_model_uri, "candidate_model_uri", ("model_uri",),
                "a model URI or a result holding one (a dict with 'model_uri')",
            )  # fmt: skip
            _check_holdout(
                self.holdout_data, self.holdout_table, self.holdout_query, self.spark_conn_id, True
            )
            spark_holdout = self._spark_holdout()
            if spark_holdout is None or spark_holdout[0] is None:  # a snapshot (Spark may read its file)
                self.holdout_data = snapshot_uri(self.holdout_data, "holdout_data", "holdout")
            custom = custom_metrics(self.extra_metrics)
            average = check_average(self.average)
            model_type = resolve_model_type(self.model_type, self.thresholds, custom)
            thresholds = parse_thresholds(self.thresholds, model_type or "regressor", custom)
            # Checked before any connection is made when the type is already known.
            slices = parse_slices(self.slices, model_type) if model_type is not None else None
            upstream = {
                "validation": reporting.upstream_summary(self.validation_summary, "validation_summary"),
                "drift": reporting.upstream_summary(self.drift_summary, "drift_summary"),
            }
            name = validate_model_name(self.model_name)
            version = (
                parse_version(self.candidate_version, name, "candidate_version")
                if self.candidate_version not in (None, "")
                else None
            )
            holdout_uri = self.holdout_data.strip() if isinstance(self.holdout_data, str) else ""
            if spark_holdout is not None and spark_holdout[0] is not None:
                holdout_uri = spark_holdout[1]
            if not holdout_uri:
                raise ValueError(
                    f"holdout_data of model {name!r} rendered "
                    f"{'empty' if self.holdout_data in (None, '') else f'to {self.holdout_data!r:.200}'}: it "
                    "must be a snapshot URI, e.g. '<snapshot-uri>#holdout'"
                )
            if not isinstance(self.target, str) or not self.target:
                raise ValueError(
                    "target rendered empty: it must be the name of the label column in the holdout"
                )
        candidate_uri = (self.candidate_model_uri or "").strip() or None
        if version is None and candidate_uri is None:
            raise ConfigurationError(
                f"Nothing to evaluate for model {name!r}: candidate_version and candidate_model_uri are "
                "empty",
                model=name,
            )
        client = self.hook.client

        if version is None:
            version = self._version_from_uri(client, name, candidate_uri)
        candidate_mv = get_model_version(client, name, version) if version is not None else None
        if version is not None:
            self.link_model_version(name, version)
        candidate_uri = candidate_uri or f"models:/{name}/{version}"
        fields = {
            "model": name,
            "version": str(version) if version is not None else None,
            "dataset": holdout_uri,
            "uri": candidate_uri,
        }
        if model_type is None:
            model_type = self._signature_model_type(candidate_uri, thresholds, fields)
        with rendered_arguments(model=name):
            thresholds = parse_thresholds(self.thresholds, model_type, custom)
            if slices is None:
                slices = parse_slices(self.slices, model_type)
        self.log.info("Evaluating %s as a %s (multiclass averaging: %s)", candidate_uri, model_type, average)
        champion, champion_note = self._champion(client, name, version)

        scored: dict[str, str] = {}  # model URI -> its prediction column, when Spark scored the holdout
        if spark_holdout is not None:
            models = {"candidate": candidate_uri}
            if champion is not None:
                models["champion"] = f"models:/{name}/{champion}"
            data, scored = self._score_spark(
                spark_holdout[0], holdout_uri, models, [spec["column"] for spec in slices], model_type, fields
            )
        else:
            data = self._read_holdout(holdout_uri, fields)
        missing_columns = [spec["column"] for spec in slices if spec["column"] not in data.columns]
        if missing_columns:
            raise ModelEvaluationError(
                f"Holdout data {holdout_uri} has no slice column(s) {missing_columns}; its columns are "
                f"{list(data.columns)}",
                **fields,
            )
        label = f"model {name!r} v{version}" if version is not None else candidate_uri
        experiment_id = self._experiment_id(client, candidate_mv)

        import mlflow

        lineage = airflow_lineage_tags(context)
        parent_name = f"evaluate {name} v{version}" if version is not None else f"evaluate {name}"
        with self._start_run(client, experiment_id, parent_name, lineage) as parent:
            run_id = parent.info.run_id
            self.mlflow_run_url = run_url(self.hook.tracking_uri, experiment_id, run_id)
            candidate_result = self._evaluate(
                client,
                experiment_id,
                run_id,
                candidate_uri,
                data,
                f"candidate v{version}" if version is not None else "candidate",
                label,
                fields,
                model_type,
                average,
                scored.get(candidate_uri),
            )
            produced = sorted(candidate_result.metrics)
            # MLflow gives binary classifiers confusion-matrix counts and averages only multiclass ones.
            multiclass = model_type == "classifier" and "true_positives" not in candidate_result.metrics
            missing = [metric for metric in thresholds if metric not in candidate_result.metrics]
            if missing:
                raise ModelEvaluationError(
                    f"{label} does not produce the gated metric(s) {missing} on {holdout_uri}; it produces "
                    f"{produced}. Remove them from thresholds (roc_auc, log_loss and precision_recall_auc "
                    "need a model with predict_proba; multiclass models have no confusion-matrix counts and, with "
                    "average='micro', no roc_auc).",
                    **fields,
                )
            champion_result = None
            champion_uri = f"models:/{name}/{champion}"
            if champion is not None:
                champion_result = self._evaluate(
                    client, experiment_id, run_id, champion_uri, data, f"champion v{champion}",
                    f"champion of model {name!r} (v{champion})", {**fields, "uri": champion_uri}, model_type,
                    average, scored.get(champion_uri),
                )  # fmt: skip

            rows = [
                gate_metric(metric, spec, candidate_result, champion_result)
                for metric, spec in thresholds.items()
            ]
            slice_rows: list[dict[str, Any]] = []
            if slices:
                if scored:  # Spark scored the holdout: the predictions are columns of the frame
                    candidate_pred = data[scored[candidate_uri]].to_numpy()
                    champion_pred = data[scored[champion_uri]].to_numpy() if champion is not None else None
                else:
                    candidate_pred = self._predict(candidate_uri, data, label, fields)
                    champion_pred = (
                        self._predict(
                            champion_uri, data, f"champion v{champion}", {**fields, "uri": champion_uri}
                        )
                        if champion is not None
                        else None
                    )
                try:
                    slice_rows = check_slices(
                        slices, data, self.target, candidate_pred, champion_pred, model_type, average
                    )
                except ValueError as err:
                    raise ModelEvaluationError(str(err), **fields) from err
            passed, reason = gate_decision(rows, slice_rows, champion, champion_note)
            artifacts = reporting.plot_artifacts(candidate_result)
            history = self._champion_history(client, name, list(thresholds), version)
            history_plot = self._log_history_plot(name, history, list(thresholds), version, candidate_result)
            if history_plot:
                artifacts["champion_history"] = f"runs:/{run_id}/{history_plot}"
            docs = reporting.data_docs_uri(upstream["validation"])
            links = {
                "evaluation_run": self.mlflow_run_url,
                "model_version": (
                    model_version_url(self.hook.tracking_uri, name, version) if version is not None else ""
                ),
                "data_docs": browser_url(data_docs_url(docs)) if docs else "",
            }
            metrics = reporting.metrics_summary(
                candidate_result.metrics,
                champion_result.metrics if champion_result is not None else None,
                rows,
            )
            report = reporting.render_report(
                name=name, version=version, champion=champion, champion_note=champion_note,
                holdout_uri=holdout_uri, rows_count=len(data), target=self.target, model_type=model_type,
                rows=rows, passed=passed, reason=reason, slice_rows=slice_rows, slices=slices,
                upstream=upstream, links=links, artifacts=artifacts, history=history, metrics=metrics,
                mlflow_url=self.hook.tracking_uri, experiment_id=experiment_id,
                average=average if multiclass else None,
            )  # fmt: skip
            intro = str(self.report_intro or "").strip()
            if intro:
                report = f"{intro}\n\n{report}"
            mlflow.log_text(report, "evaluation/report.md")
            if slice_rows:
                mlflow.log_dict(json_safe({"slices": slice_rows}), "evaluation/slices.json")
            mlflow.set_tags(
                {T.GATE_DECISION: "passed" if passed else "rejected", T.GATE_REASON: reason[:TAG_VALUE_MAX]}
            )
            evaluation_run_id = run_id

        result = {
            "passed": passed,
            "model_name": name,
            "candidate_version": version,
            "candidate_model_uri": candidate_uri,
            "champion_version": champion,
            "metrics": metrics,
            "report": report,
            "reason": reason,
            "evaluation_run_id": evaluation_run_id,
            "slices": slice_rows,
            "artifacts": artifacts,
            "links": links,
        }
        if version is not None:
            summary = reporting.evaluation_summary(
                passed=passed, holdout_uri=holdout_uri, rows_count=len(data), champion=champion,
                evaluation_run_id=evaluation_run_id, rows=rows, artifacts=artifacts, slice_rows=slice_rows,
            )  # fmt: skip
            client.set_model_version_tag(name, str(version), T.EVALUATION_SUMMARY, tag_value(summary))
            write_signed_tags(
                client, name, version, T.GATE_SIGNATURE,
                {"decision": "passed" if passed else "rejected", "reason": reason}, keys,
            )  # fmt: skip
            if not passed and delete_alias_if_points_to(client, name, T.CHALLENGER, int(version)):
                self.log.info(
                    "Removed alias %s from %s v%s: the gate rejected it", T.CHALLENGER, name, version
                )
        else:
            self.log.warning(
                "%s is not a registered version; gate decision not written to the registry", candidate_uri
            )

        self.log.info("Evaluation report:\n%s", report)
        if passed:
            self.log.info("Gate passed for %s", label)
            return cast("EvaluationResult", result)
        label_rejection(context, reason)
        return cast("EvaluationResult", self._on_rejected(context, result, label))

    def _on_rejected(self, context: Context, result: dict[str, Any], label: str) -> dict[str, Any]:
        ti = context.get("ti")
        task = context.get("task") or self
        downstream = (
            [t for t in task.get_direct_relatives(upstream=False) if not t.is_teardown]
            if task.downstream_task_ids
            else []
        )
        skipping = ti is not None and not self.fail_on_gate and bool(downstream)
        # One line, where the log ends, for the reader of a green run whose promotion was skipped.
        self.log.warning(
            "Gate REJECTED %s: %s -- %s",
            label, result["reason"],
            (f"skipping downstream tasks {[t.task_id for t in downstream]}: nothing is promoted. The run ends "
             "green; this task's XCom (passed: false, reason) and its label in the run's Task Instances list "
             "say why.") if skipping else "nothing is promoted.",
        )  # fmt: skip
        if self.fail_on_gate:
            if ti is not None:  # the return value is lost when the task raises
                ti.xcom_push(key="return_value", value=result)
            version = result["candidate_version"]
            raise ModelGateFailedError(
                f"{label} did not pass the evaluation gate: {result['reason']}",
                model=result["model_name"],
                version=str(version) if version is not None else None,
                uri=result["candidate_model_uri"],
                reason=result["reason"],
            )
        if not skipping or ti is None:
            return result
        ti.xcom_push(key="return_value", value=result)
        self.skip(ti=ti, tasks=downstream)  # raises DownstreamTasksSkipped for the task runner
        return result

    # -- steps ---------------------------------------------------------------------------------------

    def _version_from_uri(self, client: MlflowClient, name: str, uri: str | None) -> int | None:
        match = re.match(r"^models:/([^/@]+)(?:/(\d+)|@([\w\-]+))/?$", uri or "")
        if not match or match.group(1) != name:
            return None
        if match.group(2):
            return int(match.group(2))
        version = get_alias_version(client, name, match.group(3))
        if version is None:
            raise ModelVersionNotFoundError(
                f"Model {name!r} has no alias {match.group(3)!r} (from {uri})", model=name, uri=uri
            )
        return version

    def _champion(self, client: MlflowClient, name: str, candidate: int | None) -> tuple[int | None, str]:
        champion = get_alias_version(client, name, T.CHAMPION)
        if champion is None:
            return None, f"no champion: model {name!r} has no '{T.CHAMPION}' alias (first run)"
        if champion == candidate:
            return (
                None,
                f"the candidate v{candidate} already is the champion; compared against thresholds only",
            )
        try:
            get_model_version(client, name, champion)
        except ModelVersionNotFoundError:
            self.log.warning("Alias %s of model %s points at missing version %s", T.CHAMPION, name, champion)
            return None, (
                f"no champion: alias '{T.CHAMPION}' of model {name!r} points at version {champion}, which no "
                "longer exists"
            )
        return champion, f"champion v{champion}"

    def _spark_holdout(self) -> tuple[SparkData | None, str] | None:
        """
        The Spark holdout: ``(table or query, its spark:// name)``; ``(None, "")`` for a snapshot; None without Spark.

        With ``spark_conn_id`` and ``holdout_data``, Spark reads the snapshot's Parquet file itself.
        """
        if self.spark_conn_id in (None, ""):
            return None
        from airflow_mlops.data.spark_drift import SparkData

        table, query = (
            str(v).strip() if v not in (None, "") else None for v in (self.holdout_table, self.holdout_query)
        )
        if table is None and query is None:
            return None, ""
        key = table or "query-" + hashlib.sha256(str(query).encode()).hexdigest()[:16]
        return SparkData(table=table, query=query), f"spark://{str(self.spark_conn_id).strip()}/{key}"

    def _score_spark(
        self, holdout: SparkData | None, uri: str, models: Mapping[str, str], keep: Sequence[str], model_type: str,
        fields: Mapping[str, Any],
    ) -> tuple[pd.DataFrame, dict[str, str]]:  # fmt: skip
        """
        The holdout scored by Spark, and ``{model URI: its prediction column}``.

        The frame has the label, *keep* and one prediction column per model. Spark reads the snapshot's Parquet
        file itself when *holdout* is None.
        """
        from airflow_mlops.data.snapshots import snapshot_file_uri
        from airflow_mlops.data.spark_drift import SparkData
        from airflow_mlops.evaluation.spark import (
            label_type,
            missing_columns,
            prediction_column,
            score_on_spark,
            spark_uri,
        )
        from airflow_mlops.hooks.spark import SparkHook, import_pyspark
        from airflow_mlops.trainer.models import input_columns

        import_pyspark()  # a missing pyspark names the extra to install
        from pyspark.errors import PySparkException

        if holdout is None:
            try:
                holdout = SparkData(
                    path=spark_uri(snapshot_file_uri(uri, storage=self._holdout_storage(uri)))
                )
            except (FileNotFoundError, KeyError, ValueError) as err:
                raise ModelEvaluationError(f"Cannot read holdout data {uri}: {err}", **fields) from err
        hook = SparkHook(spark_conn_id=str(self.spark_conn_id).strip())
        session = hook.get_conn()
        self.log.info("Scoring holdout %s with Spark at %s (mlflow.pyfunc.spark_udf)", uri, hook.describe)
        try:
            frame = holdout.frame(session)
            if self.target not in frame.columns:
                raise ModelEvaluationError(
                    f"Holdout data {uri} has no target column {self.target!r}; its columns are {frame.columns}",
                    **fields,
                )
            wanted: dict[str, tuple[str, Sequence[str]]] = {}
            for key, model_uri in models.items():
                try:
                    columns = input_columns(model_uri)
                except Exception as err:
                    raise ModelEvaluationError(
                        f"Cannot read the signature of the {key} ({model_uri}): {type(err).__name__}: {err}",
                        **fields,
                    ) from err
                columns = columns or [c for c in frame.columns if c != self.target]
                lacking = missing_columns(frame, columns)
                if lacking:
                    raise ModelEvaluationError(
                        f"Holdout data {uri} lacks column(s) {lacking} that the {key} ({model_uri}) takes (its "
                        f"signature inputs: {list(columns)}); the holdout has {frame.columns}",
                        **fields,
                    )
                wanted[key] = (model_uri, columns)
            data = score_on_spark(
                session, frame, self.target, [c for c in keep if c in frame.columns], wanted,
                label_type(frame, self.target, model_type),
            )  # fmt: skip
        except PySparkException as err:
            message = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
            if type(err).__name__ == "AnalysisException":  # a table, path or column Spark cannot find
                raise ModelEvaluationError(
                    f"Cannot read holdout data {uri} with Spark: {message}", **fields
                ) from err
            raise ServiceUnavailableError(
                f"Cannot score holdout {uri}: Spark at {hook.describe} failed: {message}"
            ) from err
        if data.empty:
            raise ModelEvaluationError(f"Holdout data {uri} has no rows; cannot evaluate on it", **fields)
        self.log.info("Spark scored %d holdout rows; %d columns reached the worker", len(data), data.shape[1])
        return data, {model_uri: prediction_column(key) for key, model_uri in models.items()}

    def _holdout_storage(self, uri: str) -> Any:
        """The storage a holdout snapshot is read through (S3 with ``aws_conn_id``)."""
        from airflow_mlops.hooks.storage import StorageHook

        return StorageHook(aws_conn_id=self.aws_conn_id).storage_for(uri)

    def _read_holdout(self, uri: str, fields: Mapping[str, Any]) -> pd.DataFrame:
        from airflow_mlops.data.snapshots import read_snapshot

        try:
            data = read_snapshot(uri, storage=self._holdout_storage(uri))
        except (FileNotFoundError, KeyError) as err:
            raise ModelEvaluationError(f"Cannot read holdout data {uri}: {err}", **fields) from err
        if self.target not in data.columns:
            raise ModelEvaluationError(
                f"Holdout data {uri} has no target column {self.target!r}; its columns are "
                f"{list(data.columns)}",
                **fields,
            )
        if data.empty:
            raise ModelEvaluationError(f"Holdout data {uri} has no rows; cannot evaluate on it", **fields)
        return data

    def _experiment_id(self, client: MlflowClient, candidate_mv: ModelVersion | None) -> str:
        """The experiment given, else the one of the candidate's training run, else ``mlops-evaluation``."""
        if self.experiment_name:
            return get_or_create_experiment(client, self.experiment_name)
        if candidate_mv is not None and candidate_mv.run_id:
            from mlflow.exceptions import MlflowException

            try:
                return client.get_run(candidate_mv.run_id).info.experiment_id
            except MlflowException as err:
                self.log.info("Training run %s not found (%s)", candidate_mv.run_id, error_code(err))
        return get_or_create_experiment(client, _EVALUATION_EXPERIMENT)

    def _start_run(
        self, client: MlflowClient, experiment_id: str, run_name: str, lineage: dict[str, str]
    ) -> ActiveRun:
        """Start the evaluation run, resuming the one of an earlier try of this task (retry-safe)."""
        import mlflow

        existing = self._find_run(
            client, experiment_id, run_name, {f"tags.`{key}`": value for key, value in lineage.items()}
        ) if len(lineage) == 4 else None  # fmt: skip
        if existing:
            self.log.info("Resuming evaluation run %s of an earlier try", existing)
            return mlflow.start_run(run_id=existing)
        return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=lineage)

    def _find_run(
        self, client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]
    ) -> str | None:
        wanted = {"attributes.run_name": run_name, **tags}
        wanted.pop("tags.`mlops.airflow.try_number`", None)
        if any("'" in value for value in wanted.values()):
            return None
        filter_string = " and ".join(f"{key} = '{value}'" for key, value in wanted.items())
        runs = client.search_runs([experiment_id], filter_string=filter_string, max_results=1)
        return runs[0].info.run_id if runs else None

    def _signature_model_type(
        self, model_uri: str, thresholds: Mapping[str, Any], fields: Mapping[str, Any]
    ) -> str:
        """The model type the candidate's signature implies, when the gated metrics do not tell."""
        from airflow_mlops.trainer.models import signature_model_type

        try:
            found = signature_model_type(model_uri)
        except Exception as err:
            self.log.info("No model type from the signature of %s: %s", model_uri, err)
            found = None
        if found is None:
            raise ConfigurationError(
                f"Cannot tell whether {model_uri} is a classifier or a regressor: the gated metrics "
                f"{sorted(thresholds)} fit both and its signature does not say. Give "
                f"model_type='classifier' or 'regressor'. Metrics allowed per type: {allowed_metrics()}",
                **fields,
            )
        return found

    def _features(
        self, model_uri: str, data: pd.DataFrame, label: str, fields: Mapping[str, Any]
    ) -> pd.DataFrame:
        """The holdout columns *model_uri* takes (its signature), in its order; every one but the target if none."""
        from airflow_mlops.trainer.models import input_columns

        try:
            columns = input_columns(model_uri)
        except Exception as err:
            raise ModelEvaluationError(
                f"Cannot read the signature of {label} ({model_uri}): {type(err).__name__}: {err}", **fields
            ) from err
        if columns is None:
            return data.drop(columns=[self.target])
        missing = [column for column in columns if column not in data.columns]
        if missing:
            raise ModelEvaluationError(
                f"Holdout data {fields['dataset']} lacks column(s) {missing} that {label} takes (its signature "
                f"inputs: {columns}); the holdout has {list(data.columns)}",
                **fields,
            )
        return data[columns]

    def _evaluate(
        self, client: MlflowClient, experiment_id: str, parent_run_id: str, model_uri: str,
        data: pd.DataFrame, run_name: str, label: str, fields: Mapping[str, Any], model_type: str,
        average: str = "weighted", predictions: str | None = None,
    ) -> Any:  # fmt: skip
        """Evaluate *model_uri* on *data*; with *predictions*, on that column of its predictions (from Spark)."""
        import mlflow

        # Not at parse time: the DAG file loads no module of the training side (tests/unit/test_parse_time.py).
        from airflow_mlops.trainer.models import import_skops_quietly

        import_skops_quietly()
        if predictions is None:
            features = self._features(model_uri, data, label, fields)
            data = features.assign(**{self.target: data[self.target]})
        else:
            data = data[[self.target, predictions]]
        extra = [self._mlflow_metric(metric) for metric in self.extra_metrics or []]

        existing = self._find_run(client, experiment_id, run_name, {"tags.mlflow.parentRunId": parent_run_id})
        run_kwargs: dict[str, Any] = (
            {"run_id": existing} if existing else {"run_name": run_name, "experiment_id": experiment_id}
        )
        with mlflow.start_run(nested=True, **run_kwargs):
            try:
                result = mlflow.models.evaluate(
                    model=model_uri if predictions is None else None,
                    data=data,
                    predictions=predictions,
                    targets=self.target,
                    model_type=model_type,
                    evaluators=["default"],
                    extra_metrics=extra or None,
                    evaluator_config={"default": {"log_model_explainability": False, "average": average}},
                )
            except Exception as err:
                raise ModelEvaluationError(
                    f"Cannot evaluate {label} ({model_uri}) on holdout {fields['dataset']} with target "
                    f"{self.target!r} as a {model_type}: {type(err).__name__}: {err}",
                    **fields,
                ) from err
        return result

    def _predict(self, model_uri: str, data: pd.DataFrame, label: str, fields: Mapping[str, Any]) -> Any:
        """Predictions of *model_uri* on the holdout features, for the slice checks."""
        import mlflow

        features = self._features(model_uri, data, label, fields)
        try:
            model = mlflow.pyfunc.load_model(model_uri)
            return model.predict(features)
        except Exception as err:
            raise ModelEvaluationError(
                f"Cannot compute slice metrics of {label} ({model_uri}) on holdout {fields['dataset']}: "
                f"{type(err).__name__}: {err}",
                **fields,
            ) from err

    @staticmethod
    def _mlflow_metric(metric: Any) -> Any:
        """A :class:`CustomMetric` as MLflow's ``EvaluationMetric``; an ``EvaluationMetric`` as it is."""
        from mlflow.models import make_metric

        from airflow_mlops.evaluation.thresholds import CustomMetric

        if isinstance(metric, CustomMetric):
            return make_metric(
                eval_fn=metric.eval_fn, greater_is_better=metric.greater_is_better, name=metric.name
            )
        return metric

    def _champion_history(
        self, client: MlflowClient, name: str, metrics: list[str], candidate: int | None
    ) -> list[dict[str, Any]]:
        """Past champions with the gated metrics their own evaluation measured (see ``champion_history``)."""
        from airflow_mlops.evaluation import report as reporting

        if "'" in name:
            return []
        return reporting.champion_history(
            client.search_model_versions(f"name = '{name}'"), metrics, candidate
        )

    def _log_history_plot(
        self, name: str, history: list[dict[str, Any]], metrics: list[str], version: int | None,
        candidate_result: Any,
    ) -> str | None:  # fmt: skip
        """Log the plot of the past champions' gated metrics to the active run; return its artifact path."""
        from airflow_mlops.evaluation import report as reporting

        try:
            figure = reporting.champion_history_figure(
                name, history, metrics, version, candidate_result.metrics
            )
        except ImportError:
            self.log.info("matplotlib is not installed; champion history plot not drawn")
            return None
        if figure is None:
            return None
        import mlflow

        mlflow.log_figure(figure, reporting.HISTORY_PLOT_PATH)
        return reporting.HISTORY_PLOT_PATH

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The holdout rows and the model versions compared (with the gate's checks), for OpenLineage."""
        from airflow_mlops.lineage.openlineage import evaluation_lineage
        from airflow_mlops.utils.results import kept_result

        return evaluation_lineage(kept_result(self), self.hook.registry_uri, self.holdout_data)
