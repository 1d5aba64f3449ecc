"""
Evaluate a candidate model against the champion on a holdout snapshot and gate it on thresholds.

Metrics come from ``mlflow.models.evaluate`` (default evaluator); the gate is
``mlflow.validate_evaluation_results`` with one ``MetricThreshold`` per gated metric.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, SkipMixin

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ModelEvaluationError, ModelGateFailedError, RegistryError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import MLflowModelVersionLink, MLflowRunLink, run_url
from airflow_mlops.operators.registry import (
    _ModelOperatorMixin,
    airflow_lineage_tags,
    error_code,
    get_alias_version,
    get_model_version,
    is_templated,
    parse_version,
    tag_value,
    validate_model_name,
)

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import Context
    from mlflow import MlflowClient

# Metrics MLflow's default evaluator produces (mlflow.models.evaluate, evaluators=["default"]), with whether
# greater is better. Checked against MLflow 3: binary classifiers produce all classifier metrics when the
# model has predict_proba (roc_auc, log_loss, precision_recall_auc need it); multiclass ones produce no
# confusion-matrix counts and no precision_recall_auc.
CLASSIFIER_METRICS: dict[str, bool] = {
    "accuracy_score": True,
    "precision_score": True,
    "recall_score": True,
    "f1_score": True,
    "roc_auc": True,
    "precision_recall_auc": True,
    "log_loss": False,
    "score": True,
    "true_positives": True,
    "true_negatives": True,
    "false_positives": False,
    "false_negatives": False,
}
REGRESSOR_METRICS: dict[str, bool] = {
    "mean_squared_error": False,
    "root_mean_squared_error": False,
    "mean_absolute_error": False,
    "mean_absolute_percentage_error": False,
    "max_error": False,
    "r2_score": True,
    "score": True,
}
METRICS_BY_MODEL_TYPE: dict[str, dict[str, bool]] = {
    "classifier": CLASSIFIER_METRICS,
    "regressor": REGRESSOR_METRICS,
}
THRESHOLD_KEYS = ("threshold", "min_absolute_change", "min_relative_change", "greater_is_better")
_THRESHOLDS_SHAPE = (
    '{"<metric>": {"threshold": number, "min_absolute_change": number >= 0, '
    '"min_relative_change": number in [0, 1], "greater_is_better": bool}}'
)
_EVALUATION_EXPERIMENT = "mlops-evaluation"
_REASON_MAX = 5000


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _load_thresholds_string(text: str) -> Any:
    """Parse JSON, or the Python literal a plain ``{{ params.thresholds }}`` renders to."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                f"thresholds is a string but not valid JSON ({err.msg}); expected {_THRESHOLDS_SHAPE}"
            ) from err


