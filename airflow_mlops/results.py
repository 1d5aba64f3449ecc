"""
What each operator returns (its XCom), as types, and how an operator takes another task's whole result.

Every operator returns a small, JSON-safe dict; the :class:`~typing.TypedDict` classes here say which keys it
has. Each key is an XCom of its own as well, so a DAG passes either the whole result (``ingest.output``) or
one value (``ingest.output["uri"]``)::

    ingest = IngestDatasetOperator(task_id="ingest", dataset_name="churn", source="data/churn.csv",
                                   split={"train": 0.7, "valid": 0.15, "holdout": 0.15})
    train = TrainModelOperator(task_id="train", entrypoint="my.trainer", experiment_name="churn",
                               train_data=ingest.output, valid_data=ingest.output)
    register = RegisterModelOperator(task_id="register", model_name="churn", model_uri=train.output)
    evaluate = EvaluateModelOperator(task_id="evaluate", model_name="churn", candidate_version=register.output,
                                     holdout_data=ingest.output, thresholds={...})

An argument that takes a snapshot URI accepts a :class:`Snapshot` (the ``uri``, or the split the argument
is about: ``train_data`` its ``train`` split...); one that takes a model version accepts any result naming a
version (:class:`RegisteredVersion`, :class:`EvaluationResult`, :class:`ApprovalDecision`...); ``model_uri``
of the registration accepts a :class:`TrainingResult`. Operators resolve them once rendered, at the start of
``execute`` (:func:`snapshot_uri`, :func:`model_version`, :func:`result_value`): a dict that lacks what the
argument needs fails the task with :class:`~airflow_mlops.exceptions.ConfigurationError`, not retried.

This module is imported when a DAG file is parsed: it imports nothing heavy, and its annotations are evaluated
when the classes are made (no ``from __future__ import annotations``: a TypedDict would turn every string
annotation into a ``ForwardRef``, compiling each one, about 100 of them, while the DAG file is parsed).
"""

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from airflow_mlops.exceptions import ConfigurationError

__all__ = [
    "ApprovalDecision",
    "DeploymentResult",
    "DriftSummary",
    "EvaluationLinks",
    "EvaluationResult",
    "ExpectationFailure",
    "InfraValidationSummary",
    "LatencySummary",
    "MetricComparison",
    "Promotion",
    "RegisteredVersion",
    "ReleaseWatchResult",
    "RollbackResult",
    "Snapshot",
    "TrainingResult",
    "ValidationSummary",
    "model_version",
    "result_value",
    "snapshot_uri",
]


# -- data ---------------------------------------------------------------------------------------------------


class Snapshot(TypedDict):
    """What :class:`~airflow_mlops.operators.ingest.IngestDatasetOperator` returns: the snapshot written."""

    #: The dataset name.
    name: str
    #: The content-addressed id (a SHA-256), the last part of ``uri``.
    snapshot_id: str
    #: ``<data_root>/datasets/<name>/<snapshot_id>``.
    uri: str
    #: The SHA-256 of the source content.
    sha256: str
    rows: int
    #: Column name to its pandas dtype.
    schema: dict[str, str]
    #: Each split to its URI, ``<uri>#<split>`` (empty without splits).
    splits: dict[str, str]


class ExpectationFailure(TypedDict):
    """One failed expectation of a :class:`ValidationSummary`."""

    expectation: str
    column: str | None
    #: ``critical``, ``warning`` or ``info``.
    severity: str
    #: The observed value, unexpected counts, up to five unexpected values, or the error raised.
    observed: Any
    kwargs: dict[str, Any]
    #: The expected type's name, for a type expectation.
    expected_type: NotRequired[str]


class ValidationSummary(TypedDict):
    """What :class:`~airflow_mlops.operators.validation.ValidateDatasetOperator` returns (never data rows)."""

    success: bool
    #: Whether a failure stops the pipeline (False when only warning/info expectations failed).
    blocking: bool
    #: The snapshot URI validated, or ``sql://<conn>/<table>`` / ``sql://<conn>``.
    dataset: str
    name: str | None
    snapshot_id: str | None
    split: str | None
    rows: int | None
    evaluated: int
    successful: int
    unsuccessful: int
    failed: list[ExpectationFailure]
    #: Where the Data Docs page was stored, or None.
    data_docs: str | None
    #: The Data Docs page's http(s) address (an MLflow artifact, with ``experiment_name``), or None.
    data_docs_uri: NotRequired[str | None]


