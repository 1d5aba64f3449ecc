"""
The deploy-target interface: one small abstract class for every place a model version can be served.

A target is a plain, JSON-describable object: :meth:`DeployTarget.to_config` returns ``{"kind": ..., **settings}``
and :func:`target_from_config` builds the target back, so a target travels through XCom, DAG params and
triggers. Targets hold connection *ids*, never secrets.

Built-in kinds: ``"local"`` (:class:`~airflow_mlops.serving.local.LocalServerTarget`) and ``"kserve"``
(:class:`~airflow_mlops.serving.kserve.KServeTarget`). A user target is a subclass of :class:`DeployTarget`
given a short kind name in code: :func:`register_target_kind` (in the DAG file or a plugin) or the
``airflow_mlops.deploy_targets`` entry-point group of an installed package. A config never names a class by its
dotted path: configs arrive as data (DAG params, XCom, registry tags), and importing whatever they name would
run any code on the worker. See docs/operations.md.

This module imports no heavy library.
"""

from __future__ import annotations

import abc
import importlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_mlops.exceptions import DeploymentError

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger
    from mlflow import MlflowClient

    from airflow_mlops.serving.status import Deployment, Health

# Defaults of the checks every target gets (serving.verification), here so that DAG files can name them
# without importing the checks.
#: Rows sent by default: one request per row plus one batch request with all of them (infra validation).
DEFAULT_SAMPLE_ROWS = 20
#: Rows of the post-deploy smoke test.
DEFAULT_SMOKE_ROWS = 5
#: Characters of an error kept in messages and registry tags.
ERROR_MAX = 3000

#: Entry-point group through which installed packages add target kinds (name = kind, value = class path).
ENTRY_POINT_GROUP = "airflow_mlops.deploy_targets"

_BUILTIN_KINDS: dict[str, str] = {
    "local": "airflow_mlops.serving.local.LocalServerTarget",
    "kserve": "airflow_mlops.serving.kserve.KServeTarget",
}
_REGISTERED_KINDS: dict[str, str | type[DeployTarget]] = {}
# Compiled (and cached by re) when first used, not when a DAG file is parsed.
_DOTTED_PATH = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+"
_KIND_NAME = r"[A-Za-z_][\w-]*"


