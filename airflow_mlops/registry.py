"""
The MLflow model registry as the package uses it: model names, versions, aliases, tag values.

Registry conventions (MLflow 3 aliases, not stages): ``challenger`` is the candidate under evaluation and
approval, ``champion`` is what serves. Every version carries ``mlops.*`` lineage tags (:mod:`airflow_mlops.tags`).
Plain functions of an ``MlflowClient``; no Airflow import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_mlops import signing
from airflow_mlops import tags as T
from airflow_mlops.exceptions import ApprovalRequiredError, ConfigurationError, ModelVersionNotFoundError
from airflow_mlops.utils.results import json_safe

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airflow_mlops.signing import SigningKeys

#: Model version tag values are VARCHAR(5000) in MLflow's SQL store: longer values are cut to this.
TAG_VALUE_MAX = 5000
#: A registered model name (``re.fullmatch``), as text: compiled when first used, not when a DAG file is parsed.
MODEL_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,255}"
MODEL_NAME_RULE = (
    "1-256 characters: letters, digits, '_', '-' and '.', starting with a letter, digit or '_' "
    "(no '/', ':', spaces or '..')"
)


def validate_model_name(name: Any, field: str = "model_name") -> str:
    """Return *name* if it is a valid registered model name, else raise ValueError saying what is allowed."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{field} must be a non-empty string ({MODEL_NAME_RULE}); got {name!r}")
    if not re.fullmatch(MODEL_NAME_PATTERN, name) or ".." in name:
        raise ValueError(f"{field} {name!r} is not a valid model name: use {MODEL_NAME_RULE}")
    return name


def parse_version(value: Any, model_name: str, field: str = "version") -> int:
    """Return a model version number from an int or a templated string such as ``"3"``."""
    if isinstance(value, bool):
        value = None
    try:
        version = int(str(value).strip()) if value is not None else None
    except ValueError:
        version = None
    if version is None or version < 1:
        raise ValueError(
            f"{field} for model {model_name!r} must be a positive integer model version, got {value!r}"
        )
    return version


