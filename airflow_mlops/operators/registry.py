"""
Operators for the MLflow model registry: register a candidate version and promote it to ``champion``.

Registry conventions (MLflow 3 aliases, not stages): ``challenger`` is the candidate under evaluation and
approval, ``champion`` is what serves. Every version carries ``mlops.*`` lineage tags (:mod:`airflow_mlops.tags`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ConfigurationError, RegistryError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.base import ModelOperatorMixin, rendered_arguments
from airflow_mlops.registry import (
    TAG_VALUE_MAX,
    check_release_allowed,
    delete_alias_if_points_to,
    error_code,
    get_alias_version,
    get_model_version,
    parse_version,
    tag_value,
    validate_model_name,
)
from airflow_mlops.results import Promotion, RegisteredVersion, model_version, result_value
from airflow_mlops.signing import record_keys
from airflow_mlops.utils.clock import utc_now_iso
from airflow_mlops.utils.config import approval_required
from airflow_mlops.utils.context import airflow_lineage_tags
from airflow_mlops.utils.results import keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

_RUN_ID_PATTERN = r"[A-Za-z0-9_\-]+"  # compiled (and cached by re) when first used
_TAG_KEY_MAX = 250
#: What ``model_uri`` takes besides a URI: a training result.
_MODEL_URI_ACCEPTS = "a logged model's URI or a training result (a dict with 'model_uri')"
#: Tags of the training run the registration copies to the model version: its data, validation and code.
_COPIED_PREFIXES = ("mlops.data.", "mlops.validation.")


# --- operators -------------------------------------------------------------------------------------------


class RegisterModelOperator(ModelOperatorMixin, BaseOperator):
    """
    Register a trained model as a new version of a registered model and make it the ``challenger``.

    Creates the registered model if it does not exist. Safe to retry: if a version of the model already
    exists for the same MLflow training run (its ``run_id`` or its ``mlops.mlflow.run_id`` tag), that
    version is reused and no second version is created. Writes lineage tags (the ones given, the Airflow
    dag/run/task/try of this task and ``mlops.mlflow.run_id``), waits until the version is ``READY`` and
    points the ``challenger`` alias at it (unless it already is the champion).

    The training run's ``mlops.data.*``, ``mlops.validation.*`` and ``mlops.code.version`` tags are copied to
    the version (``mlops.data.uri``: the training snapshot, without its ``#split``), so the version says
    what data and code made it without the DAG passing them; ``tags`` given override them.

    Returns (XCom) a :class:`~airflow_mlops.results.RegisteredVersion`, ``{"model_name", "version",
    "model_uri", "source_uri", "run_id", "champion_version"}``, where ``model_uri`` is
    ``models:/<name>/<version>`` and ``champion_version`` is the version the ``champion`` alias points at now
    (None on the first registration). Operators that take a model version take it whole
    (``register.output``).

    :param model_name: Registered model name (templated); letters, digits, ``_``, ``-``, ``.``.
    :param model_uri: URI of the logged model (templated): ``models:/<model_id>``, ``runs:/<run>/<path>``
        or a storage URI; or the training's whole result (``train.output``: its ``model_uri`` and
        ``run_id``).
    :param run_id: MLflow run that trained the model (templated). Derived from ``model_uri`` when
        omitted (``runs:/`` URIs and MLflow 3 logged models know their run).
    :param tags: Extra lineage tags for the version (templated), e.g. ``mlops.validation.success``. A JSON
        string of a dict is accepted too.
    :param mlflow_conn_id: The MLflow connection to use.
    :param await_registration_for: Seconds to wait for the version to become ``READY``.
    """

    template_fields: Sequence[str] = ("model_name", "model_uri", "run_id", "tags", "mlflow_conn_id")
    template_fields_renderers = {"tags": "json"}
    ui_color = "#e3f2fd"

    def __init__(
        self,
        *,
        model_name: str,
        model_uri: str,
        run_id: str | None = None,
        tags: dict[str, Any] | str | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        await_registration_for: int = 300,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        # Literal arguments are checked now; templates and other tasks' results once rendered, in execute.
        if not is_templated(model_name):
            validate_model_name(model_name)
        if not is_templated(model_uri):
            _check_model_uri(result_value(model_uri, "model_uri", ("model_uri",), _MODEL_URI_ACCEPTS))
        if not is_templated(tags):
            _check_tags_type(tags)
        if isinstance(tags, Mapping):
            _check_tag_keys(tags)
        if await_registration_for <= 0:
            raise ValueError(
                f"await_registration_for must be a positive number of seconds, got {await_registration_for}"
            )
        self.model_name = model_name
        self.model_uri = model_uri
        self.run_id = run_id
        self.tags = tags
        self.mlflow_conn_id = mlflow_conn_id
        self.await_registration_for = await_registration_for

    @keep_result
    def execute(self, context: Context) -> RegisteredVersion:
        with rendered_arguments(model=str(self.model_name)):
            name = validate_model_name(self.model_name)
            user_tags = _parse_tags(self.tags)
            training = self.model_uri if isinstance(self.model_uri, Mapping) else {}
            model_uri = _check_model_uri(
                result_value(self.model_uri, "model_uri", ("model_uri",), _MODEL_URI_ACCEPTS)
            )
        client = self.hook.client

        given_run = self.run_id or training.get("run_id")
        run_id = (str(given_run).strip() if given_run else "") or self._derive_run_id(client, model_uri)
        if run_id and not re.fullmatch(_RUN_ID_PATTERN, run_id):
            raise ConfigurationError(
                f"run_id {run_id!r} for model {name!r} is not an MLflow run id", model=name, uri=model_uri
            )

        existing = self._find_existing_version(client, name, run_id, model_uri)
        if existing is not None:
            version = int(existing.version)
            self.log.info("Reusing version %s of model %s registered for run %s", version, name, run_id)
        else:
            version = self._register(name, model_uri, run_id)
            self.log.info("Registered %s as version %s of model %s", model_uri, version, name)

        self._wait_until_ready(client, name, version)
        self.link_model_version(name, version)

        lineage = {**self._training_run_tags(client, run_id), **user_tags, **airflow_lineage_tags(context)}
        if run_id:
            lineage[T.MLFLOW_RUN_ID] = run_id
        for key, value in lineage.items():
            client.set_model_version_tag(name, str(version), key, tag_value(value)[:TAG_VALUE_MAX])

        champion = get_alias_version(client, name, T.CHAMPION)
        if champion == version:
            self.log.info(
                "Version %s of model %s already is the champion; alias %s not moved",
                version,
                name,
                T.CHALLENGER,
            )
        else:
            client.set_registered_model_alias(name, T.CHALLENGER, str(version))
            self.log.info("Alias %s of model %s now points at version %s", T.CHALLENGER, name, version)

        return {
            "model_name": name,
            "version": version,
            "model_uri": f"models:/{name}/{version}",
            "source_uri": model_uri,
            "run_id": run_id or None,
            "champion_version": champion,
        }

    def _training_run_tags(self, client: MlflowClient, run_id: str) -> dict[str, str]:
        """The training run's data, validation and code tags, for the version (none without a run)."""
        if not run_id:
            return {}
        from mlflow.exceptions import MlflowException

        try:
            run_tags = client.get_run(run_id).data.tags
        except MlflowException as err:
            self.log.warning("Training run %s not readable (%s): no data tags copied", run_id, error_code(err))
            return {}
        copied = {
            key: value
            for key, value in run_tags.items()
            if key.startswith(_COPIED_PREFIXES) or key in (T.CODE_VERSION, T.CODE_IMAGE_DIGEST)
        }
        if copied.get(T.DATA_URI):
            copied[T.DATA_URI] = copied[T.DATA_URI].split("#", 1)[0]  # the snapshot, not its split
        if copied:
            self.log.info("Copied the training run's tags %s to the version", sorted(copied))
        return copied

    def _derive_run_id(self, client: MlflowClient, model_uri: str) -> str:
        if model_uri.startswith("runs:/"):
            return model_uri[len("runs:/") :].split("/", 1)[0]
        match = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", model_uri)
        if match:
            from mlflow.exceptions import MlflowException

            try:
                return client.get_logged_model(match.group(1)).source_run_id or ""
            except MlflowException as err:
                raise RegistryError(
                    f"Cannot register {model_uri} as model {self.model_name!r}: logged model "
                    f"{match.group(1)} not found on {self.hook.tracking_uri} ({error_code(err)})",
                    model=str(self.model_name),
                    uri=model_uri,
                ) from err
        return ""

    def _find_existing_version(
        self, client: MlflowClient, name: str, run_id: str, model_uri: str
    ) -> ModelVersion | None:
        if run_id:
            filters = [
                f"name = '{name}' and run_id = '{run_id}'",
                f"name = '{name}' and tags.`{T.MLFLOW_RUN_ID}` = '{run_id}'",
            ]
        elif "'" not in model_uri:
            filters = [f"name = '{name}' and source_path = '{model_uri}'"]
        else:
            return None
        found: dict[int, ModelVersion] = {}
        for filter_string in filters:
            for mv in client.search_model_versions(filter_string):
                if mv.status != "FAILED_REGISTRATION":
                    found[int(mv.version)] = mv
        return found[min(found)] if found else None

    def _register(self, name: str, model_uri: str, run_id: str) -> int:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            mv = mlflow.register_model(
                model_uri,
                name,
                await_registration_for=self.await_registration_for,
                tags={T.MLFLOW_RUN_ID: run_id} if run_id else None,
            )
        except MlflowException as err:
            raise RegistryError(
                f"Cannot register {model_uri} as a version of model {name!r} on {self.hook.registry_uri}: "
                f"{err.message} ({error_code(err)}). Check that the model URI exists.",
                model=name,
                uri=model_uri,
            ) from err
        return int(mv.version)

    def _wait_until_ready(self, client: MlflowClient, name: str, version: int) -> None:
        deadline = time.monotonic() + self.await_registration_for
        delay = 0.5
        while True:
            mv = get_model_version(client, name, version)
            if mv.status == "READY":
                return
            if mv.status == "FAILED_REGISTRATION":
                raise RegistryError(
                    f"Version {version} of model {name!r} failed to register: {mv.status_message}. "
                    "Delete it and register the model again.",
                    model=name,
                    version=str(version),
                    reason=mv.status_message,
                )
            if time.monotonic() >= deadline:
                raise RegistryError(
                    f"Version {version} of model {name!r} is still {mv.status} after "
                    f"{self.await_registration_for}s; raise await_registration_for or check the registry.",
                    model=name,
                    version=str(version),
                )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The logged model registered and the model version it became, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import registration_lineage
        from airflow_mlops.provenance import version_provenance
        from airflow_mlops.utils.results import kept_result

        result = kept_result(self)
        provenance = (
            version_provenance(self.hook.client, result["model_name"], result["version"]) if result else None
        )
        return registration_lineage(
            result, self.hook.tracking_uri, self.hook.registry_uri, provenance=provenance
        )


