"""
What a training runtime is asked to run: :class:`TrainingSpec`.

Plain Python (no Airflow, no heavy library): the operator builds the spec, a runtime only reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_mlops.training.entrypoint import entrypoint_command

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class TrainingSpec:
    """
    One start of a trainer, as a runtime receives it: what to run, with which environment, for whom.

    The operator builds it once the MLflow run exists; a runtime that defers gets it back (:meth:`to_dict` /
    :meth:`from_dict`) when the task resumes. Everything but :attr:`process_env` is JSON-serialisable and
    holds no credential.

    :param entrypoint: What to run (see :func:`parse_entrypoint`): a module string or a command list.
    :param dag_id: Airflow DAG id.
    :param dag_run_id: Airflow DAG run id.
    :param task_id: Airflow task id.
    :param map_index: Map index of the task instance (-1 when not mapped).
    :param try_number: Airflow try number.
    :param mlflow_run_id: The MLflow run the trainer logs to (it exists before the trainer starts).
    :param experiment_id: Its MLflow experiment id.
    :param experiment_name: Its MLflow experiment name.
    :param instance_uri: ``<output_root>/<dag_id>/<run_id>/<task_id>[/<map_index>]``, the same for every try.
    :param contract_env: Every variable of the training contract except ``MLOPS_RESULT_PATH`` (the runtime
        sets that one: where it reads the result from).
    :param env: The operator's extra, non-secret variables.
    :param connection_env: Non-secret settings of the MLflow and AWS connections (tracking/registry URI,
        region, endpoint URL): what a trainer outside the worker gets as plain values.
    :param secret_names: Names of the credential variables the connections hold; a trainer outside the worker
        must get them another way (Kubernetes Secrets, a service account). Their values are never here.
    :param timeout: Longest the trainer may run, in seconds (None: no limit).
    :param execution_timeout: The task's ``execution_timeout`` in seconds, if any.
    :param attempt: Starts of the trainer in this try (a preempted pod is started again, same checkpoint URI).
    :param process_env: The whole environment of a trainer the worker starts itself (base variables,
        connection settings *with* their credentials, ``env``, the contract). Never serialised, never shown.
    """

    entrypoint: str | tuple[str, ...]
    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    try_number: int
    mlflow_run_id: str
    experiment_id: str
    experiment_name: str
    instance_uri: str
    contract_env: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    connection_env: Mapping[str, str] = field(default_factory=dict)
    secret_names: tuple[str, ...] = ()
    timeout: float | None = None
    execution_timeout: float | None = None
    attempt: int = 1
    process_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def description(self) -> str:
        """How messages name the trainer: its entrypoint and the task."""
        return f"training entrypoint {self._entrypoint_value!r} of task {self.task_id!r}"

    @property
    def _entrypoint_value(self) -> str | list[str]:
        return self.entrypoint if isinstance(self.entrypoint, str) else list(self.entrypoint)

    @property
    def command(self) -> list[str]:
        """The command that starts the trainer in the worker (a module runs with the worker's Python)."""
        return entrypoint_command(self.entrypoint)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the deferral kwargs); :attr:`process_env` is left out."""
        data = asdict(self)
        del data["process_env"]
        data["entrypoint"] = self._entrypoint_value
        data["secret_names"] = list(self.secret_names)
        for key in ("contract_env", "env", "connection_env"):
            data[key] = dict(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        entrypoint = values["entrypoint"]
        values["entrypoint"] = entrypoint if isinstance(entrypoint, str) else tuple(entrypoint)
        values["secret_names"] = tuple(values.get("secret_names") or ())
        values.pop("process_env", None)
        return cls(**values)

    def next_attempt(self) -> TrainingSpec:
        """The same spec, counted as one more start."""
        return replace(self, attempt=self.attempt + 1)