def parse_thresholds(thresholds: Any, model_type: str) -> dict[str, dict[str, Any]]:
    """
    Validate a threshold spec and return it normalised (every key present, numbers as floats).

    Pure Python, no MLflow import: runs in ``__init__`` for literal specs and at execute time for specs
    that come from templates (a JSON string, or a dict after native rendering).

    :param thresholds: ``{metric: {"threshold", "min_absolute_change", "min_relative_change",
        "greater_is_better"}}`` or a JSON string of it. ``greater_is_better`` defaults to the metric's
        known direction.
    :param model_type: ``"classifier"`` or ``"regressor"``; selects the metrics allowed.
    """
    if model_type not in METRICS_BY_MODEL_TYPE:
        raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
    known = METRICS_BY_MODEL_TYPE[model_type]
    if isinstance(thresholds, str):
        thresholds = _load_thresholds_string(thresholds)
    if not isinstance(thresholds, Mapping) or not thresholds:
        raise ValueError(f"thresholds must be a non-empty dict {_THRESHOLDS_SHAPE}, got {thresholds!r}")
    parsed: dict[str, dict[str, Any]] = {}
    for metric, spec in thresholds.items():
        if metric not in known:
            raise ValueError(
                f"Unknown metric {metric!r} for model_type {model_type!r} in thresholds; "
                f"allowed: {', '.join(sorted(known))}"
            )
        if not isinstance(spec, Mapping):
            raise ValueError(f"thresholds[{metric!r}] must be a dict with keys {list(THRESHOLD_KEYS)}")
        unknown = sorted(set(spec) - set(THRESHOLD_KEYS))
        if unknown:
            raise ValueError(
                f"thresholds[{metric!r}] has unknown keys {unknown}; allowed: {', '.join(THRESHOLD_KEYS)}"
            )
        where = f"thresholds[{metric!r}]"
        threshold = _number(spec.get("threshold"), f"{where}['threshold']")
        min_abs = _number(spec.get("min_absolute_change"), f"{where}['min_absolute_change']")
        min_rel = _number(spec.get("min_relative_change"), f"{where}['min_relative_change']")
        if min_abs is not None and min_abs < 0:
            raise ValueError(
                f"{where}['min_absolute_change'] must be >= 0 (0 = no worse than the champion), got {min_abs}"
            )
        if min_rel is not None and not 0 <= min_rel <= 1:
            raise ValueError(f"{where}['min_relative_change'] must be between 0 and 1, got {min_rel}")
        if threshold is None and min_abs is None and min_rel is None:
            raise ValueError(
                f"{where} sets no threshold: give at least one of threshold, min_absolute_change, "
                "min_relative_change"
            )
        greater_is_better = spec.get("greater_is_better", known[metric])
        if greater_is_better is None:
            greater_is_better = known[metric]
        if not isinstance(greater_is_better, bool):
            raise ValueError(f"{where}['greater_is_better'] must be true or false, got {greater_is_better!r}")
        parsed[metric] = {
            "threshold": threshold,
            "min_absolute_change": min_abs,
            "min_relative_change": min_rel,
            "greater_is_better": greater_is_better,
        }
    return parsed


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


def _describe_threshold(spec: Mapping[str, Any], compare: bool) -> str:
    op = ">=" if spec["greater_is_better"] else "<="
    sign = "+" if spec["greater_is_better"] else "-"
    parts = []
    if spec["threshold"] is not None:
        parts.append(f"{op} {spec['threshold']:g}")
    suffix = "" if compare else " (not applied: no champion)"
    if spec["min_absolute_change"] is not None:
        change = spec["min_absolute_change"]
        parts.append(f"{op} champion {sign} {change:g}{suffix}" if change else f"{op} champion{suffix}")
    if spec["min_relative_change"] is not None:
        parts.append(f"{op} champion {sign}{spec['min_relative_change']:.0%}{suffix}")
    return "; ".join(parts)