class PredictionError(DeploymentError):
    """A prediction request failed; carries the HTTP status (None when no answer came) and the body."""

    def __init__(self, message: str, status_code: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code  # type: ignore[assignment]  # AirflowException types it HTTPStatus
        self.body = body


def post_invocations(
    endpoint: str,
    records: Sequence[Mapping[str, Any]],
    *,
    timeout: float = 30.0,
    path: str = "/invocations",
    headers: Mapping[str, str] | None = None,
) -> list[Any]:
    """
    Send *records* to an MLflow scoring server (``POST <endpoint>/invocations {"dataframe_records": ...}``).

    The MLflow scoring protocol is spoken by ``mlflow models serve`` and by MLServer's MLflow runtime (KServe).
    The request carries ``X-MLOps-Traffic: synthetic`` (unless *headers* name another kind), so that capture
    stores the package's own smoke tests and probes apart from production traffic.

    :return: The ``predictions`` list.
    :raises PredictionError: on a connection error, a non-200 answer (with the server's error body), or an
        answer without predictions.
    """
    import requests

    from airflow_mlops.serving.capture import TRAFFIC_HEADER

    url = endpoint.rstrip("/") + path
    try:
        response = requests.post(
            url,
            json={"dataframe_records": list(records)},
            timeout=timeout,
            headers={TRAFFIC_HEADER: "synthetic", **(headers or {})},
        )
    except requests.RequestException as err:
        raise PredictionError(f"POST {url} failed: {type(err).__name__}: {err}") from err
    body = response.text
    if response.status_code != 200:
        raise PredictionError(
            f"POST {url} answered HTTP {response.status_code}: {body[:2000]}",
            status_code=response.status_code,
            body=body,
        )
    try:
        payload = response.json()
    except ValueError as err:
        raise PredictionError(f"POST {url} answered non-JSON: {body[:500]}", 200, body) from err
    predictions = payload.get("predictions") if isinstance(payload, dict) else payload
    if isinstance(predictions, dict):
        # A model returning a DataFrame-like dict of columns: one prediction per row of the first column.
        columns = list(predictions.values())
        predictions = list(zip(*columns, strict=False)) if columns and isinstance(columns[0], list) else None
    if not isinstance(predictions, list):
        raise PredictionError(f"POST {url} answered without a 'predictions' list: {body[:500]}", 200, body)
    return predictions


class DeployTarget(abc.ABC):
    """
    Where registered model versions are served: the one interface every serving backend implements.

    A target instance describes a *place* (a local port, a Kubernetes namespace...); methods take the
    registered model name, so one target can serve several models. Subclasses implement
    :meth:`deploy`, :meth:`current`, :meth:`stop` and :meth:`settings`; the rest has defaults that speak the
    MLflow scoring protocol (``GET /ping``, ``POST /invocations``). Constructors validate and store settings
    only: no I/O, no connection lookup (targets are built while DAG files are parsed).

    Contract of each method:

    - :meth:`deploy` makes *version* what the endpoint serves. If it fails, what served before keeps
      serving (nothing changed). It may return before the rollout is ready (``Deployment.ready`` False):
      the caller then waits through :meth:`ready_trigger` (deferrable) or :meth:`wait_ready`.
    - :meth:`rollback` puts a previous :class:`Deployment` back (default: :meth:`deploy` it again).
    - :meth:`start_sandbox` / :meth:`stop_sandbox` serve a candidate where no client sees it (infra
      validation); :meth:`sandbox` wraps both and always stops the sandbox.
    """

    #: Short name of the kind (``"local"``) written by :meth:`to_config` once the kind is registered
    #: (:func:`register_target_kind`, entry point); None: the name it is registered under.
    kind: ClassVar[str | None] = None

    # -- description ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this target (JSON-serialisable, no secrets)."""

    @classmethod
    def config_kind(cls) -> str:
        """
        The ``kind`` written by :meth:`to_config`: the short name this class is known by.

        A class known by no kind (neither built in, registered nor an entry point) gets its dotted path, for
        messages only: :func:`target_from_config` refuses it (see :func:`register_target_kind`).
        """
        path = _class_path(cls)
        if cls.kind and _kind_path(cls.kind) == path:
            return cls.kind
        for kind, kind_path in available_kinds().items():
            if kind_path == path:
                return kind
        return path

    def to_config(self) -> dict[str, Any]:
        """``{"kind": ..., **settings}``; :func:`target_from_config` builds an equal target from it."""
        config = {"kind": self.config_kind(), **self.settings()}
        try:
            return json.loads(json.dumps(config))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"Settings of deploy target {config['kind']} are not JSON-serialisable: {err}"
            ) from err

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DeployTarget:
        """Build the target from :meth:`to_config` output (the ``kind`` key is ignored here)."""
        kwargs = {key: value for key, value in config.items() if key != "kind"}
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ValueError(f"Invalid settings for deploy target {cls.config_kind()}: {err}") from err

    def describe(self) -> str:
        """Short text for logs and messages."""
        return json.dumps(self.to_config(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeployTarget) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(self.describe())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    # -- serving -------------------------------------------------------------------------------------------

    def resolve_model_uri(self, client: MlflowClient, model_name: str, version: str) -> str:
        """The URI this target loads *version* from (default ``models:/<name>/<version>``)."""
        return f"models:/{model_name}/{version}"

    @abc.abstractmethod
    def deploy(self, model_name: str, version: str, model_uri: str) -> Deployment:
        """Serve *version* (loaded from *model_uri*) at the model's endpoint; on failure change nothing."""

    @abc.abstractmethod
    def current(self, model_name: str) -> Deployment | None:
        """What the model's endpoint serves now (``ready`` False if it is down), or None if nothing."""

    @abc.abstractmethod
    def stop(self, model_name: str) -> None:
        """Stop serving *model_name* on this target (no error if nothing serves)."""

    def rollback(self, model_name: str, to: Deployment) -> Deployment:
        """Serve the earlier deployment *to* again (default: deploy its version and URI again)."""
        return self.deploy(model_name, to.version, to.model_uri)

    def wait_ready(self, deployment: Deployment, timeout: float) -> Deployment:
        """Block until *deployment* is ready; raise :class:`DeploymentError` saying why it is not."""
        if deployment.ready:
            return deployment
        raise DeploymentError(
            f"Version {deployment.version} of model {deployment.model_name!r} on target {self.config_kind()} "
            "is not ready, and this target cannot wait for it"
        )

    def ready_trigger(self, deployment: Deployment, timeout: float) -> BaseTrigger | None:
        """A trigger that waits for *deployment* to be ready (deferrable operators), or None to block."""
        return None

    def health(self, deployment: Deployment, timeout: float = 10.0) -> Health:
        """Whether *deployment* answers ``GET <endpoint>/ping``."""
        import requests

        from airflow_mlops.serving.status import Health

        url = deployment.endpoint.rstrip("/") + "/ping"
        try:
            response = requests.get(url, timeout=timeout)
        except requests.RequestException as err:
            return Health(False, f"GET {url} failed: {type(err).__name__}: {err}")
        if response.status_code != 200:
            return Health(False, f"GET {url} answered HTTP {response.status_code}: {response.text[:500]}")
        return Health(True, f"GET {url} answered HTTP 200")

    def predict(
        self, deployment: Deployment, records: Sequence[Mapping[str, Any]], timeout: float = 30.0
    ) -> list[Any]:
        """Predictions of *deployment* for *records* (see :func:`post_invocations`)."""
        return post_invocations(deployment.endpoint, records, timeout=timeout)

    def diagnostics(self, deployment: Deployment) -> str:
        """What the serving side says about *deployment* (server log tail, status), for error messages."""
        return ""

    # -- canary rollout --------------------------------------------------------------------------------------

    #: Whether :meth:`deploy_canary`, :meth:`predict_canary` and :meth:`promote_canary` are implemented.
    supports_canary: ClassVar[bool] = False

    def canary_percent(self) -> int | None:
        """Percent of traffic a new version gets first (its canary), from the target's settings; None: none."""
        return None

    def deploy_canary(self, model_name: str, version: str, model_uri: str, percent: int) -> Deployment:
        """
        Serve *version* as a canary next to what serves now.

        It gets *percent* % of the traffic, the previous version the rest. On failure change nothing.
        """
        raise NotImplementedError(
            f"Deploy target {self.config_kind()} cannot roll out a canary; leave canary_percent unset"
        )

    def predict_canary(
        self, deployment: Deployment, records: Sequence[Mapping[str, Any]], timeout: float = 30.0
    ) -> list[Any]:
        """Predictions of the canary *deployment* itself (not of the version beside it), for the bake."""
        raise NotImplementedError(f"Deploy target {self.config_kind()} has no canary to send requests to")

    def canary_endpoint(self, deployment: Deployment) -> str:
        """The URL :meth:`predict_canary` calls (for logs and the history)."""
        return deployment.endpoint

    def promote_canary(self, model_name: str, deployment: Deployment) -> Deployment:
        """Send all traffic to the canary *deployment*; may return before that is ready."""
        raise NotImplementedError(f"Deploy target {self.config_kind()} has no canary to promote")

    # -- sandbox (infra validation) ------------------------------------------------------------------------

    def start_sandbox(self, model_name: str, version: str, model_uri: str) -> Deployment:
        """Serve *version* where no client sees it and return it once ready."""
        raise NotImplementedError(
            f"Deploy target {self.config_kind()} cannot start a sandbox for infra validation; "
            "implement start_sandbox/stop_sandbox or leave InfraValidateOperator out of the DAG"
        )

    def stop_sandbox(self, deployment: Deployment) -> None:
        """Remove a sandbox started by :meth:`start_sandbox`."""
        raise NotImplementedError(f"Deploy target {self.config_kind()} has no sandbox to stop")

    @contextmanager
    def sandbox(self, model_name: str, version: str, model_uri: str) -> Iterator[Deployment]:
        """Context manager around :meth:`start_sandbox` that always stops the sandbox."""
        deployment = self.start_sandbox(model_name, version, model_uri)
        try:
            yield deployment
        finally:
            self.stop_sandbox(deployment)


# -- target kinds ------------------------------------------------------------------------------------------


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_target_kind(kind: str, target: str | type[DeployTarget]) -> None:
    """
    Let ``{"kind": kind, ...}`` name a user's :class:`DeployTarget` subclass.

    Call it in code that runs wherever the target is built: the DAG file (or a module it imports) and, for a
    deferrable wait, a plugin the triggerer loads. An installed package can declare the same in the
    ``airflow_mlops.deploy_targets`` entry-point group instead. This is the only way besides the entry points
    and the built-in kinds: a config naming a dotted path is refused, because configs arrive as data.

    :param kind: Short name without dots (``"sagemaker"``); a built-in kind cannot be replaced.
    :param target: The class, or its dotted path (``"my_pkg.targets.SageMakerTarget"``, imported when the
        kind is first used).
    """
    if not isinstance(kind, str) or not re.fullmatch(_KIND_NAME, kind):
        raise ValueError(
            f"A target kind name is a short name of letters, digits, '_' and '-' (no dots), got {kind!r}"
        )
    if kind in _BUILTIN_KINDS:
        raise ValueError(f"Deploy target kind {kind!r} is built in and cannot be registered again")
    if isinstance(target, type):
        if not issubclass(target, DeployTarget):
            raise ValueError(f"Deploy target kind {kind!r}: {target!r} is not a DeployTarget subclass")
    elif not isinstance(target, str) or not re.fullmatch(_DOTTED_PATH, target):
        raise ValueError(
            f"register_target_kind takes a DeployTarget subclass or its dotted path like "
            f"'my_pkg.targets.MyTarget', got {target!r}"
        )
    _REGISTERED_KINDS[kind] = target


def _entry_point_kinds() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value.replace(":", ".") for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_kinds() -> dict[str, str]:
    """Every kind name known now (built in, registered, entry points), with its class path."""
    registered = {
        kind: target if isinstance(target, str) else _class_path(target)
        for kind, target in _REGISTERED_KINDS.items()
    }
    return {**_entry_point_kinds(), **registered, **_BUILTIN_KINDS}


def _kind_path(kind: str) -> str | None:
    if kind in _BUILTIN_KINDS:
        return _BUILTIN_KINDS[kind]
    if kind in _REGISTERED_KINDS:
        target = _REGISTERED_KINDS[kind]
        return target if isinstance(target, str) else _class_path(target)
    return _entry_point_kinds().get(kind)


def _unknown_kind(kind: str) -> str:
    known = ", ".join(sorted(available_kinds()))
    if "." in kind:
        start = (
            f"Deploy target kind {kind!r} looks like a dotted path; a target's config never names a class to "
            "import (configs come from DAG params, XCom and the registry), so nothing was imported."
        )
    else:
        start = f"Unknown deploy target kind {kind!r}."
    return (
        f"{start} Kinds available: {known}. To use your own DeployTarget subclass, give it a kind in code: "
        "airflow_mlops.serving.register_target_kind('mykind', 'my_pkg.targets.MyTarget') in the DAG file (or a "
        f"plugin), or an entry point in the group {ENTRY_POINT_GROUP!r} of an installed package."
    )


def target_class(kind: str) -> type[DeployTarget]:
    """
    The :class:`DeployTarget` subclass a ``kind`` names: a built-in, registered or entry-point kind.

    :raises ValueError: for any other kind (a dotted path included), listing the kinds available and how to
        add one; nothing is imported.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"Deploy target kind must be a non-empty string, got {kind!r}")
    registered = _REGISTERED_KINDS.get(kind) if kind not in _BUILTIN_KINDS else None
    if isinstance(registered, type):
        return registered
    path = _kind_path(kind)
    if path is None:
        raise ValueError(_unknown_kind(kind))
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Deploy target kind {kind!r}: cannot import {path}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, DeployTarget)):
        raise ValueError(f"Deploy target kind {kind!r}: {path} is not a DeployTarget subclass")
    return cls


def target_from_config(config: DeployTarget | Mapping[str, Any] | str) -> DeployTarget:
    """
    Build a target from its description.

    A :class:`DeployTarget`, a config dict (``{"kind": "local", "port": 5001}``), a JSON string of one, or a
    bare kind name (``"local"``: default settings).

    :raises ValueError: naming the kind and the bad setting.
    """
    if isinstance(config, DeployTarget):
        return config
    if isinstance(config, str):
        text = config.strip()
        config = json.loads(text) if text.startswith("{") else {"kind": text}
    if not isinstance(config, Mapping):
        raise ValueError(
            f"A deploy target is a DeployTarget, a dict like {{'kind': 'local', 'port': 5001}} or a kind name; "
            f"got {type(config).__name__}"
        )
    kind = config.get("kind")
    if not kind:
        raise ValueError(f"Deploy target config {dict(config)!r} has no 'kind' (e.g. 'local' or 'kserve')")
    return target_class(kind).from_config(config)


def canary_percent_for(percent: int | None, target: DeployTarget) -> int | None:
    """
    The canary percent a deployment on *target* uses: *percent* if given, else the target's own setting.

    ``None``, 0 and 100 mean no canary (the new version takes all traffic at once).
    """
    chosen = percent if percent is not None else target.canary_percent()
    if chosen is None or chosen in (0, 100):
        return None
    return int(chosen)


def __getattr__(name: str) -> Any:
    """``Deployment`` and ``Health`` live in :mod:`airflow_mlops.serving.status`; importable from here too."""
    if name in ("Deployment", "Health"):
        from airflow_mlops.serving import status

        return getattr(status, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