class PromoteModelOperator(ModelOperatorMixin, BaseOperator):
    """
    Make a model version the ``champion`` by moving the alias to it.

    Only a version that passed the evaluation gate and carries a recorded approval (decision, approver,
    time: what :class:`~airflow_mlops.operators.approval.ApproveModelOperator` writes) is promoted; any other
    fails the task with :class:`~airflow_mlops.exceptions.ApprovalRequiredError` (not retried) naming what
    is missing, whatever the DAG's wiring or the approval task's state (``[mlops] require_approval = False``
    turns the check off).
    Records the previous champion in the tag ``mlops.promotion.previous_champion`` and the time in
    ``mlops.promotion.time`` on the promoted version, and removes the ``challenger`` alias if it points at
    this version. Safe to retry: a version that already is the champion is left as it is and the same
    result is returned.

    Returns (XCom) ``{"model_name", "version", "previous_champion"}`` (``previous_champion`` is None when
    the model had no champion). A version that does not exist fails the task at once with
    :class:`~airflow_mlops.exceptions.ModelVersionNotFoundError` (not retried).

    :param model_name: Registered model name (templated).
    :param version: Model version to promote (templated), or a result naming one, e.g. ``register.output``.
    :param mlflow_conn_id: The MLflow connection to use.
    """

    template_fields: Sequence[str] = ("model_name", "version", "mlflow_conn_id")
    ui_color = "#c8e6c9"

    def __init__(
        self,
        *,
        model_name: str,
        version: int | str,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        if not is_templated(model_name):
            validate_model_name(model_name)
        if not is_templated(version):
            known_name = None if is_templated(model_name) else model_name
            parse_version(model_version(version, "version", known_name), str(model_name))
        self.model_name = model_name
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id

    @keep_result
    def execute(self, context: Context) -> Promotion:
        with rendered_arguments(model=str(self.model_name)):
            name = validate_model_name(self.model_name)
            version = parse_version(model_version(self.version, "version", name), name)
        client = self.hook.client

        mv = get_model_version(client, name, version)
        self.link_model_version(name, version)
        check_release_allowed(
            client, name, version, "promote", required=approval_required(), keys=record_keys()
        )
        if mv.status != "READY":
            raise RegistryError(
                f"Version {version} of model {name!r} is {mv.status}, not READY; it cannot be promoted.",
                model=name,
                version=str(version),
            )
        current = get_alias_version(client, name, T.CHAMPION)
        if current == version:
            previous_tag = (mv.tags or {}).get(T.PREVIOUS_CHAMPION) or None
            previous = int(previous_tag) if previous_tag and previous_tag.isdigit() else None
            self.log.info("Version %s of model %s already is the champion; nothing to move", version, name)
        else:
            previous = current
            # Tags first, alias last: a retry after a crash in between rewrites the same tags.
            client.set_model_version_tag(name, str(version), T.PREVIOUS_CHAMPION, tag_value(previous))
            client.set_model_version_tag(name, str(version), T.PROMOTED_AT, utc_now_iso())
            client.set_registered_model_alias(name, T.CHAMPION, str(version))
            self.log.info(
                "Alias %s of model %s moved from version %s to %s", T.CHAMPION, name, previous, version
            )
        if delete_alias_if_points_to(client, name, T.CHALLENGER, version):
            self.log.info("Removed alias %s from version %s of model %s", T.CHALLENGER, version, name)
        return {"model_name": name, "version": version, "previous_champion": previous}


def _check_model_uri(model_uri: Any) -> str:
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ValueError(
            "model_uri must be a non-empty string: the URI of the logged model "
            f"(models:/<model_id>, runs:/<run_id>/<path>), usually from the training result; got {model_uri!r}"
        )
    return model_uri.strip()


def _check_tags_type(tags: Any) -> None:
    if tags is not None and not isinstance(tags, Mapping | str):
        raise ValueError(
            f"tags must be a dict of tag name to value (or a JSON string of one), got {tags!r}"
        )


def _check_tag_keys(tags: Mapping[Any, Any]) -> None:
    for key in tags:
        if not isinstance(key, str) or not key.strip() or len(key) > _TAG_KEY_MAX:
            raise ValueError(
                f"tag names must be non-empty strings of at most {_TAG_KEY_MAX} characters, got {key!r}"
            )


def _parse_tags(tags: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if tags is None or tags == "":
        return {}
    _check_tags_type(tags)
    if isinstance(tags, str):
        try:
            parsed = json.loads(tags)
        except json.JSONDecodeError as err:
            raise ValueError(f"tags is a string but not JSON of a dict: {tags[:200]!r}") from err
        if not isinstance(parsed, Mapping):
            raise ValueError(f"tags must render to a dict of tag name to value, got {type(parsed).__name__}")
        tags = parsed
    _check_tag_keys(tags)
    return dict(tags)
