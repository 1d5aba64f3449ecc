"""
One exception class per failure kind, each saying whether a retry can help.

Not retryable (the task fails at once, no retries spent) — subclasses of :class:`NotRetryableError`, which is an
``AirflowFailException``: bad input, a failed gate, a rejected approval, configuration errors found after
rendering, a missing model version, an OOMKilled pod, an image that cannot be pulled, an invalid manifest, a
deployment that failed its check and was rolled back.

Retryable (Airflow's ``retries`` apply) — subclasses of :class:`RetryableError`: timeouts, connection errors,
server errors (5xx), preemption and eviction.

Every error carries the fields a caller needs (``model``, ``version``, ``dataset``, ``uri``, ``pod``, ``job``,
``reason``) as attributes, so code branches on the type and its fields, never on the message text.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow_mlops.data.storage import S3UnreachableError
from airflow_mlops.version_compat import AirflowException, AirflowFailException


class MLOpsError(AirflowException):
    """
    Base class of every error raised by airflow-mlops.

    :param message: What went wrong, naming what is involved and, for bad input, what is allowed.
    :param fields: What the failure is about (``model=``, ``version=``, ``dataset=``, ``pod=``...), kept as
        attributes of the same names.
    """

    #: Whether Airflow's retries can help (``False`` for every :class:`NotRetryableError`).
    retryable: ClassVar[bool] = True

    model: str | None = None
    version: str | None = None
    dataset: str | None = None
    uri: str | None = None
    pod: str | None = None
    job: str | None = None
    reason: str | None = None

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        for key, value in fields.items():
            setattr(self, key, value)


class RetryableError(MLOpsError):
    """A transient failure (timeout, connection error, server error, preemption): a retry can succeed."""


class NotRetryableError(MLOpsError, AirflowFailException):
    """
    A failure that a retry cannot fix (bad input, a model that does not serve): the task fails at once.

    Retrying would only repeat the failure, or, for a deployment that was rolled back, deploy the bad
    version a second time.
    """

    retryable: ClassVar[bool] = False


# -- configuration and connections ----------------------------------------------------------------------


class ConfigurationError(NotRetryableError, ValueError):
    """
    An argument or setting is invalid once rendered (``execute`` time); the message says what is allowed.

    Literal arguments are checked in ``__init__`` (DAG parse time) and raise ``ValueError`` there; this is
    the same check on a templated value, and it is a ``ValueError`` too.
    """


class ConnectionSetupError(ConfigurationError):
    """A connection is missing or malformed (unknown conn id, wrong type, a credential in a URL)."""


class ServiceUnavailableError(RetryableError):
    """A service could not be reached, timed out or answered with a server error (5xx)."""


# -- data ---------------------------------------------------------------------------------------------------


class DatasetError(NotRetryableError):
    """A dataset cannot be read or snapshotted (missing, empty, unreadable, unsafe name)."""


class DataValidationError(DatasetError):
    """A dataset failed its Great Expectations suite."""


class DataDriftError(DatasetError):
    """A dataset drifted from its reference beyond the configured thresholds."""


# -- training -----------------------------------------------------------------------------------------------


class TrainingError(RetryableError):
    """The training process failed or did not produce a result (retryable: the next try resumes)."""


class TrainingTimeoutError(TrainingError):
    """Training ran past its timeout."""


class TrainingPreemptedError(TrainingError):
    """A training pod was preempted, evicted or lost with its node; a retry restarts from the checkpoint."""


class TrainingResourceError(TrainingError, NotRetryableError):
    """A training container ran out of memory (OOMKilled): the same limits would fail again."""


class TrainingImageError(TrainingError, NotRetryableError):
    """A training image cannot be pulled or its container cannot be created."""


class InvalidManifestError(ConfigurationError):
    """A Kubernetes manifest is invalid (rejected by the API server or by its schema)."""


class TrainingResultError(TrainingError, NotRetryableError):
    """The trainer finished but its result is malformed (no run id, a run id of another run, bad JSON)."""


# -- models -------------------------------------------------------------------------------------------------


class RegistryError(RetryableError):
    """A model registry operation could not be carried out (the registry failed or is unreachable)."""


class ModelVersionNotFoundError(RegistryError, NotRetryableError):
    """The model, its version or its alias does not exist."""


class ModelEvaluationError(NotRetryableError):
    """A model cannot be evaluated: unreadable holdout, missing target column, a gated metric not produced."""


class ModelGateFailedError(NotRetryableError):
    """The candidate model did not pass the evaluation gate."""


class ApprovalRejectedError(NotRetryableError):
    """A person rejected the model version, or the approval request timed out."""


class ApprovalRequiredError(NotRetryableError):
    """
    A model version may not become ``champion`` or serve: it has no passed gate or no recorded approval.

    ``reason`` names what is missing (``gate``, ``approval``, ``served before`` for a rollback target).
    """


class RecordSignatureError(NotRetryableError):
    """
    A registry record that decides what serves (release record, deployment history) is not signed by the package.

    It is unsigned, signed with a key the signing connection does not hold, changed after signing, or signed
    for another model version (:mod:`airflow_mlops.signing`): it counts as absent, and nothing is changed.
    """


# -- serving ------------------------------------------------------------------------------------------------


class InfraValidationError(NotRetryableError):
    """A candidate model cannot serve: its sandbox server did not start, errored, or was too slow."""


class DeploymentError(RetryableError):
    """A model cannot be deployed, or rolled back, on its serving target (retryable: a transient fault)."""


class ReleaseInProgressError(DeploymentError):
    """Another release of the same model (another task instance) is in progress; retry once it ends."""


class DeploymentVerificationError(DeploymentError, NotRetryableError):
    """A deployed model failed its post-deploy check; the target was rolled back to the previous version."""


class DeploymentRejectedError(DeploymentError, NotRetryableError):
    """
    The serving platform refused a deployment, or reports that its rollout cannot succeed.

    An invalid spec (HTTP 4xx), a revision that failed, a model that failed to load, an invalid predictor
    spec; or there is nothing to deploy (a rollback without history, or to the version already serving). A
    retry would fail the same way.
    """


class PortInUseError(DeploymentRejectedError, ConfigurationError):
    """
    The local target's port is the endpoint of another model: a configuration error, not retried.

    A :class:`ConfigurationError`, and a deployment the target refused (so a release records it as failed and
    changes nothing). ``holder`` is the model whose endpoint listens on the port.
    """

    holder: str | None = None


class DatasetConfigurationError(ConfigurationError, DatasetError):
    """
    A dataset argument (name, snapshot URI, source) is invalid once rendered (``execute`` time).

    Both a :class:`ConfigurationError` (a ``ValueError``: fix the DAG or its parameters) and a
    :class:`DatasetError` (it is about the dataset named in ``dataset=``); not retryable.
    """


class TrainingAdmissionTimeoutError(TrainingTimeoutError):
    """
    A training queued on a Kueue ``LocalQueue`` was not admitted within its ``admission_timeout``.

    Retryable: quota frees up as other workloads finish; the queued object was deleted, so it holds no place.
    """


class StorageUnavailableError(ServiceUnavailableError, S3UnreachableError):
    """
    S3 (or an S3-compatible store) could not be reached for the whole outage window.

    ``uri`` is the object or prefix, ``endpoint`` the store (without user-info), ``waited`` the seconds waited.
    Also a :class:`~airflow_mlops.data.storage.S3UnreachableError` (a ``ConnectionError``), which is what
    :class:`~airflow_mlops.data.storage.Storage` raises where Airflow is not installed.
    """

    endpoint: str | None = None
    waited: float | None = None
