"""One exception class per failure kind; messages name the dataset, model, version or run involved."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MLOpsError(AirflowException):
    """Base class of every error raised by airflow-mlops."""


class NotRetryableError(MLOpsError, AirflowFailException):
    """
    A failure that a retry cannot fix (bad input, a model that does not serve): the task fails at once.

    Retrying would only repeat the failure, or, for a deployment that was rolled back, deploy the bad
    version a second time.
    """


class ConnectionSetupError(MLOpsError):
    """A connection is missing, malformed, or its service cannot be reached."""


class DatasetError(NotRetryableError):
    """A dataset cannot be read or snapshotted (missing, empty, unreadable, unsafe name)."""


class DataValidationError(NotRetryableError):
    """A dataset failed its Great Expectations suite."""


class DataDriftError(NotRetryableError):
    """A dataset drifted from its reference beyond the configured thresholds."""


class TrainingError(MLOpsError):
    """The training process failed or did not produce a result."""


class ModelGateFailedError(NotRetryableError):
    """The candidate model did not pass the evaluation gate."""


class RegistryError(MLOpsError):
    """A model registry operation cannot be carried out (unknown model, version or alias)."""


class ModelEvaluationError(MLOpsError):
    """A model cannot be evaluated: unreadable holdout, missing target column, a gated metric not produced."""


class InfraValidationError(NotRetryableError):
    """A candidate model cannot serve: its sandbox server did not start, errored, or was too slow."""


class DeploymentError(MLOpsError):
    """A model cannot be deployed, or rolled back, on its serving target."""


class DeploymentVerificationError(DeploymentError, NotRetryableError):
    """A deployed model failed its post-deploy check; the target was rolled back to the previous version."""