def gate_metric(
    metric: str,
    spec: Mapping[str, Any],
    candidate_result: Any,
    champion_result: Any | None,
) -> dict[str, Any]:
    """
    Gate one metric with :func:`mlflow.validate_evaluation_results` and return its report row.

    ``champion_result`` None means no champion: only the absolute ``threshold`` applies. A
    ``min_absolute_change`` of 0 ("no worse than the champion"), which MLflow's ``MetricThreshold`` does not
    accept, is applied as an absolute threshold at the champion's value.
    """
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    raw_candidate = candidate_result.metrics.get(metric)
    candidate = _finite(raw_candidate)
    champion = _finite(champion_result.metrics.get(metric)) if champion_result is not None else None
    wants_change = spec["min_absolute_change"] is not None or spec["min_relative_change"] is not None
    compare = champion_result is not None and wants_change
    row: dict[str, Any] = {
        "metric": metric,
        "candidate": candidate,
        "champion": champion,
        "delta": candidate - champion if candidate is not None and champion is not None else None,
        "threshold": _describe_threshold(spec, compare or champion_result is not None),
        "shown": (
            raw_candidate,
            champion_result.metrics.get(metric) if champion_result is not None else None,
        ),
        "passed": False,
        "reason": "",
    }
    if candidate is None:
        row["reason"] = (
            f"candidate {metric} is {raw_candidate!r}: a metric that is not a finite number cannot pass the gate"
        )
        return row
    notes = []
    if compare and champion is None:
        compare = False
        notes.append(f"champion {metric} is not a finite number; change thresholds not applied")
    kwargs: dict[str, Any] = {"greater_is_better": spec["greater_is_better"]}
    if spec["threshold"] is not None:
        kwargs["threshold"] = spec["threshold"]
    if compare:
        if spec["min_absolute_change"]:
            kwargs["min_absolute_change"] = spec["min_absolute_change"]
        elif spec["min_absolute_change"] is not None:  # 0: no worse than the champion
            pick = max if spec["greater_is_better"] else min
            kwargs["threshold"] = pick(kwargs.get("threshold", champion), champion)
            notes.append(f"min_absolute_change 0: must be no worse than the champion's {champion:.4f}")
        if spec["min_relative_change"] is not None:
            kwargs["min_relative_change"] = spec["min_relative_change"]
    if len(kwargs) == 1:
        row.update(passed=True, reason="; ".join([*notes, "no threshold applies without a champion"]))
        return row
    try:
        mlflow.validate_evaluation_results(
            validation_thresholds={metric: MetricThreshold(**kwargs)},
            candidate_result=candidate_result,
            baseline_result=champion_result if compare else None,
        )
    except ModelValidationFailedException as err:
        row["reason"] = "; ".join([err.message, *notes])
        return row
    row.update(passed=True, reason="; ".join(notes))
    return row


