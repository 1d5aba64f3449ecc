"""
The training environment contract: what a trainer process sees, in the ``local`` runtime and in a pod.

A trainer reads everything it needs from environment variables (names below), trains, logs to the MLflow run
that already exists (``MLFLOW_RUN_ID``), and writes its result as a JSON object to ``MLOPS_RESULT_PATH``:
``{"run_id": ..., "model_uri": ..., "metrics": {...}}``, optionally with ``"target"`` (the label column) and
``"dropped_features"`` (``{column: reason}``: columns of the training data the model does not take, on
purpose). The training operator refuses a model whose signature lacks a column of the training data that is
neither the label nor listed there (:func:`dropped_features` builds the list). :class:`TrainingContext` wraps
all of it::

    from airflow_mlops.trainer.contract import TrainingContext

    ctx = TrainingContext.from_env()
    state = ctx.load_checkpoint()  # None on the first try, the last saved bytes on a retry
    ...
    ctx.save_checkpoint(b"...")
    ctx.write_result({"run_id": ctx.run_id, "model_uri": model_uri, "metrics": metrics})

This module imports neither Airflow nor any heavy library.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.storage import Storage, is_local, join, split_conn

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Tracking URI of the MLflow server the run lives on.
TRACKING_URI = "MLFLOW_TRACKING_URI"
#: Name of the MLflow experiment holding the run.
EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
#: Id of the MLflow run, created before the trainer starts; the trainer attaches to it.
RUN_ID = "MLFLOW_RUN_ID"
#: Snapshot URI of the training data; ``<snapshot-uri>#train`` selects a split.
TRAIN_DATA = "MLOPS_TRAIN_DATA"
#: Snapshot URI of the validation data (optional); ``<snapshot-uri>#valid`` selects a split.
VALID_DATA = "MLOPS_VALID_DATA"
#: Local directory or ``s3://`` prefix for the trainer's own outputs.
OUTPUT_URI = "MLOPS_OUTPUT_URI"
#: Local directory or ``s3://`` prefix for checkpoints; the same for every try of a task in one DAG run.
CHECKPOINT_URI = "MLOPS_CHECKPOINT_URI"
#: Hyper-parameters as a JSON object.
PARAMS = "MLOPS_PARAMS"
#: Local file the trainer writes its JSON result to (``/airflow/xcom/return.json`` in Kubernetes).
RESULT_PATH = "MLOPS_RESULT_PATH"

#: Variables every runtime sets.
REQUIRED_VARS: tuple[str, ...] = (
    TRACKING_URI,
    EXPERIMENT_NAME,
    RUN_ID,
    TRAIN_DATA,
    OUTPUT_URI,
    CHECKPOINT_URI,
    PARAMS,
    RESULT_PATH,
)
#: Variables a runtime sets only when there is a value for them.
OPTIONAL_VARS: tuple[str, ...] = (VALID_DATA,)
#: Every variable of the contract.
CONTRACT_VARS: tuple[str, ...] = REQUIRED_VARS + OPTIONAL_VARS

#: Result key: the label column(s) of the training data (not a feature: never in the model's signature).
TARGET = "target"
#: Result key: ``{column: reason}`` for each column of the training data the model does not take on purpose.
DROPPED_FEATURES = "dropped_features"

#: Name :meth:`TrainingContext.save_checkpoint` and :meth:`TrainingContext.load_checkpoint` use by default.
DEFAULT_CHECKPOINT = "checkpoint"


def dropped_features(frame: Any, features: Sequence[str], target: str | Sequence[str]) -> dict[str, str]:
    """
    ``{column: reason}`` for each column of *frame* (a DataFrame) that is neither a feature nor the target.

    The reason is the column's type when it is not numeric (``"not numeric (str)"``: often numbers written
    with thousands separators, or timestamps), else ``"not selected"``. Put it in the result under
    :data:`DROPPED_FEATURES`.
    """
    targets = {target} if isinstance(target, str) else set(target)
    kept = set(features) | targets
    out = {}
    for column, dtype in frame.dtypes.items():
        if column in kept:
            continue
        numeric = getattr(dtype, "kind", None) in ("i", "u", "f")
        out[str(column)] = "not selected" if numeric else f"not numeric ({dtype})"
    return out


class ContractError(RuntimeError):
    """The process does not see a complete, well-formed training environment."""


@dataclass(frozen=True)
class TrainingContext:
    """
    Everything the training contract gives a trainer, plus helpers to use it.

    Build it with :meth:`from_env`. Checkpoints and outputs go through
    :class:`airflow_mlops.data.storage.Storage`, so local directories and ``s3://`` prefixes both work
    (S3 credentials come from the standard AWS environment the runtime injects).

    :param tracking_uri: MLflow tracking URI.
    :param experiment_name: MLflow experiment name.
    :param run_id: Id of the MLflow run to log to.
    :param train_data: Snapshot URI of the training data (may end in ``#<split>``).
    :param valid_data: Snapshot URI of the validation data, or None.
    :param output_uri: Directory or ``s3://`` prefix for outputs.
    :param checkpoint_uri: Directory or ``s3://`` prefix for checkpoints, stable across retries.
    :param params_json: Hyper-parameters as a JSON object string.
    :param result_path: Local path of the JSON result file.
    :param storage: Storage used for checkpoints; a default one (AWS environment) if None.
    """

    tracking_uri: str
    experiment_name: str
    run_id: str
    train_data: str
    valid_data: str | None
    output_uri: str
    checkpoint_uri: str
    params_json: str
    result_path: str
    storage: Storage = field(default_factory=Storage, repr=False, compare=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, storage: Storage | None = None
    ) -> TrainingContext:
        """
        Read the contract from the environment (or *environ*).

        :raises ContractError: naming every missing variable, or if ``MLOPS_PARAMS`` is not a JSON object.
        """
        env = os.environ if environ is None else environ
        missing = [name for name in REQUIRED_VARS if not env.get(name)]
        if missing:
            raise ContractError(
                f"Training environment is incomplete: {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set. A trainer is meant to be started by a "
                "training runtime (TrainModelOperator), which sets every variable of the contract: "
                f"{', '.join(CONTRACT_VARS)}."
            )
        ctx = cls(
            tracking_uri=env[TRACKING_URI],
            experiment_name=env[EXPERIMENT_NAME],
            run_id=env[RUN_ID],
            # A trainer reads its stores with its own environment's credentials (the runtime passes a
            # connection's as the store library's variables), not through an Airflow connection the URI names.
            train_data=split_conn(env[TRAIN_DATA])[1],
            valid_data=split_conn(env[VALID_DATA])[1] if env.get(VALID_DATA) else None,
            output_uri=split_conn(env[OUTPUT_URI])[1],
            checkpoint_uri=split_conn(env[CHECKPOINT_URI])[1],
            params_json=env[PARAMS],
            result_path=env[RESULT_PATH],
            storage=storage or Storage(),
        )
        ctx.params  # noqa: B018 - fail now, naming the variable, rather than deep inside the trainer
        return ctx

    @property
    def params(self) -> dict[str, Any]:
        """Hyper-parameters (``MLOPS_PARAMS`` parsed); a new dict on every access."""
        try:
            value = json.loads(self.params_json)
        except json.JSONDecodeError as err:
            raise ContractError(f"{PARAMS} is not valid JSON: {err}") from err
        if not isinstance(value, dict):
            raise ContractError(f"{PARAMS} must be a JSON object, got {type(value).__name__}")
        return value

    def write_result(self, result: Mapping[str, Any]) -> Path:
        """
        Write *result* as JSON to ``MLOPS_RESULT_PATH``, atomically (a reader never sees half a file).

        The contract's result is ``{"run_id", "model_uri", "metrics"}``, plus :data:`TARGET` and
        :data:`DROPPED_FEATURES` when the model leaves columns of the training data out; keep it small (it
        becomes XCom).
        Where the result path is a file the platform mounted (a Kubernetes termination-message file, which
        cannot be replaced), it is written in place instead.
        """
        payload = json.dumps(dict(result), sort_keys=True)
        path = Path(self.result_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        except PermissionError:
            fd, tmp = -1, ""  # a directory the platform created for the mounted file: write in place
        if fd < 0:
            path.write_text(payload, encoding="utf-8")
            return path
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.is_file():
                    raise
                path.write_text(payload, encoding="utf-8")  # mounted file (EBUSY): rename cannot replace it
                Path(tmp).unlink(missing_ok=True)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def checkpoint_path(self, name: str = DEFAULT_CHECKPOINT) -> str:
        """URI of the checkpoint *name* under ``MLOPS_CHECKPOINT_URI``."""
        if not name or name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"Checkpoint name {name!r} must be a relative path inside the checkpoint URI")
        return join(self.checkpoint_uri, name)

    def save_checkpoint(self, data: bytes | str | os.PathLike[str], name: str = DEFAULT_CHECKPOINT) -> str:
        """
        Save a checkpoint under ``MLOPS_CHECKPOINT_URI`` and return its URI.

        Each file is replaced atomically, so a crash mid-save leaves the previous checkpoint readable.

        :param data: The checkpoint as bytes, or the path of a local file (or directory, copied file by file).
        :param name: Name of the checkpoint (a relative path).
        """
        target = self.checkpoint_path(name)
        if isinstance(data, bytes | bytearray | memoryview):
            self.storage.write_bytes(target, bytes(data))
            return target
        source = Path(data)
        if source.is_dir():
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                self.storage.upload_file(file, join(target, file.relative_to(source).as_posix()))
        elif source.is_file():
            self.storage.upload_file(source, target)
        else:
            raise FileNotFoundError(f"Cannot save checkpoint {name!r}: {source} does not exist")
        return target

    def has_checkpoint(self, name: str = DEFAULT_CHECKPOINT) -> bool:
        """Whether a checkpoint file *name* exists (from this try or an earlier one)."""
        return self.storage.exists(self.checkpoint_path(name))

    def load_checkpoint(self, name: str = DEFAULT_CHECKPOINT) -> bytes | None:
        """Return the bytes of checkpoint *name*, or None if no try has saved it yet."""
        target = self.checkpoint_path(name)
        if not self.storage.exists(target):
            return None
        return self.storage.read_bytes(target)

    def download_checkpoint(self, name: str, dest: str | os.PathLike[str]) -> Path | None:
        """
        Copy checkpoint *name* (a file or a directory saved by :meth:`save_checkpoint`) to local *dest*.

        :return: *dest*, or None if no such checkpoint exists.
        """
        target = self.checkpoint_path(name)
        dest = Path(dest)
        if self.storage.exists(target) and (not is_local(target) or Path(target).is_file()):
            return self.storage.download_file(target, dest)
        files = self.storage.list_uris(target.rstrip("/") + "/")
        if not files:
            return None
        prefix = target.rstrip("/") + "/"
        for uri in files:
            self.storage.download_file(uri, dest / uri[len(prefix) :])
        return dest