class DriftSummary(TypedDict):
    """What :class:`~airflow_mlops.operators.drift.DriftCheckOperator` returns."""

    drift: bool
    dataset: str
    #: The reference snapshot (or table); None when there was none to compare with.
    reference: str | None
    drifted_features: list[str]
    missing_features: list[str]
    added_features: list[str]
    #: Each feature to its metrics, limits and exceeded metrics.
    features: dict[str, Any]
    #: Where the JSON report was stored, or None.
    report: str | None
    #: ``memory`` (compared in the worker) or ``sql`` (in the database).
    engine: str
    #: ``{"rows", "summary_rows"}``: what reached the worker.
    transfer: dict[str, int]


# -- models -------------------------------------------------------------------------------------------------


class TrainingResult(TypedDict):
    """
    What :class:`~airflow_mlops.operators.training.TrainModelOperator` returns: the trainer's result.

    A trainer may add keys of its own; these are the ones the package reads.
    """

    #: The MLflow run the model was trained in.
    run_id: str
    #: The logged model (``models:/<model id>``, ``runs:/<run>/<path>``...).
    model_uri: str
    #: Final metrics.
    metrics: dict[str, Any]
    #: The MLflow logged model's id, when the trainer logged one.
    model_id: NotRequired[str]
    #: The label column, when the trainer names it.
    target: NotRequired[str]
    #: Columns of the training data the model leaves out on purpose.
    dropped_features: NotRequired[list[str]]


class RegisteredVersion(TypedDict):
    """What :class:`~airflow_mlops.operators.registry.RegisterModelOperator` returns: the model version."""

    model_name: str
    version: int
    #: ``models:/<name>/<version>``.
    model_uri: str
    #: The logged model registered.
    source_uri: str
    #: The training run, when known.
    run_id: str | None
    #: The version the ``champion`` alias points at (None on the first registration).
    champion_version: int | None


class Promotion(TypedDict):
    """What :class:`~airflow_mlops.operators.registry.PromoteModelOperator` returns."""

    model_name: str
    version: int
    #: The champion before (None when there was none).
    previous_champion: int | None


class MetricComparison(TypedDict):
    """One metric of an :class:`EvaluationResult`."""

    candidate: float | None
    champion: float | None
    delta: float | None
    #: Whether the gate passed it; None for a metric not gated.
    passed: bool | None


class EvaluationLinks(TypedDict):
    """The browser links of an :class:`EvaluationResult` ("" when there is none)."""

    evaluation_run: str
    model_version: str
    data_docs: str


class EvaluationResult(TypedDict):
    """What :class:`~airflow_mlops.operators.evaluation.EvaluateModelOperator` returns."""

    passed: bool
    model_name: str
    candidate_version: int | None
    candidate_model_uri: str
    champion_version: int | None
    metrics: dict[str, MetricComparison]
    #: The Markdown report (the body of the approval request).
    report: str
    reason: str
    evaluation_run_id: str
    #: One row per segment and metric of the slice checks.
    slices: list[dict[str, Any]]
    #: Plot name to artifact URI.
    artifacts: dict[str, str]
    links: EvaluationLinks


class ApprovalDecision(TypedDict):
    """What :class:`~airflow_mlops.operators.approval.ApproveModelOperator` returns."""

    #: ``approved``, ``rejected``, ``timed_out`` or ``self_approval_refused``.
    decision: str
    approver: str | None
    time: str
    comment: str
    model_name: str
    version: int
    #: The option that took effect: ``Approve`` or ``Reject``.
    option: str


# -- serving ------------------------------------------------------------------------------------------------


class LatencySummary(TypedDict):
    """Milliseconds of the single-row requests."""

    p50: float
    p95: float
    max: float


class InfraValidationSummary(TypedDict):
    """What :class:`~airflow_mlops.operators.deployment.InfraValidateOperator` returns."""

    model_name: str
    version: str
    #: The URI the target loads.
    model_uri: str
    #: The target's kind.
    target: str
    rows: int
    requests: int
    time: str
    latency_ms: LatencySummary
    passed: bool


