"""
Train a model in a separate process that follows the training contract and logs to MLflow.

:class:`TrainModelOperator` prepares the training (data checks, the MLflow run, the contract) and hands a
:class:`~airflow_mlops.training.spec.TrainingSpec` to its runtime. The runtimes live in
:mod:`airflow_mlops.training` and are re-exported here, where DAGs import them from::

    from airflow_mlops.operators.training import KubernetesRuntime, Gpus, Resources, TrainModelOperator

The Kubernetes names are loaded on first use, so a DAG that trains locally never imports them.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow.sdk import BaseOperator

from airflow_mlops import tags
from airflow_mlops.data.storage import is_local, join
from airflow_mlops.exceptions import ConfigurationError, DatasetError, TrainingError, TrainingResultError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import MLflowRunLink, run_url
from airflow_mlops.registry import tag_value
from airflow_mlops.results import TrainingResult, snapshot_uri
from airflow_mlops.training.entrypoint import entrypoint_command, parse_entrypoint
from airflow_mlops.training.selection import RUNTIMES, resolve_runtime, runtime_from_env
from airflow_mlops.utils.results import keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from airflow_mlops.hooks.storage import StorageHook
    from airflow_mlops.training.base import TrainingCallbacks, TrainingRuntime
    from airflow_mlops.training.kubernetes.config import Gpus, Resources, Scheduling
    from airflow_mlops.training.kubernetes.runtime import KubernetesRuntime
    from airflow_mlops.training.local import LocalRuntime
    from airflow_mlops.training.spec import TrainingSpec
    from airflow_mlops.utils.k8s import KubernetesConnection

__all__ = [
    "RUNTIMES",
    "Gpus",
    "KubernetesConnection",
    "KubernetesRuntime",
    "LocalRuntime",
    "Resources",
    "Scheduling",
    "TrainModelOperator",
    "TrainingRuntime",
    "TrainingSpec",
    "entrypoint_command",
    "parse_entrypoint",
    "runtime_from_env",
]

#: Names re-exported from their modules on first use (they are not needed to parse a local-training DAG).
_LAZY = {
    "LocalRuntime": "airflow_mlops.training.local",
    "TrainingRuntime": "airflow_mlops.training.base",
    "TrainingSpec": "airflow_mlops.training.spec",
    "KubernetesRuntime": "airflow_mlops.training.kubernetes.runtime",
    "Gpus": "airflow_mlops.training.kubernetes.config",
    "Resources": "airflow_mlops.training.kubernetes.config",
    "Scheduling": "airflow_mlops.training.kubernetes.config",
    "KubernetesConnection": "airflow_mlops.utils.k8s",
}

#: MLflow's limit on a tag value; the result is stored as one.
MAX_RESULT_CHARS = 8000

#: Variables of MLflowHook.child_env() that hold credentials.
_MLFLOW_SECRET_VARS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def __getattr__(name: str) -> Any:
    """Load the runtimes, the spec and the Kubernetes parts when a DAG first names them."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quote(value: str) -> str:
    """Quote *value* for an MLflow search filter."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"Cannot search MLflow for a value holding both quote characters: {value!r}")


class TrainModelOperator(BaseOperator):
    """
    Train a model: start a trainer with the training environment contract and return its result.

    Before the trainer starts, the operator creates (or, on a retry, finds again) the MLflow run of this task
    instance, tagged with the Airflow dag_id / run_id / task_id / map index / try number, the data URIs and
    the training snapshot's SHA-256 (``mlops.data.*``, which the registration copies to the model version).
    The trainer sees only the contract (:mod:`airflow_mlops.trainer.contract`), the MLflow connection's
    settings, a minimal base environment and *env*; never the worker's whole environment. It attaches to the
    run (``MLFLOW_RUN_ID``), logs its model, and writes ``{"run_id", "model_uri", "metrics"}`` to
    ``MLOPS_RESULT_PATH``; the operator stores that result on the run (tag ``mlops.training.result``) and
    returns it as XCom.

    Where the trainer runs is the *runtime*: ``"local"`` (a child process of the worker) or a runtime object
    such as :class:`~airflow_mlops.training.kubernetes.runtime.KubernetesRuntime` (a GPU pod, or a multi-node
    Job). The
    contract, the MLflow run and the result handling are the same for every runtime.

    A model whose signature lacks a column of the training data that is neither the label nor left out on
    purpose (the result's ``dropped_features``, or outside the ``features`` hyper-parameter) is refused with
    :class:`~airflow_mlops.exceptions.TrainingResultError`, not retried (docs/training.md).

    Retries duplicate nothing: a retry after a successful training returns the stored result without
    training again; a retry after a failure resumes the same run with the same checkpoint URI.

    :param entrypoint: What to run. A Python module, ``"pkg.module"`` or ``"-m pkg.module --arg value"``,
        runs with the worker's Python interpreter locally (``sys.executable -m pkg.module``) and with the
        image's ``python`` (or ``torchrun`` for several processes or nodes) in Kubernetes; a list of strings
        is run as a command as it is (``["python", "train.py"]``, ``["/opt/venv/bin/train"]``).
    :param train_data: Snapshot URI of the training data, ``#train`` selects a split; or an ingest's whole
        result (``ingest.output``: its ``train`` split). (templated)
    :param valid_data: Snapshot URI of the validation data, ``#valid`` selects a split; or an ingest's whole
        result (its ``valid`` split). (templated)
    :param experiment_name: MLflow experiment of the run; created if missing. (templated)
    :param hyperparameters: JSON-serialisable hyper-parameters, given to the trainer as ``MLOPS_PARAMS``: a
        dict, or a template string that renders to a JSON object or a Python dict literal (for example
        ``"{{ params.model_params }}"``). Not named ``params``: that is Airflow's own task argument (DAG
        params), which Airflow merges with the DAG's params and takes over. (templated)
    :param runtime: Where the trainer runs: ``"local"`` (one of :data:`RUNTIMES`), or a
        :class:`~airflow_mlops.training.base.TrainingRuntime` object such as
        ``KubernetesRuntime(image=..., gpus=1)``. The runtime's own template fields are rendered. (templated)
    :param output_root: Directory or ``s3://`` prefix under which each task instance gets
        ``<dag_id>/<run_id>/<task_id>/{checkpoints,output}``; default ``$MLOPS_DATA_ROOT/runs``
        (``./.mlops-data/runs`` without it). (templated)
    :param mlflow_conn_id: MLflow connection; the trainer gets its tracking URI (and, locally, its
        credentials; a Kubernetes pod gets credentials only from the Secrets the runtime names).
    :param aws_conn_id: Airflow ``aws`` connection (read as :class:`~airflow_mlops.hooks.storage.StorageHook`
        reads it) whose region and ``endpoint_url`` the trainer gets as the standard ``AWS_*`` variables
        (locally its credentials too); needed when data, checkpoints or outputs are on S3. The worker also
        uses it to check that ``s3://`` snapshots exist before starting the trainer. None, or the default
        ``aws_default`` while it is not defined, gives the trainer no AWS settings at all (templated).
    :param env: Extra, non-secret environment variables for the trainer. They may not redefine a contract
        variable. (templated)
    :param timeout: Longest the trainer may run (seconds or a timedelta); it is then stopped and the task
        fails (in Kubernetes: the pod's ``activeDeadlineSeconds``). None: no limit besides the task's
        ``execution_timeout``.
    """

    template_fields: Sequence[str] = (
        "train_data",
        "valid_data",
        "experiment_name",
        "hyperparameters",
        "output_root",
        "env",
        "runtime",
        "mlflow_conn_id",
        "aws_conn_id",
    )
    template_fields_renderers = {"hyperparameters": "json", "env": "json"}
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        entrypoint: str | Sequence[str],
        train_data: str,
        experiment_name: str,
        valid_data: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        runtime: str | TrainingRuntime = "local",
        output_root: str | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        env: dict[str, str] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        runtime_obj = resolve_runtime(runtime)
        parse_entrypoint(entrypoint)
        if not train_data:
            raise ValueError("train_data must be a snapshot URI (optionally ending in '#train')")
        if not experiment_name:
            raise ValueError("experiment_name must name an MLflow experiment")
        # Literal arguments are checked now; templates and other tasks' results once rendered, in execute.
        if (
            hyperparameters is not None
            and not isinstance(hyperparameters, dict | str)
            and not is_templated(hyperparameters)
        ):
            raise ValueError(
                "hyperparameters must be a dict, a template rendering to one, or None; "
                f"got {type(hyperparameters).__name__}"
            )
        if isinstance(env, dict) or not is_templated(env):
            _check_env(env)
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.entrypoint = entrypoint
        self.train_data = train_data
        self.valid_data = valid_data
        self.experiment_name = experiment_name
        self.hyperparameters = hyperparameters
        self.runtime: TrainingRuntime = runtime_obj
        self.output_root = output_root
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self.env = env
        self.timeout = timeout
        #: The MLflow UI page of the training run (the task's "MLflow run" link), set during execute.
        self.mlflow_run_url = ""
        if isinstance(env, dict):  # a template or another task's result is checked once rendered
            runtime_obj.check(env=env)

    @property
    def command(self) -> list[str]:
        """The command that starts the trainer in the ``local`` runtime."""
        return entrypoint_command(self.entrypoint)

    @property
    def trainer_description(self) -> str:
        """How messages name the trainer: its entrypoint and the task."""
        return f"training entrypoint {self.entrypoint!r} of task {self.task_id!r}"

    @cached_property
    def hook(self) -> MLflowHook:
        """The MLflow hook of ``mlflow_conn_id``."""
        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @cached_property
    def _storage_hook(self) -> StorageHook:
        from airflow_mlops.hooks.storage import StorageHook

        return StorageHook(aws_conn_id=self.aws_conn_id)

    # -- execute -------------------------------------------------------------------------------------------

    @keep_result
    def execute(self, context: Context) -> TrainingResult:
        """Prepare the training, run it on the runtime (which may defer) and return the checked result."""
        # An ingest's whole result stands for its train (valid) split.
        self.train_data = snapshot_uri(self.train_data, "train_data", "train")
        self.valid_data = snapshot_uri(self.valid_data, "valid_data", "valid")
        spec = self._prepare(context)
        if isinstance(spec, dict):
            return cast("TrainingResult", spec)  # an earlier try already trained: its stored result
        try:
            raw = self.runtime.start(spec, context, self._callbacks())
        except Exception as err:
            self._after_start_error(err, spec)
            raise
        return cast("TrainingResult", self._finish(spec, raw))

    @keep_result
    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        runtime_state: dict[str, Any] | None = None,
    ) -> TrainingResult:
        """Resume after a deferring runtime's trigger fired; fail on a missing or failed event."""
        if spec is None:
            raise TrainingError(f"Task {self.task_id!r} resumed without its training spec; retry the task")
        from airflow_mlops.training.spec import TrainingSpec

        training = TrainingSpec.from_dict(spec)
        self.mlflow_run_url = run_url(self.hook.tracking_uri, training.experiment_id, training.mlflow_run_id)
        if not event:
            self._mark_failed(self.hook.client, training.mlflow_run_id)
            raise TrainingError(f"The trigger of task {self.task_id!r} ended without an event")
        self.hook.client  # noqa: B018  (a resumed process sets the connection's MLflow credentials up first)
        try:
            raw = self.runtime.resume(training, context, self._callbacks(), event, runtime_state or {})
        except Exception as err:
            self._after_start_error(err, training)
            raise
        return cast("TrainingResult", self._finish(training, raw))

    def on_kill(self) -> None:
        """Stop the trainer the runtime started."""
        self.runtime.stop()

    def _callbacks(self) -> TrainingCallbacks:
        from airflow_mlops.training.base import TrainingCallbacks

        return TrainingCallbacks(log=self.log, defer=self._defer_training)

    def _defer_training(
        self,
        *,
        trigger: BaseTrigger,
        spec: TrainingSpec,
        state: dict[str, Any],
        timeout: timedelta | float | None = None,
    ) -> NoReturn:
        """Defer to *trigger*; :meth:`execute_complete` hands *spec* and *state* back to the runtime."""
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={"spec": spec.to_dict(), "runtime_state": state},
            timeout=timeout,
        )

    # -- pieces --------------------------------------------------------------------------------------------

    def _prepare(self, context: Context) -> TrainingSpec | dict[str, Any]:
        """
        Check the data, find or create the MLflow run, and build the contract: what every runtime shares.

        :return: The spec, or the stored result when an earlier try of this task instance already trained.
        """
        from airflow_mlops.trainer import contract

        ids = self._airflow_ids(context)
        try:
            _check_env(self.env)
            self.runtime.check(env=self.env)
        except ValueError as err:
            raise ConfigurationError(f"Task {self.task_id!r}: {err}") from err
        train_data, valid_data, data_sha256 = self._check_data()
        params_json = json.dumps(self._rendered_hyperparameters(), sort_keys=True)

        client = self.hook.client
        experiment_id = self._experiment_id(client)
        existing = self._find_runs(client, experiment_id, ids)
        for run in existing:
            stored = run.data.tags.get(tags.TRAINING_RESULT)
            if stored:
                self.log.info(
                    "MLflow run %s already holds the result of this task instance; not training again",
                    run.info.run_id,
                )
                if run.info.status not in _TERMINAL_STATUSES:
                    client.set_terminated(run.info.run_id, "FINISHED")
                self.mlflow_run_url = run_url(self.hook.tracking_uri, experiment_id, run.info.run_id)
                return json.loads(stored)

        if existing:
            run_id = existing[0].info.run_id
            self.log.info("Resuming MLflow run %s of an earlier try", run_id)
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, tags.AIRFLOW_TRY_NUMBER, str(ids["try_number"]))
        else:
            run_id = self._create_run(client, experiment_id, ids, train_data, valid_data, data_sha256)
        self.mlflow_run_url = run_url(self.hook.tracking_uri, experiment_id, run_id)
        self.log.info("MLflow run: %s", self.mlflow_run_url or run_id)

        instance_uri = self._instance_uri(ids)
        contract_env = {
            contract.TRACKING_URI: self.hook.tracking_uri,
            contract.EXPERIMENT_NAME: self.experiment_name,
            contract.RUN_ID: run_id,
            contract.TRAIN_DATA: train_data,
            contract.VALID_DATA: valid_data or "",
            contract.OUTPUT_URI: join(instance_uri, "output"),
            contract.CHECKPOINT_URI: join(instance_uri, "checkpoints"),
            contract.PARAMS: params_json,
        }
        return self.training_spec(
            ids=ids,
            mlflow_run_id=run_id,
            experiment_id=experiment_id,
            instance_uri=instance_uri,
            contract_env={key: value for key, value in contract_env.items() if value != ""},
        )

    def training_spec(
        self,
        *,
        ids: dict[str, Any],
        mlflow_run_id: str,
        experiment_id: str,
        instance_uri: str,
        contract_env: dict[str, str],
    ) -> TrainingSpec:
        """
        What the runtime is asked to run, once the MLflow run exists (no I/O but the connections' settings).

        :param ids: ``dag_id``, ``run_id``, ``task_id``, ``map_index``, ``try_number`` of the task instance.
        :param mlflow_run_id: The MLflow run the trainer logs to.
        :param experiment_id: Its experiment.
        :param instance_uri: The task instance's output root (``<output_root>/<dag_id>/<run_id>/<task_id>``).
        :param contract_env: The contract's variables (all but ``MLOPS_RESULT_PATH``).
        """
        connection_env, secret_names = self.remote_env(contract_env)
        execution_timeout = self.execution_timeout.total_seconds() if self.execution_timeout else None
        from airflow_mlops.training.spec import TrainingSpec

        return TrainingSpec(
            entrypoint=self.entrypoint if isinstance(self.entrypoint, str) else tuple(self.entrypoint),
            dag_id=ids["dag_id"],
            dag_run_id=ids["run_id"],
            task_id=ids["task_id"],
            map_index=ids["map_index"],
            try_number=ids["try_number"],
            mlflow_run_id=mlflow_run_id,
            experiment_id=experiment_id,
            experiment_name=self.experiment_name,
            instance_uri=instance_uri,
            contract_env=contract_env,
            env={str(key): str(value) for key, value in (self.env or {}).items()},
            connection_env=connection_env,
            secret_names=tuple(secret_names),
            timeout=self.timeout,
            execution_timeout=execution_timeout,
            process_env=self.build_env(contract_env),
        )

    def _after_start_error(self, err: Exception, spec: TrainingSpec) -> None:
        """Mark the run FAILED unless *err* is a deferral (the trainer is still running)."""
        from airflow_mlops.version_compat import TaskDeferred

        if not isinstance(err, TaskDeferred):
            self._mark_failed(self.hook.client, spec.mlflow_run_id)

    def _finish(self, spec: TrainingSpec, raw: dict[str, Any] | str | None) -> dict[str, Any]:
        """Validate the trainer's result, store it on the MLflow run, finish the run, return it."""
        client = self.hook.client
        run_id = spec.mlflow_run_id
        try:
            result = self._check_result(raw, run_id)
            self._check_signature(result, spec)
        except Exception:
            self._mark_failed(client, run_id)
            raise
        client.set_tag(run_id, tags.TRAINING_RESULT, tag_value(result))
        if client.get_run(run_id).info.status not in _TERMINAL_STATUSES:
            client.set_terminated(run_id, "FINISHED")
        self.log.info("Training finished: model %s, metrics %s", result["model_uri"], result["metrics"])
        return result

    def _airflow_ids(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.utils.context import airflow_ids

        ids = airflow_ids(context)
        map_index = ids.get("map_index")
        return {
            "dag_id": ids.get("dag_id") or self.dag_id,
            "run_id": ids.get("run_id") or "manual",
            "task_id": self.task_id,
            "map_index": -1 if map_index is None else int(map_index),
            "try_number": ids.get("try_number") or 1,
        }

    def _rendered_hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters as a dict; a template may render to a JSON object or a Python dict literal."""
        value = self.hyperparameters
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError) as err:
                    raise ConfigurationError(
                        f"hyperparameters of task {self.task_id!r} rendered to {value!r}, which is neither a "
                        "JSON object nor a dict literal"
                    ) from err
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"hyperparameters of task {self.task_id!r} must be a dict, got {type(value).__name__}: {value!r}"
            )
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise ConfigurationError(
                f"hyperparameters of task {self.task_id!r} are not JSON-serialisable: {err}"
            ) from err
        return value

    def _check_data(self) -> tuple[str, str | None, str | None]:
        """
        Check the rendered data URIs name existing snapshots (and splits) before anything starts.

        :return: The training and validation data URIs, and the training snapshot's SHA-256 (None when the
            worker cannot read its manifest).
        """
        from airflow_mlops.data.snapshots import load_manifest, parse_snapshot_uri

        sha256 = None
        uris = {"train_data": self.train_data, "valid_data": self.valid_data}
        for field, uri in uris.items():
            if uri is None or (field == "valid_data" and uri == ""):
                continue
            if not isinstance(uri, str) or not uri.strip():
                raise DatasetError(
                    f"{field} of task {self.task_id!r} rendered to {uri!r}, not a snapshot URI"
                )
            if not self._storage_hook.reaches(uri):
                continue  # only the trainer's own credentials can read it; the trainer reports a missing one
            base, split = parse_snapshot_uri(uri)
            storage = self._storage_hook.storage_for(uri)
            try:
                manifest = load_manifest(base, storage=storage)
            except FileNotFoundError as err:
                raise DatasetError(
                    f"{field} {uri!r}: {err}; run the ingest task first", dataset=uri, uri=uri
                ) from err
            files = manifest.get("files") or {}
            if field == "train_data" and isinstance(manifest.get("sha256"), str):
                sha256 = manifest["sha256"]
            if split and split not in files:
                raise DatasetError(
                    f"{field} {uri!r}: snapshot has no split {split!r}; it has {sorted(files)}",
                    dataset=uri,
                    uri=uri,
                )
        return self.train_data.strip(), (self.valid_data or "").strip() or None, sha256

    def _experiment_id(self, client: MlflowClient) -> str:
        from airflow_mlops.registry import get_or_create_experiment

        return get_or_create_experiment(client, self.experiment_name)

    @staticmethod
    def _identity_tags(ids: dict[str, Any]) -> dict[str, str]:
        return {
            tags.AIRFLOW_DAG_ID: ids["dag_id"],
            tags.AIRFLOW_RUN_ID: ids["run_id"],
            tags.AIRFLOW_TASK_ID: ids["task_id"],
            tags.AIRFLOW_MAP_INDEX: str(ids["map_index"]),
        }

    def _find_runs(self, client: MlflowClient, experiment_id: str, ids: dict[str, Any]) -> list[Run]:
        """The MLflow runs of this task instance (any try), newest first."""
        from mlflow.entities import ViewType

        filter_string = " and ".join(
            f"tags.`{key}` = {_quote(value)}" for key, value in self._identity_tags(ids).items()
        )
        return list(
            client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                order_by=["attributes.start_time DESC"],
                max_results=50,
            )
        )

    def _create_run(
        self,
        client: MlflowClient,
        experiment_id: str,
        ids: dict[str, Any],
        train_data: str,
        valid_data: str | None,
        data_sha256: str | None = None,
    ) -> str:
        run_tags = {
            **self._identity_tags(ids),
            tags.AIRFLOW_TRY_NUMBER: str(ids["try_number"]),
            tags.DATA_URI: train_data,
        }
        if valid_data:
            run_tags[tags.DATA_VALID_URI] = valid_data
        if data_sha256:
            run_tags[tags.DATA_SHA256] = data_sha256
        name = f"{ids['dag_id']}.{ids['task_id']}" + (f".{ids['map_index']}" if ids["map_index"] >= 0 else "")
        run = client.create_run(experiment_id, run_name=name, tags=run_tags)
        self.log.info("Created MLflow run %s in experiment %r", run.info.run_id, self.experiment_name)
        return run.info.run_id

    def _instance_uri(self, ids: dict[str, Any]) -> str:
        """``<output_root>/<dag_id>/<run_id>/<task_id>[/<map_index>]``: the same for every try."""
        from airflow_mlops.data.snapshots import resolve_data_root

        root = self.output_root or join(resolve_data_root(), "runs")
        if is_local(root):
            root = str(Path(root).expanduser().resolve())
        parts = [ids["dag_id"], ids["run_id"], ids["task_id"]]
        if ids["map_index"] >= 0:
            parts.append(str(ids["map_index"]))
        return join(root, *(part.replace("/", "_") for part in parts))

    def _aws_env(self) -> dict[str, str]:
        """The standard ``AWS_*`` variables for the ``aws_conn_id`` connection (empty without one)."""
        if self._storage_hook.connection_id is None:
            return {}
        # The connection is read exactly as the storage hook reads it for the worker's own S3 access.
        settings = self._storage_hook._settings
        if settings["aws_access_key_id"]:
            env = {
                "AWS_ACCESS_KEY_ID": settings["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": settings["aws_secret_access_key"] or "",
            }
            if settings["aws_session_token"]:
                env["AWS_SESSION_TOKEN"] = settings["aws_session_token"]
        else:
            # No keys in the connection: the worker's own (ambient) AWS identity, as boto3 would use it.
            env = {key: value for key, value in os.environ.items() if key.startswith("AWS_")}
        if settings["profile_name"]:
            env["AWS_PROFILE"] = settings["profile_name"]
        if settings["region_name"]:
            env["AWS_DEFAULT_REGION"] = env["AWS_REGION"] = settings["region_name"]
        if settings["endpoint_url"]:
            env["AWS_ENDPOINT_URL_S3"] = settings["endpoint_url"]
        if isinstance(settings["verify"], str) and settings["verify"].lower() not in ("true", "false"):
            env["AWS_CA_BUNDLE"] = settings["verify"]
        return env

    def _store_env(self, contract_env: Mapping[str, str]) -> dict[str, str]:
        """The GCS and Azure credentials of the contract's data and output URIs (:func:`store_environment`)."""
        from airflow_mlops.hooks.storage import store_environment
        from airflow_mlops.trainer import contract

        names = (contract.TRAIN_DATA, contract.VALID_DATA, contract.OUTPUT_URI, contract.CHECKPOINT_URI)
        return store_environment(contract_env[name] for name in names if contract_env.get(name))

    def build_env(self, contract_env: dict[str, str]) -> dict[str, str]:
        """
        The trainer's whole environment: base, AWS and object-store variables, *env*, MLflow's, the contract.

        Later groups win; an empty optional contract variable is left out.
        """
        from airflow_mlops.utils.environment import base_environment

        env = base_environment()
        env.setdefault("PATH", os.defpath)
        env["PYTHONUNBUFFERED"] = "1"  # so the trainer's output reaches the task log as it is printed
        env.update(self._aws_env())
        env.update(self._store_env(contract_env))
        env.update({str(key): str(value) for key, value in (self.env or {}).items()})
        env.update(self.hook.child_env())
        env.update({key: value for key, value in contract_env.items() if value != ""})
        return env

    def remote_env(self, contract_env: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
        """
        What a trainer outside the worker (a pod) may get from the MLflow, AWS and object-store connections.

        :param contract_env: The contract's variables, whose GCS and Azure URIs name the stores' connections.
        :return: ``(env, secret_names)``: the non-secret settings (MLflow registry URI and TLS setting, AWS
            region and endpoint URL, GCS project) as plain variables, and the names of the credential variables
            the connections hold, which such a trainer must get another way (Kubernetes Secrets, a service
            account); their values are never returned.
        """
        env: dict[str, str] = {}
        secret_names: list[str] = []
        for key, value in self.hook.child_env().items():
            if key in _MLFLOW_SECRET_VARS:
                secret_names.append(key)
            else:
                env[key] = value
        if self._storage_hook.connection_id is not None:
            settings = self._storage_hook._settings
            if settings["aws_access_key_id"]:
                secret_names += ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
                if settings["aws_session_token"]:
                    secret_names.append("AWS_SESSION_TOKEN")
            if settings["region_name"]:
                env["AWS_DEFAULT_REGION"] = env["AWS_REGION"] = settings["region_name"]
            if settings["endpoint_url"]:
                env["AWS_ENDPOINT_URL_S3"] = settings["endpoint_url"]
        from airflow_mlops.hooks.storage import STORE_SECRET_VARIABLES

        for key, value in self._store_env(contract_env or {}).items():
            if key in STORE_SECRET_VARIABLES:
                secret_names.append(key)
            else:
                env[key] = value
        return env, secret_names

    def _check_result(self, raw: dict[str, Any] | str | None, run_id: str) -> dict[str, Any]:
        """The trainer's result (what it wrote to ``MLOPS_RESULT_PATH``, as the runtime returned it), checked."""
        from airflow_mlops.trainer.contract import RESULT_PATH

        where = self.trainer_description
        if raw is None:
            raise self._result_error(
                f"The {where} exited successfully but wrote no result to {RESULT_PATH}; it must "
                'write a JSON object {"run_id", "model_uri", "metrics"} there '
                "(TrainingContext.write_result)"
            )
        if isinstance(raw, str):
            try:
                result = json.loads(raw)
            except json.JSONDecodeError as err:
                raise self._result_error(f"The result of the {where} is not valid JSON: {err}") from err
        else:
            result = raw
        if not isinstance(result, dict):
            raise self._result_error(
                f"The result of the {where} must be a JSON object, got {type(result).__name__}"
            )
        if not isinstance(result.get("model_uri"), str) or not result["model_uri"]:
            raise self._result_error(f"The result of the {where} has no 'model_uri' (keys: {sorted(result)})")
        if not isinstance(result.get("metrics"), dict):
            raise self._result_error(
                f"The result of the {where} has no 'metrics' object (keys: {sorted(result)})"
            )
        result.setdefault("run_id", run_id)
        if result["run_id"] != run_id:
            self.log.warning(
                "The trainer reports MLflow run %s, not the run %s it was given", result["run_id"], run_id
            )
        size = len(json.dumps(result, sort_keys=True))
        if size > MAX_RESULT_CHARS:
            raise self._result_error(
                f"The result of the {where} is {size} characters; it becomes XCom and an MLflow tag, so keep "
                f"it under {MAX_RESULT_CHARS} (ids, URIs and final metrics; log the rest to MLflow)"
            )
        return result

    def _check_signature(self, result: dict[str, Any], spec: TrainingSpec) -> None:
        """
        Refuse a model whose signature lacks a column of the training data the trainer did not say it dropped.

        Left out on purpose: the columns of the result's ``dropped_features``, and those not in the
        ``features`` hyper-parameter when it lists them. The label is not a feature: the result's ``target``,
        else the ``target`` hyper-parameter, else the one column missing from the signature. Nothing is
        checked when the model has no signature with named columns, or its signature or the training data's
        schema cannot be read here.
        """
        from airflow_mlops.data.snapshots import load_manifest, parse_snapshot_uri
        from airflow_mlops.trainer.contract import DROPPED_FEATURES, TARGET, TRAIN_DATA
        from airflow_mlops.trainer.models import input_columns

        dropped = result.get(DROPPED_FEATURES) or {}
        if not isinstance(dropped, dict) or not all(isinstance(key, str) for key in dropped):
            raise self._result_error(
                f"The result of the {self.trainer_description} has a {DROPPED_FEATURES!r} that is not an "
                'object of column names and reasons ({"column": "why it was left out"})'
            )
        if dropped:
            self.log.warning(
                "The trainer left out feature(s) of the training data on purpose: %s",
                "; ".join(f"{column}: {why}" for column, why in dropped.items()),
            )
        train_data = spec.contract_env.get(TRAIN_DATA, "")
        if not self._storage_hook.reaches(train_data):
            return
        try:
            base, _ = parse_snapshot_uri(train_data)
            storage = self._storage_hook.storage_for(base)
            schema = list(load_manifest(base, storage=storage).get("schema") or {})
            columns = input_columns(result["model_uri"])
        except Exception as err:
            self.log.info("Not checking the model's signature against the training data: %s", err)
            return
        if columns is None:
            return
        hyperparameters = self._rendered_hyperparameters()
        target = result.get(TARGET) or hyperparameters.get("target")
        targets = {target} if isinstance(target, str) else {str(t) for t in target or []}
        selected = hyperparameters.get("features")
        if isinstance(selected, list | tuple) and selected:
            # The DAG chose the features: the other columns are left out on purpose.
            chosen = {column: "not selected" for column in schema if column not in {*selected, *targets}}
            dropped = {**chosen, **dropped}
        missing = [column for column in schema if column not in columns and column not in dropped]
        missing = [column for column in missing if column not in targets]
        if not targets and len(missing) == 1:
            return  # the label
        if missing:
            raise TrainingResultError(
                f"The model {result['model_uri']} logged by the {self.trainer_description} does not take "
                f"column(s) {missing} of its training data {train_data} (its signature inputs: {columns}), and "
                f"the trainer did not say it left them out. A feature dropped without a word is often a column "
                f"read as text (numbers with thousands separators, timestamps): fix the data, or have the "
                f"trainer use the column or list it in its result's {DROPPED_FEATURES!r} with the reason"
                + ("" if targets else f" (and name the label in {TARGET!r})"),
                model=self.experiment_name, reason="features missing from the model signature",
            )  # fmt: skip

    def _result_error(self, message: str) -> TrainingResultError:
        return TrainingResultError(message, model=self.experiment_name, reason="invalid-result")

    def _mark_failed(self, client: MlflowClient, run_id: str) -> None:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:
            self.log.warning("Could not mark MLflow run %s FAILED", run_id, exc_info=True)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The snapshots trained on and the model logged to the tracking server, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import training_lineage
        from airflow_mlops.utils.results import kept_result

        data = (self.train_data, self.valid_data)
        return training_lineage(kept_result(self), self.hook.tracking_uri, data)


def _check_env(env: Any) -> None:
    """Check extra trainer variables: a dict that redefines no contract variable (ValueError otherwise)."""
    if env is None:
        return
    if not isinstance(env, dict):
        raise ValueError(f"env must be a dict of strings or None, got {type(env).__name__}")
    from airflow_mlops.trainer import contract  # the names only; no trainer code runs here

    clashes = sorted(set(env) & set(contract.CONTRACT_VARS))
    if clashes:
        raise ValueError(
            f"env may not set {', '.join(clashes)}: the operator sets the training contract itself "
            "(use train_data, valid_data, experiment_name, hyperparameters, output_root)"
        )