def tag_value(value: Any) -> str:
    """
    Render a tag value as a string (MLflow tags are strings): strict JSON for dicts and lists.

    The value goes through :func:`~airflow_mlops.utils.results.json_safe` first: NaN and infinities become
    ``null`` (or an empty tag on their own), numpy values Python ones. Booleans become ``true``/``false``.
    """
    value = json_safe(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "" if value is None else str(value)


def error_code(err: BaseException) -> str | None:
    """The machine-readable MLflow error code of *err* (``RESOURCE_DOES_NOT_EXIST``...), if any."""
    return getattr(err, "error_code", None)


def get_model_version(client: MlflowClient, model_name: str, version: int) -> ModelVersion:
    """Return a model version, or raise :class:`ModelVersionNotFoundError` (not retryable) naming both."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as err:
        if error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            raise ModelVersionNotFoundError(
                f"Model {model_name!r} has no version {version}: register it first "
                "(RegisterModelOperator) or check the version number.",
                model=model_name,
                version=str(version),
            ) from err
        raise


def get_alias_version(client: MlflowClient, model_name: str, alias: str) -> int | None:
    """Version the alias points at, or None if the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(model_name).aliases or {}
    except MlflowException as err:
        if error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = aliases.get(alias)
    return int(version) if version is not None else None


def delete_alias_if_points_to(client: MlflowClient, model_name: str, alias: str, version: int) -> bool:
    """Remove *alias* if it points at *version*; return whether it did."""
    if get_alias_version(client, model_name, alias) != version:
        return False
    client.delete_registered_model_alias(model_name, alias)
    return True


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """
    The id of the MLflow experiment *name*, created if missing (safe when another task creates it too).

    Raises :class:`~airflow_mlops.exceptions.ConfigurationError` if the experiment is deleted.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as err:  # created concurrently by another task
            if error_code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise ConfigurationError(
            f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) or choose another "
            "experiment name"
        )
    return experiment.experiment_id


#: The tags of the gate decision and of the approval, by the record key each is signed under.
GATE_TAGS = {"decision": T.GATE_DECISION, "reason": T.GATE_REASON}
APPROVAL_TAGS = {
    "decision": T.APPROVAL_DECISION,
    "approver": T.APPROVAL_APPROVER,
    "time": T.APPROVAL_TIME,
    "comment": T.APPROVAL_COMMENT,
    "task": T.APPROVAL_TASK,
}
#: Record kind and signature tag of each group of tags.
_SIGNED_GROUPS = {
    T.GATE_SIGNATURE: (signing.GATE, GATE_TAGS),
    T.APPROVAL_SIGNATURE: (signing.APPROVAL, APPROVAL_TAGS),
}


def write_signed_tags(
    client: MlflowClient,
    model_name: str,
    version: int | str,
    signature_tag: str,
    values: Mapping[str, Any],
    keys: SigningKeys | None,
) -> None:
    """
    Write a signed group of version tags (the gate decision or the approval), the signature last.

    :param signature_tag: :data:`~airflow_mlops.tags.GATE_SIGNATURE` or
        :data:`~airflow_mlops.tags.APPROVAL_SIGNATURE`.
    :param values: The group's values by record key (``decision``, ``reason``...; see :data:`GATE_TAGS`,
        :data:`APPROVAL_TAGS`); missing ones are written empty.
    :param keys: The signing keys; None writes the tags unsigned (``[mlops] require_approval = False``
        without a key).

    The old signature is removed first, so a try killed half-way leaves a group that counts as absent, never
    a mix of old and new values that passes.
    """
    kind, tags = _SIGNED_GROUPS[signature_tag]
    record = {key: tag_value(values.get(key))[:TAG_VALUE_MAX] for key in tags}
    mv = client.get_model_version(model_name, str(version))
    if signature_tag in (mv.tags or {}):
        client.delete_model_version_tag(model_name, str(version), signature_tag)
    for key, tag in tags.items():
        client.set_model_version_tag(model_name, str(version), tag, record[key])
    if keys is not None:
        signature = keys.sign(kind, signing.Subject.of(mv), record)
        client.set_model_version_tag(model_name, str(version), signature_tag, signature)


def signed_tags_problem(mv: ModelVersion, signature_tag: str, keys: SigningKeys | None) -> str | None:
    """What is wrong with the signature of a group of tags on *mv*, or None if the package signed them."""
    if keys is None:
        return None
    kind, tags = _SIGNED_GROUPS[signature_tag]
    values = mv.tags or {}
    record = {key: values.get(tag, "") for key, tag in tags.items()}
    return keys.problem(kind, signing.Subject.of(mv), record, values.get(signature_tag))


def release_blockers(mv: ModelVersion, keys: SigningKeys | None = None) -> list[str]:
    """
    What keeps a model version from becoming ``champion`` or serving: a passed gate, a recorded approval.

    Empty when the version has ``mlops.gate.decision`` = ``passed`` and ``mlops.approval.decision`` =
    ``approved`` with an approver and a time, each signed by the package (with *keys*; None: unchecked);
    otherwise one line per missing item. A group whose signature is missing or wrong counts as absent.
    """
    tags = mv.tags or {}
    missing = []
    gate = tags.get(T.GATE_DECISION)
    if gate != "passed":
        found = f"is {gate!r}" if gate else "is missing"
        missing.append(
            f"no passed evaluation gate ({T.GATE_DECISION} {found}; EvaluateModelOperator writes it)"
        )
    elif problem := signed_tags_problem(mv, T.GATE_SIGNATURE, keys):
        missing.append(
            f"no trusted evaluation gate ({T.GATE_DECISION} is 'passed', but {T.GATE_SIGNATURE} {problem})"
        )
    decision = tags.get(T.APPROVAL_DECISION)
    if decision != "approved" or not tags.get(T.APPROVAL_APPROVER) or not tags.get(T.APPROVAL_TIME):
        found = f"is {decision!r}" if decision else "is missing"
        if decision == "approved":
            found = f"has no {T.APPROVAL_APPROVER} or {T.APPROVAL_TIME}"
        missing.append(
            f"no recorded approval ({T.APPROVAL_DECISION} {found}; ApproveModelOperator records who approved and when)"
        )
    elif problem := signed_tags_problem(mv, T.APPROVAL_SIGNATURE, keys):
        missing.append(
            f"no trusted approval ({T.APPROVAL_DECISION} is 'approved' by {tags.get(T.APPROVAL_APPROVER)!r}, but "
            f"{T.APPROVAL_SIGNATURE} {problem}; only an approval given in Airflow and recorded by "
            "ApproveModelOperator counts)"
        )
    return missing


def check_release_allowed(
    client: MlflowClient,
    model_name: str,
    version: int | str,
    action: str,
    required: bool = True,
    keys: SigningKeys | None = None,
) -> ModelVersion:
    """
    The model version, after checking it may become ``champion`` or serve (:func:`release_blockers`).

    :param action: What is refused, for the message (``promote``, ``deploy``, ``roll back to``).
    :param required: ``[mlops] require_approval``; False checks only that the version exists.
    :param keys: The signing keys the gate and approval must be signed with (None: signatures unchecked).
    :raises ApprovalRequiredError: naming what is missing or untrusted (not retryable).
    """
    mv = get_model_version(client, model_name, int(version))
    missing = release_blockers(mv, keys) if required else []
    if missing:
        raise ApprovalRequiredError(
            f"Refusing to {action} version {version} of model {model_name!r}: it has "
            + " and ".join(missing)
            + ". Only a version that passed the gate and was approved may become champion or serve "
            "([mlops] require_approval = False turns this off where no person approves releases).",
            model=model_name,
            version=str(version),
            reason="; ".join(missing),
        )
    return mv