class EvaluateModelOperator(_ModelOperatorMixin, BaseOperator, SkipMixin):
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
    :class:`~airflow_mlops.exceptions.ModelGateFailedError` if ``fail_on_gate`` is set.

    Returns (XCom) ``{"passed", "model_name", "candidate_version", "champion_version", "metrics",
    "report", "reason", "evaluation_run_id"}``; ``metrics`` maps every metric the candidate produced to
    ``{"candidate", "champion", "delta", "passed"}`` (``passed`` is None for metrics not gated).

    :param model_name: Registered model name (templated).
    :param candidate_version: Version of the candidate (templated), e.g. the ``version`` of
        :class:`~airflow_mlops.operators.registry.RegisterModelOperator`'s result.
    :param candidate_model_uri: Model URI to evaluate instead (templated); used when no version is given
        (``models:/<name>/<version>`` and ``models:/<name>@<alias>`` also identify the version to tag).
    :param holdout_data: Snapshot URI of the holdout rows (templated), e.g. ``<snapshot-uri>#holdout``.
    :param target: Name of the label column in the holdout.
    :param thresholds: Gate spec (templated) ``{metric: {"threshold", "min_absolute_change",
        "min_relative_change", "greater_is_better"}}``, or a JSON string of it (e.g. from DAG params).
        ``min_absolute_change: 0`` means "no worse than the champion".
    :param model_type: ``"classifier"`` or ``"regressor"``.
    :param fail_on_gate: Fail the task when the gate rejects, instead of skipping downstream tasks.
    :param experiment_name: MLflow experiment of the evaluation runs; default: the experiment of the
        candidate's training run, else ``mlops-evaluation``.
    :param mlflow_conn_id: The MLflow connection to use.
    :param aws_conn_id: The ``aws`` connection used to read ``s3://`` holdouts.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "candidate_version",
        "candidate_model_uri",
        "holdout_data",
        "target",
        "thresholds",
        "experiment_name",
    )
    template_fields_renderers = {"thresholds": "json"}
    inherits_from_skipmixin = True
    operator_extra_links = (MLflowModelVersionLink(), MLflowRunLink())
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        model_name: str,
        holdout_data: str,
        thresholds: dict[str, dict[str, Any]] | str,
        candidate_version: int | str | None = None,
        candidate_model_uri: str | None = None,
        target: str = "label",
        model_type: str = "classifier",
        fail_on_gate: bool = False,
        experiment_name: str | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if model_type not in METRICS_BY_MODEL_TYPE:
            raise ValueError(f"model_type must be one of {sorted(METRICS_BY_MODEL_TYPE)}, got {model_type!r}")
        if not is_templated(model_name):
            validate_model_name(model_name)
        if candidate_version in (None, "") and not candidate_model_uri:
            raise ValueError(
                "Give candidate_version (the registered version to evaluate) or candidate_model_uri"
            )
        if candidate_version not in (None, "") and not is_templated(candidate_version):
            parse_version(candidate_version, str(model_name), "candidate_version")
        if not isinstance(holdout_data, str) or not holdout_data.strip():
            raise ValueError("holdout_data must be a snapshot URI, e.g. '<snapshot-uri>#holdout'")
        if not isinstance(target, str) or not target:
            raise ValueError("target must be the name of the label column in the holdout data")
        if not _has_template(thresholds):
            parse_thresholds(thresholds, model_type)
        self.model_name = model_name
        self.candidate_version = candidate_version
        self.candidate_model_uri = candidate_model_uri
        self.holdout_data = holdout_data
        self.target = target
        self.thresholds = thresholds
        self.model_type = model_type
        self.fail_on_gate = fail_on_gate
        self.experiment_name = experiment_name
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    # -- execute ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        thresholds = parse_thresholds(self.thresholds, self.model_type)
        name = validate_model_name(self.model_name)
        version = (
            parse_version(self.candidate_version, name, "candidate_version")
            if self.candidate_version not in (None, "")
            else None
        )
        candidate_uri = (self.candidate_model_uri or "").strip() or None
        if version is None and candidate_uri is None:
            raise ValueError(
                f"Nothing to evaluate for model {name!r}: candidate_version and candidate_model_uri are empty"
            )
        holdout_uri = str(self.holdout_data).strip()
        client = self.hook.client

        if version is None:
            version = self._version_from_uri(client, name, candidate_uri)
        candidate_mv = get_model_version(client, name, version) if version is not None else None
        if version is not None:
            self.link_model_version(name, version)
        candidate_uri = candidate_uri or f"models:/{name}/{version}"
        champion, champion_note = self._champion(client, name, version)

        data = self._read_holdout(holdout_uri)
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
                holdout_uri,
            )
            produced = sorted(candidate_result.metrics)
            missing = [metric for metric in thresholds if metric not in candidate_result.metrics]
            if missing:
                raise ModelEvaluationError(
                    f"{label} does not produce the gated metric(s) {missing} on {holdout_uri}; it produces "
                    f"{produced}. Remove them from thresholds (roc_auc, log_loss and precision_recall_auc "
                    "need a model with predict_proba; multiclass models have no confusion-matrix counts)."
                )
            champion_result = None
            if champion is not None:
                champion_result = self._evaluate(
                    client, experiment_id, run_id, f"models:/{name}/{champion}", data, f"champion v{champion}",
                    f"champion of model {name!r} (v{champion})", holdout_uri,
                )  # fmt: skip

            rows = [
                gate_metric(metric, spec, candidate_result, champion_result)
                for metric, spec in thresholds.items()
            ]
            passed = all(row["passed"] for row in rows)
            failures = [f"{row['metric']}: {row['reason']}" for row in rows if not row["passed"]]
            if passed:
                reason = f"all {len(rows)} gated metric(s) met their thresholds"
                if champion is None:
                    reason += f" ({champion_note}; only absolute thresholds applied)"
            else:
                reason = " | ".join(failures)
            report = self._report(
                name, version, champion, champion_note, holdout_uri, len(data), rows, passed, reason
            )
            metrics = self._metrics(candidate_result, champion_result, rows)
            mlflow.log_text(report, "evaluation/report.md")
            mlflow.set_tags(
                {T.GATE_DECISION: "passed" if passed else "rejected", T.GATE_REASON: reason[:_REASON_MAX]}
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
        }
        if version is not None:
            summary = {
                "passed": passed,
                "holdout": holdout_uri,
                "rows": len(data),
                "champion_version": champion,
                "evaluation_run_id": evaluation_run_id,
                "metrics": {
                    row["metric"]: {"candidate": row["candidate"], "champion": row["champion"]}
                    for row in rows
                },
            }
            for key, value in (
                (T.EVALUATION_SUMMARY, tag_value(summary)),
                (T.GATE_DECISION, "passed" if passed else "rejected"),
                (T.GATE_REASON, reason[:_REASON_MAX]),
            ):
                client.set_model_version_tag(name, str(version), key, value)
        else:
            self.log.warning(
                "%s is not a registered version; gate decision not written to the registry", candidate_uri
            )

        self.log.info("Evaluation report:\n%s", report)
        if passed:
            self.log.info("Gate passed for %s", label)
            return result
        self.log.warning("Gate rejected %s: %s", label, reason)
        return self._on_rejected(context, result, label)

    def _on_rejected(self, context: Context, result: dict[str, Any], label: str) -> dict[str, Any]:
        ti = context.get("ti")
        if self.fail_on_gate:
            if ti is not None:  # the return value is lost when the task raises
                ti.xcom_push(key="return_value", value=result)
            raise ModelGateFailedError(f"{label} did not pass the evaluation gate: {result['reason']}")
        task = context.get("task") or self
        if ti is None or not task.downstream_task_ids:
            return result
        downstream = [t for t in task.get_direct_relatives(upstream=False) if not t.is_teardown]
        if not downstream:
            return result
        ti.xcom_push(key="return_value", value=result)
        self.log.info("Skipping downstream tasks %s", [t.task_id for t in downstream])
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
            raise RegistryError(f"Model {name!r} has no alias {match.group(3)!r} (from {uri})")
        return version

    def _champion(self, client: MlflowClient, name: str, candidate: int | None) -> tuple[int | None, str]:
        from mlflow.exceptions import MlflowException

        champion = get_alias_version(client, name, T.CHAMPION)
        if champion is None:
            return None, f"no champion: model {name!r} has no '{T.CHAMPION}' alias (first run)"
        if champion == candidate:
            return (
                None,
                f"the candidate v{candidate} already is the champion; compared against thresholds only",
            )
        try:
            client.get_model_version(name, str(champion))
        except MlflowException as err:
            if error_code(err) != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.log.warning("Alias %s of model %s points at missing version %s", T.CHAMPION, name, champion)
            return None, (
                f"no champion: alias '{T.CHAMPION}' of model {name!r} points at version {champion}, which no "
                "longer exists"
            )
        return champion, f"champion v{champion}"

    def _read_holdout(self, uri: str) -> pd.DataFrame:
        from airflow_mlops.runtime.datasets import read_snapshot
        from airflow_mlops.runtime.storage import is_s3

        storage = None
        if is_s3(uri):
            from airflow_mlops.hooks.storage import StorageHook

            storage = StorageHook(aws_conn_id=self.aws_conn_id).get_conn()
        try:
            data = read_snapshot(uri, storage=storage)
        except (FileNotFoundError, KeyError) as err:
            raise ModelEvaluationError(f"Cannot read holdout data {uri}: {err}") from err
        if self.target not in data.columns:
            raise ModelEvaluationError(
                f"Holdout data {uri} has no target column {self.target!r}; its columns are {list(data.columns)}"
            )
        if data.empty:
            raise ModelEvaluationError(f"Holdout data {uri} has no rows; cannot evaluate on it")
        return data

    def _experiment_id(self, client: MlflowClient, candidate_mv: Any | None) -> str:
        if self.experiment_name:
            experiment = client.get_experiment_by_name(self.experiment_name)
            return experiment.experiment_id if experiment else client.create_experiment(self.experiment_name)
        if candidate_mv is not None and candidate_mv.run_id:
            from mlflow.exceptions import MlflowException

            try:
                return client.get_run(candidate_mv.run_id).info.experiment_id
            except MlflowException as err:
                self.log.info("Training run %s not found (%s)", candidate_mv.run_id, error_code(err))
        experiment = client.get_experiment_by_name(_EVALUATION_EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(_EVALUATION_EXPERIMENT)
        except MlflowException as err:  # created concurrently
            if error_code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(_EVALUATION_EXPERIMENT).experiment_id

    def _start_run(self, client: MlflowClient, experiment_id: str, run_name: str, lineage: dict[str, str]):
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

    def _evaluate(
        self, client: MlflowClient, experiment_id: str, parent_run_id: str, model_uri: str,
        data: pd.DataFrame, run_name: str, label: str, holdout_uri: str,
    ) -> Any:  # fmt: skip
        import mlflow

        existing = self._find_run(client, experiment_id, run_name, {"tags.mlflow.parentRunId": parent_run_id})
        run_kwargs: dict[str, Any] = (
            {"run_id": existing} if existing else {"run_name": run_name, "experiment_id": experiment_id}
        )
        with mlflow.start_run(nested=True, **run_kwargs):
            try:
                result = mlflow.models.evaluate(
                    model=model_uri,
                    data=data,
                    targets=self.target,
                    model_type=self.model_type,
                    evaluators=["default"],
                    evaluator_config={"default": {"log_model_explainability": False}},
                )
            except Exception as err:
                raise ModelEvaluationError(
                    f"Cannot evaluate {label} ({model_uri}) on holdout {holdout_uri} with target "
                    f"{self.target!r} as a {self.model_type}: {type(err).__name__}: {err}"
                ) from err
        return result

    @staticmethod
    def _metrics(
        candidate_result: Any, champion_result: Any | None, rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        gated = {row["metric"]: row["passed"] for row in rows}
        metrics = {}
        for metric in sorted(candidate_result.metrics):
            candidate = _finite(candidate_result.metrics[metric])
            champion = _finite(champion_result.metrics.get(metric)) if champion_result is not None else None
            metrics[metric] = {
                "candidate": candidate,
                "champion": champion,
                "delta": candidate - champion if candidate is not None and champion is not None else None,
                "passed": gated.get(metric),
            }
        return metrics

    def _report(
        self, name: str, version: int | None, champion: int | None, champion_note: str, holdout_uri: str,
        rows_count: int, rows: list[dict[str, Any]], passed: bool, reason: str,
    ) -> str:  # fmt: skip
        title = f"v{version}" if version is not None else "candidate"
        against = f"champion v{champion}" if champion is not None else "no champion"
        lines = [
            f"### Evaluation of `{name}` {title} against {against}",
            "",
            f"Holdout `{holdout_uri}` ({rows_count} rows), target `{self.target}`, model type {self.model_type}.",
            "",
        ]
        if champion is None:
            lines += [
                f"**{champion_note[0].upper()}{champion_note[1:]}**: only absolute thresholds apply; "
                "min_absolute_change / min_relative_change are not applied.",
                "",
            ]
        lines += [
            "| metric | champion | candidate | delta | threshold | result |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            delta = "n/a" if row["delta"] is None else f"{row['delta']:+.4f}"
            lines.append(
                f"| {row['metric']} | {_fmt(row['shown'][1])} | {_fmt(row['shown'][0])} | {delta} | "
                f"{row['threshold']} | {'pass' if row['passed'] else 'FAIL'} |"
            )
        lines += ["", f"**Decision: {'passed' if passed else 'rejected'}** — {reason}"]
        return "\n".join(lines)


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_templated(value)
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    return False
