"""One exception class per failure kind; messages name the dataset, model, version or run involved."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


class MLOpsError(AirflowException):
    """Base class of every error raised by airflow-mlops."""


class ConnectionSetupError(MLOpsError):
    """A connection is missing, malformed, or its service cannot be reached."""


class DatasetError(MLOpsError):
    """A dataset cannot be read or snapshotted (missing, empty, unreadable, unsafe name)."""


class DataValidationError(MLOpsError):
    """A dataset failed its Great Expectations suite."""


class TrainingError(MLOpsError):
    """The training process failed or did not produce a result."""


class ModelGateFailedError(MLOpsError):
    """The candidate model did not pass the evaluation gate."""


class RegistryError(MLOpsError):
    """A model registry operation cannot be carried out (unknown model, version or alias)."""


class ModelEvaluationError(MLOpsError):
    """A model cannot be evaluated: unreadable holdout, missing target column, a gated metric not produced."""


class InfraValidationError(MLOpsError):
    """A candidate model cannot serve: its sandbox server did not start, errored, or was too slow."""


class DeploymentError(MLOpsError):
    """A model cannot be deployed, or rolled back, on its serving target."""


class DeploymentVerificationError(DeploymentError):
    """A deployed model failed its post-deploy check; the target was rolled back to the previous version."""