class DeploymentResult(TypedDict):
    """What :class:`~airflow_mlops.operators.deployment.DeployModelOperator` returns."""

    model_name: str
    version: str
    #: What served before (None when nothing did).
    previous_version: str | None
    #: The target's kind.
    target: str
    endpoint: str
    #: ``deploy`` or ``rollback``.
    action: str
    #: ``succeeded`` (a failed release fails the task).
    outcome: str
    #: False when the version already served and nothing was redeployed.
    changed: bool
    #: The canary bake's requests, errors, error rate and p95, after a canary rollout.
    bake: NotRequired[dict[str, Any]]


class RollbackResult(DeploymentResult):
    """What :class:`~airflow_mlops.operators.deployment.RollbackModelOperator` returns (``action``: ``rollback``)."""


class ReleaseWatchResult(TypedDict, total=False):
    """What :class:`~airflow_mlops.operators.watch.WatchReleaseOperator` returns (plus a rollback's keys)."""

    model_name: str
    #: The version watched; after a rollback, the version restored.
    version: str
    #: ``pass``, ``fail`` (rolled back), ``inconclusive`` or ``superseded``.
    verdict: str
    message: str
    #: ``requests``, ``errors``, ``server_errors``, ``p95_latency_ms``, ``unavailable_checks``, ``health``.
    measurements: dict[str, Any]
    #: After a rollback: the version rolled away from.
    watched_version: str


# -- taking a whole result ----------------------------------------------------------------------------------

#: The keys that name a model version in a result, in the order they are looked for.
VERSION_KEYS = ("version", "candidate_version")


def result_value(value: Any, argument: str, keys: Sequence[str], accepts: str) -> Any:
    """
    *value*, or the value of the first of *keys* it holds when it is another task's whole result (a dict).

    Anything but a mapping is returned as it is, for the argument's own checks.

    :param argument: The argument's name, for the error.
    :param accepts: What the argument takes, for the error (e.g. "a snapshot URI or an ingest result").
    :raises ConfigurationError: when the dict holds none of *keys* (or only empty values).
    """
    if not isinstance(value, Mapping):
        return value
    for key in keys:
        if value.get(key) not in (None, ""):
            return value[key]
    raise ConfigurationError(
        f"{argument} got a dict without {' or '.join(repr(key) for key in keys)} (its keys: "
        f"{sorted(map(str, value))}): it takes {accepts}"
    )


def snapshot_uri(value: Any, argument: str, split: str | None = None, *, whole: bool = False) -> Any:
    """
    The snapshot URI *value* stands for: itself, or from a :class:`Snapshot` (an ingest's whole result).

    :param split: The split the argument is about (``train_data``: ``"train"``): a snapshot gives that
        split's URI, ``<uri>#<split>``.
    :param whole: Take the whole snapshot when it has no such split (otherwise that is an error).
    :raises ConfigurationError: when the dict is no snapshot, or lacks the split.
    """
    if not isinstance(value, Mapping):
        return value
    accepts = "a snapshot URI or an ingest result (a dict with 'uri' and 'splits')"
    if split is not None:
        splits = value.get("splits")
        if isinstance(splits, Mapping) and splits.get(split):
            return splits[split]
        if not whole:
            uri = result_value(value, argument, ("uri",), accepts)
            raise ConfigurationError(
                f"{argument}: snapshot {uri} has no {split!r} split (its splits: "
                f"{sorted(splits) if isinstance(splits, Mapping) else []}); ingest with a split that names "
                f"{split!r}, or pass '<snapshot-uri>#<split>'",
                uri=str(uri),
            )
    return result_value(value, argument, ("uri",), accepts)


def model_version(value: Any, argument: str, model_name: Any = None) -> Any:
    """
    The model version *value* stands for: itself, or the version another task's whole result names.

    A :class:`RegisteredVersion`, :class:`Promotion` or :class:`ApprovalDecision` names it as ``version``,
    an :class:`EvaluationResult` as ``candidate_version``.

    :param model_name: The rendered model name of the task; a result about another model is refused.
    :raises ConfigurationError: when the dict names no version, or a version of another model.
    """
    if not isinstance(value, Mapping):
        return value
    version = result_value(
        value, argument, VERSION_KEYS, "a model version or a result naming one (e.g. the registration's)"
    )
    other = value.get("model_name")
    if isinstance(model_name, str) and isinstance(other, str) and other != model_name.strip():
        raise ConfigurationError(
            f"{argument} names version {version} of model {other!r}, but the task is about model {model_name!r}",
            model=str(model_name),
            version=str(version),
        )
    return version
