"""
Serving operators: infra-validate a candidate, deploy a version with verification and automatic rollback,
and roll back on request.

All three work on any :class:`~airflow_mlops.serving.base.DeployTarget` (``"local"``, ``"kserve"``, or a
user's own), given as a target object, a config dict (``{"kind": "local", "port": 5001}``) or a kind name.
Deployment history and rollback reasons are written to the MLflow registry
(:mod:`airflow_mlops.lineage.deployments`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    DatasetError,
    DeploymentError,
    DeploymentVerificationError,
    InfraValidationError,
    RegistryError,
)
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.registry import get_alias_version, get_model_version, parse_version, validate_model_name
from airflow_mlops.serving.base import (
    Deployment,
    DeployTarget,
    PredictionError,
    target_from_config,
    utc_now,
)
from airflow_mlops.utils.context import airflow_ids
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

#: Rows sent by default: one request per row plus one batch request with all of them (infra validation).
DEFAULT_SAMPLE_ROWS = 20
#: Rows of the post-deploy smoke test.
DEFAULT_SMOKE_ROWS = 5
#: Seconds a canary is baked by default, and seconds between its bake requests.
DEFAULT_BAKE_SECONDS = 60.0
DEFAULT_BAKE_INTERVAL = 1.0
_ERROR_MAX = 3000


# -- helpers -----------------------------------------------------------------------------------------------


def _target_arg(target: Any, field: str = "target") -> Any:
    """Normalise a ``target`` argument at DAG-parse time: objects become config dicts; plain configs are checked."""
    if isinstance(target, DeployTarget):
        return target.to_config()
    if target is None:
        return None
    if isinstance(target, str) and is_templated(target):
        return target
    if isinstance(target, Mapping) and any(is_templated(v) for v in target.values()):
        return dict(target)
    if not isinstance(target, str | Mapping):
        raise ValueError(
            f"{field} must be a DeployTarget, a config dict like {{'kind': 'local', 'port': 5001}}, or a kind "
            f"name ('local', 'kserve'); got {type(target).__name__}"
        )
    target_from_config(target)  # raises ValueError naming the bad setting
    return dict(target) if isinstance(target, Mapping) else target


def _check_columns(drop_columns: Any) -> None:
    if drop_columns is None or is_templated(drop_columns):
        return
    if isinstance(drop_columns, str) or not all(isinstance(c, str) for c in drop_columns):
        raise ValueError(f"drop_columns must be a list of column names, got {drop_columns!r}")


def _has_template(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(is_templated(v) for v in value.values())
    return is_templated(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_canary(
    canary_percent: Any, bake_seconds: Any, bake_interval: Any, max_error_rate: Any, max_latency_ms: Any
) -> None:
    if canary_percent is not None and (
        isinstance(canary_percent, bool)
        or not isinstance(canary_percent, int)
        or not 0 < canary_percent < 100
    ):
        raise ValueError(
            f"canary_percent must be an integer from 1 to 99 (the canary's share of traffic) or None, "
            f"got {canary_percent!r}"
        )
    if not _number(bake_seconds) or bake_seconds < 0:
        raise ValueError(f"bake_seconds must be a non-negative number of seconds, got {bake_seconds!r}")
    if not _number(bake_interval) or bake_interval <= 0:
        raise ValueError(f"bake_interval must be a positive number of seconds, got {bake_interval!r}")
    if not _number(max_error_rate) or not 0 <= max_error_rate <= 1:
        raise ValueError(f"max_error_rate must be a share from 0 to 1, got {max_error_rate!r}")
    if max_latency_ms is not None and (not _number(max_latency_ms) or max_latency_ms <= 0):
        raise ValueError(f"max_latency_ms must be a positive number or None, got {max_latency_ms!r}")


def _check_rows(rows: Any, field: str) -> None:
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"{field} must be a positive integer, got {rows!r}")


def sample_records(
    uri: str, drop_columns: Sequence[str] | None, rows: int, aws_conn_id: str | None = None
) -> list[dict[str, Any]]:
    """
    The first *rows* rows of a snapshot (``<snapshot-uri>#holdout``) as JSON-safe records, without
    *drop_columns* (the label).

    :raises DatasetError: if the snapshot cannot be read, is empty, or lacks a column to drop.
    """
    from airflow_mlops.data.snapshots import read_snapshot
    from airflow_mlops.data.storage import is_s3

    storage = None
    if is_s3(uri):
        from airflow_mlops.hooks.storage import StorageHook

        storage = StorageHook(aws_conn_id=aws_conn_id).get_conn()
    try:
        data = read_snapshot(uri, storage=storage)
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(f"Cannot read the sample requests from {uri}: {err}") from err
    missing = [c for c in drop_columns or [] if c not in data.columns]
    if missing:
        raise DatasetError(
            f"Sample data {uri} has no column(s) {missing} to drop; its columns are {list(data.columns)}"
        )
    data = data.drop(columns=list(drop_columns or [])).head(rows)
    if data.empty:
        raise DatasetError(f"Sample data {uri} has no rows to send to the model")
    return json.loads(data.to_json(orient="records", date_format="iso"))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def actor_of(context: Mapping[str, Any] | None) -> str:
    """Who acts: the user who triggered the DAG run, else ``airflow:<dag_id>`` (scheduled and asset runs)."""
    dag_run = (context or {}).get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    return f"airflow:{airflow_ids(context).get('dag_id', 'unknown')}"


class _ServingOperator(BaseOperator):
    """What the serving operators share: the MLflow hook, the target, sample data."""

    mlflow_conn_id: str
    aws_conn_id: str | None
    request_timeout: float

    @cached_property
    def hook(self) -> MLflowHook:
        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def _target(self, config: Any) -> DeployTarget:
        try:
            return target_from_config(config)
        except ValueError as err:
            raise ValueError(f"Task {self.task_id!r}: invalid deploy target {config!r}: {err}") from err

    def _version(self, client: MlflowClient, name: str, version: Any) -> str:
        """*version* as a string after checking the registry has it."""
        number = parse_version(version, name)
        get_model_version(client, name, number)
        return str(number)


# -- infra validation --------------------------------------------------------------------------------------


class InfraValidateOperator(_ServingOperator):
    """
    Check that a model version can serve before it is promoted (like TFX's InfraValidator).

    Starts the version in a sandbox of the target (a model server on a spare local port for ``local``, a
    separate one-replica ``InferenceService`` for ``kserve``), sends it rows of a snapshot (one request per
    row, then one request with all rows), checks every answer (HTTP 200, one prediction per row) and the p95
    latency, and always removes the sandbox. The outcome is written to the version's tags
    ``mlops.infra_validation.passed`` and ``mlops.infra_validation.summary``.

    Returns (XCom) ``{"model_name", "version", "model_uri", "target", "passed", "requests", "rows",
    "latency_ms": {"p50", "p95", "max"}}``.

    :param model_name: Registered model name (templated).
    :param version: Version to validate (templated), e.g. the ``register`` task's ``version``.
    :param sample_data: Snapshot URI the requests are drawn from (templated), e.g. ``<snapshot>#holdout``.
    :param target: Deploy target (a :class:`DeployTarget`, a config dict, or a kind name); the sandbox runs
        where the model will serve. (templated)
    :param drop_columns: Columns removed before sending (the label). (templated)
    :param sample_rows: How many rows to send.
    :param max_latency_ms: Fail if the p95 latency of the single-row requests exceeds this; None: no limit.
    :param request_timeout: Seconds one request may take.
    :param mlflow_conn_id: MLflow connection.
    :param aws_conn_id: ``aws`` connection for an ``s3://`` sample snapshot.
    :raises InfraValidationError: if the sandbox does not start or an answer is wrong, with the server's
        error (its answer and its log) in the message.
    """

    template_fields: Sequence[str] = ("model_name", "version", "sample_data", "target", "drop_columns")
    template_fields_renderers = {"target": "json"}
    ui_color = "#fff3e0"

    def __init__(
        self,
        *,
        model_name: str,
        version: int | str,
        sample_data: str,
        target: DeployTarget | dict[str, Any] | str = "local",
        drop_columns: Sequence[str] | None = None,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        max_latency_ms: float | None = None,
        request_timeout: float = 30.0,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_templated(model_name):
            validate_model_name(model_name)
        if not is_templated(version):
            parse_version(version, str(model_name))
        if not isinstance(sample_data, str) or not sample_data.strip():
            raise ValueError(
                "sample_data must be a snapshot URI to draw requests from, e.g. '<snapshot-uri>#holdout'"
            )
        _check_columns(drop_columns)
        _check_rows(sample_rows, "sample_rows")
        if max_latency_ms is not None and (
            not isinstance(max_latency_ms, int | float) or max_latency_ms <= 0
        ):
            raise ValueError(f"max_latency_ms must be a positive number or None, got {max_latency_ms!r}")
        self.model_name = model_name
        self.version = version
        self.sample_data = sample_data
        self.target = _target_arg(target)
        self.drop_columns = list(drop_columns) if isinstance(drop_columns, list | tuple) else drop_columns
        self.sample_rows = sample_rows
        self.max_latency_ms = max_latency_ms
        self.request_timeout = request_timeout
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self._sandbox: tuple[DeployTarget, Deployment] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        name = validate_model_name(self.model_name)
        target = self._target(self.target)
        client = self.hook.client
        version = self._version(client, name, self.version)
        model_uri = target.resolve_model_uri(client, name, version)
        records = sample_records(str(self.sample_data), self.drop_columns, self.sample_rows, self.aws_conn_id)
        summary: dict[str, Any] = {
            "model_name": name,
            "version": version,
            "model_uri": model_uri,
            "target": target.config_kind(),
            "rows": len(records),
            "requests": 0,
            "time": utc_now(),
        }
        self.log.info(
            "Infra-validating version %s of model %s on a %s sandbox with %s rows",
            version, name, target.config_kind(), len(records),
        )  # fmt: skip
        latencies: list[float] = []
        try:
            with target.sandbox(name, version, model_uri) as sandbox:
                self._sandbox = (target, sandbox)
                try:
                    self._exercise(target, sandbox, records, latencies, summary)
                except PredictionError as err:
                    details = target.diagnostics(sandbox)
                    raise InfraValidationError(
                        f"Version {version} of model {name!r} cannot serve on target {target.config_kind()}: "
                        f"request {summary['requests']} of {len(records) + 1} failed: {err}"
                        + (f"\n{details}" if details else "")
                    ) from err
        except InfraValidationError as err:
            self._record(client, summary, passed=False, error=str(err))
            raise
        except (DeploymentError, NotImplementedError) as err:
            self._record(client, summary, passed=False, error=str(err))
            raise InfraValidationError(
                f"Version {version} of model {name!r} cannot serve on target {target.config_kind()}: {err}"
            ) from err
        finally:
            self._sandbox = None
        summary["latency_ms"] = {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "max": round(max(latencies), 2),
        }
        p95 = summary["latency_ms"]["p95"]
        if self.max_latency_ms is not None and p95 > self.max_latency_ms:
            message = (
                f"Version {version} of model {name!r} answers too slowly on target {target.config_kind()}: "
                f"p95 latency {p95} ms > max_latency_ms {self.max_latency_ms} ({len(latencies)} requests)"
            )
            self._record(client, summary, passed=False, error=message)
            raise InfraValidationError(message)
        self._record(client, summary, passed=True)
        self.log.info("Version %s of model %s served every request: %s", version, name, summary["latency_ms"])
        return {**summary, "passed": True}

    def on_kill(self) -> None:
        sandbox = self._sandbox
        if sandbox is not None:
            target, deployment = sandbox
            self.log.info("Task killed: stopping the infra-validation sandbox of %s", deployment.endpoint)
            target.stop_sandbox(deployment)

    def _exercise(
        self,
        target: DeployTarget,
        sandbox: Deployment,
        records: list[dict[str, Any]],
        latencies: list[float],
        summary: dict[str, Any],
    ) -> None:
        for record in records:
            summary["requests"] += 1
            started = time.perf_counter()
            predictions = target.predict(sandbox, [record], timeout=self.request_timeout)
            latencies.append((time.perf_counter() - started) * 1000)
            if len(predictions) != 1:
                raise PredictionError(
                    f"1 row sent, {len(predictions)} predictions received: {predictions!r:.300}"
                )
        summary["requests"] += 1
        predictions = target.predict(sandbox, records, timeout=self.request_timeout)
        if len(predictions) != len(records):
            raise PredictionError(f"{len(records)} rows sent, {len(predictions)} predictions received")

    def _record(self, client: MlflowClient, summary: dict[str, Any], passed: bool, error: str = "") -> None:
        values = {**summary, "passed": passed, **({"error": error[:_ERROR_MAX]} if error else {})}
        name, version = summary["model_name"], summary["version"]
        client.set_model_version_tag(name, version, T.INFRA_VALIDATION_PASSED, "true" if passed else "false")
        client.set_model_version_tag(
            name, version, T.INFRA_VALIDATION_SUMMARY, json.dumps(values, sort_keys=True, default=str)[:5000]
        )


# -- deploy, verify, roll back -----------------------------------------------------------------------------


class DeployModelOperator(_ServingOperator):
    """
    Deploy a model version on a target, verify it serves, and roll back automatically if it does not.

    Steps: resolve the version (explicit, or the one ``alias`` points at) and the URI the target loads;
    read what the target serves now (the *previous* deployment); deploy; wait until ready (deferred to the
    triggerer when the target offers a trigger and ``deferrable`` is on); verify: the target's health check
    and a smoke test (``smoke_rows`` rows of ``sample_data`` must get one prediction each). Then:

    - success: ``alias`` points at the version, the deployment is appended to the registry's history
      (``mlops.deployments``) and the target's config recorded (``mlops.deployment.target``);
    - failure: the target goes back to the previous deployment (re-verified), ``alias`` is moved back to it,
      the failed version gets ``mlops.rollback.reason``, both events go to the history, and the task fails
      with :class:`DeploymentVerificationError` giving the reason. With no previous deployment the target
      stops serving the model. If the target refuses the deploy itself (a port in use, a URI it cannot read),
      nothing changed: only the alias is moved back and :class:`DeploymentError` is raised.

    Canary flow (targets with ``supports_canary``, e.g. KServe's ``canaryTrafficPercent``): when a canary
    percent N is set (``canary_percent``, else the target's own setting) and a previous version serves, the
    version is deployed at N% of the traffic, verified, then **baked**: for ``bake_seconds`` one sample row
    every ``bake_interval`` seconds goes to the canary revision, and its error rate and p95 latency are
    compared with ``max_error_rate`` and ``max_latency_ms``. Passing promotes it to 100% (verified again);
    failing rolls back as above. The bake result (requests, errors, error rate, p95) is in the history entry.

    Safe to retry: a version that already serves (and answers) is not redeployed, and a task instance never
    writes the same history entry twice.

    Returns (XCom) ``{"model_name", "version", "previous_version", "target", "endpoint", "action",
    "outcome", "changed"}`` (plus ``"bake"`` after a canary rollout).

    :param model_name: Registered model name (templated).
    :param version: Version to deploy (templated); None deploys the version ``alias`` points at.
    :param target: Deploy target: a :class:`DeployTarget`, a config dict (``{"kind": "local", "port":
        5001}``), or a kind name. (templated)
    :param sample_data: Snapshot URI of the smoke-test rows (templated), e.g. ``<snapshot>#holdout``; None
        verifies with the health check only.
    :param drop_columns: Columns removed from the sample before sending (the label). (templated)
    :param smoke_rows: Rows in the smoke test.
    :param alias: Registry alias that follows what serves (``champion``); None leaves aliases alone.
    :param reason: Why (recorded in the history). (templated)
    :param ready_timeout: Seconds the deployment may take to become ready.
    :param request_timeout: Seconds one smoke-test request may take.
    :param deferrable: Wait for readiness in the triggerer (targets with a trigger, e.g. KServe).
    :param canary_percent: Percent of traffic (1-99) the version gets during its bake; None uses the
        target's own setting (KServe ``canary_traffic_percent``). Needs ``sample_data`` and a target that
        supports canaries.
    :param bake_seconds: How long a canary is baked (the task holds its worker slot meanwhile).
    :param bake_interval: Seconds between bake requests.
    :param max_error_rate: Highest share (0-1) of failed bake requests that still promotes the canary.
    :param max_latency_ms: Highest p95 latency of the bake requests; None: no limit.
    :param mlflow_conn_id: MLflow connection.
    :param aws_conn_id: ``aws`` connection for an ``s3://`` sample snapshot.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "version",
        "target",
        "sample_data",
        "drop_columns",
        "reason",
    )
    template_fields_renderers = {"target": "json"}
    ui_color = "#e8f5e9"
    #: The history ``action`` of this operator's own deployments.
    action = "deploy"

    def __init__(
        self,
        *,
        model_name: str,
        version: int | str | None = None,
        target: DeployTarget | dict[str, Any] | str | None = "local",
        sample_data: str | None = None,
        drop_columns: Sequence[str] | None = None,
        smoke_rows: int = DEFAULT_SMOKE_ROWS,
        alias: str | None = T.CHAMPION,
        reason: str = "",
        ready_timeout: float = 900.0,
        request_timeout: float = 30.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        canary_percent: int | None = None,
        bake_seconds: float = DEFAULT_BAKE_SECONDS,
        bake_interval: float = DEFAULT_BAKE_INTERVAL,
        max_error_rate: float = 0.0,
        max_latency_ms: float | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_templated(model_name):
            validate_model_name(model_name)
        _check_canary(canary_percent, bake_seconds, bake_interval, max_error_rate, max_latency_ms)
        if version not in (None, "") and not is_templated(version):
            parse_version(version, str(model_name))
        if sample_data is not None and not isinstance(sample_data, str):
            raise ValueError(f"sample_data must be a snapshot URI or None, got {sample_data!r}")
        _check_columns(drop_columns)
        _check_rows(smoke_rows, "smoke_rows")
        if alias is not None and (not isinstance(alias, str) or not alias.strip()):
            raise ValueError(
                f"alias must be a registry alias name such as 'champion', or None; got {alias!r}"
            )
        if not isinstance(ready_timeout, int | float) or ready_timeout <= 0:
            raise ValueError(f"ready_timeout must be a positive number of seconds, got {ready_timeout!r}")
        self.model_name = model_name
        self.version = version
        self.target = _target_arg(target)
        self.sample_data = sample_data
        self.drop_columns = list(drop_columns) if isinstance(drop_columns, list | tuple) else drop_columns
        self.smoke_rows = smoke_rows
        self.alias = alias
        self.reason = reason
        self.ready_timeout = float(ready_timeout)
        self.request_timeout = request_timeout
        self.deferrable = deferrable
        self.canary_percent = canary_percent
        self.bake_seconds = float(bake_seconds)
        self.bake_interval = float(bake_interval)
        self.max_error_rate = float(max_error_rate)
        self.max_latency_ms = max_latency_ms
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        if self.action == "deploy" and self.target is not None and not _has_template(self.target):
            self._canary_of(self._target(self.target), sample_data)

    def _canary_of(self, target: DeployTarget | None, sample_data: Any) -> int | None:
        """The canary percent this deployment uses (None: no canary); ValueError if the target cannot do it."""
        if target is None:
            return None
        percent = self.canary_percent if self.canary_percent is not None else target.canary_percent()
        if percent is None or percent in (0, 100):
            return None
        if not target.supports_canary:
            raise ValueError(
                f"Task {self.task_id!r}: deploy target {target.config_kind()} cannot roll out a canary "
                f"(canary_percent={percent}); use a target that supports canaries (e.g. kserve) or leave "
                "canary_percent unset"
            )
        if not sample_data:
            raise ValueError(
                f"Task {self.task_id!r}: a canary rollout ({percent}%) is baked with requests from sample_data; "
                "give sample_data (e.g. '<snapshot-uri>#holdout') or leave the canary percent unset"
            )
        return int(percent)

    # -- planning ------------------------------------------------------------------------------------------

    def _resolve_version(self, client: MlflowClient, name: str) -> str:
        if self.version not in (None, ""):
            return self._version(client, name, self.version)
        if not self.alias:
            raise ValueError(
                f"Task {self.task_id!r}: give version, or an alias to deploy the version it points at"
            )
        aliased = get_alias_version(client, name, self.alias)
        if aliased is None:
            raise RegistryError(
                f"Model {name!r} has no alias {self.alias!r} to deploy: give the version to deploy, or promote one"
            )
        return self._version(client, name, aliased)

    def _verify_settings(self) -> dict[str, Any]:
        return {
            "sample_data": str(self.sample_data).strip() if self.sample_data else None,
            "drop_columns": list(self.drop_columns or []),
            "rows": self.smoke_rows,
        }

    def _records(self, verify: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not verify.get("sample_data"):
            return []
        return sample_records(
            verify["sample_data"], verify.get("drop_columns"), int(verify["rows"]), self.aws_conn_id
        )

    def _plan(
        self,
        context: Context,
        name: str,
        version: str,
        model_uri: str,
        target: DeployTarget,
        previous: Deployment | None,
        verify: Mapping[str, Any],
        reason: str,
    ) -> dict[str, Any]:
        """Everything the later steps need, JSON-serialisable (it travels through a deferral)."""
        return {
            "model_name": name,
            "version": version,
            "model_uri": model_uri,
            "target": target.to_config(),
            "previous": previous.to_dict() if previous else None,
            "verify": dict(verify),
            "reason": reason,
            "actor": actor_of(context),
            "airflow": airflow_ids(context),
            "phase": "deploy",
            # A canary needs a version beside it; a rollback goes straight to 100%.
            "canary": (
                self._canary_of(target, verify.get("sample_data"))
                if previous is not None and self.action == "deploy"
                else None
            ),
        }

    def execute(self, context: Context) -> dict[str, Any]:
        name = validate_model_name(self.model_name)
        if self.target is None:
            raise ValueError(f"Task {self.task_id!r}: give the deploy target")
        target = self._target(self.target)
        client = self.hook.client
        version = self._resolve_version(client, name)
        model_uri = target.resolve_model_uri(client, name, version)
        verify = self._verify_settings()
        self._records(verify)  # bad sample data fails here, before anything changes
        previous = target.current(name)
        plan = self._plan(context, name, version, model_uri, target, previous, verify, str(self.reason or ""))
        return self._switch(context, target, plan)

    # -- the mechanism shared by deploy and rollback ---------------------------------------------------------

    def _switch(self, context: Context, target: DeployTarget, plan: dict[str, Any]) -> dict[str, Any]:
        name, version = plan["model_name"], plan["version"]
        previous = Deployment.from_dict(plan["previous"]) if plan["previous"] else None
        if previous is not None and previous.version == version and previous.model_uri == plan["model_uri"]:
            if previous.ready and target.health(previous).ok:
                self.log.info("Version %s of model %s already serves at %s", version, name, previous.endpoint)
                plan["previous"] = None
                return self._succeeded(target, previous, plan, changed=False)
        self.log.info(
            "Deploying version %s of model %s (%s) on %s; serving now: %s",
            version, name, plan["model_uri"], target.describe(), previous.version if previous else "nothing",
        )  # fmt: skip
        try:
            if plan.get("canary"):
                self.log.info("Canary rollout: version %s gets %s%% of the traffic", version, plan["canary"])
                deployment = target.deploy_canary(name, version, plan["model_uri"], plan["canary"])
            else:
                deployment = target.deploy(name, version, plan["model_uri"])
        except DeploymentError as err:
            # The target changed nothing: what served before still serves.
            self._record(plan, version, "failed", f"deploy refused: {err}", deployment=None)
            self._restore_alias(plan)
            raise
        return self._await_ready(context, target, deployment, plan)

    def _await_ready(
        self, context: Context, target: DeployTarget, deployment: Deployment, plan: dict[str, Any]
    ) -> dict[str, Any]:
        if not deployment.ready:
            trigger = target.ready_trigger(deployment, self.ready_timeout) if self.deferrable else None
            if trigger is not None:
                self.log.info(
                    "Waiting in the triggerer for %s to be ready", deployment.endpoint or deployment.details
                )
                self.defer(
                    trigger=trigger,
                    method_name="execute_complete",
                    kwargs={"plan": {**plan, "deployment": deployment.to_dict()}},
                )
            try:
                deployment = target.wait_ready(deployment, self.ready_timeout)
            except DeploymentError as err:
                return self._not_ready(context, target, deployment, plan, str(err))
        return self._ready(context, target, deployment, plan)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, plan: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the target's trigger: verify (deploy phase) or finish the rollback (rollback phase)."""
        if not event or not plan:
            raise DeploymentError(f"Task {self.task_id!r} resumed without a trigger event; run it again")
        target = self._target(plan["target"])
        deployment = Deployment.from_dict(plan["deployment"])
        if event.get("status") != "success":
            return self._not_ready(
                context, target, deployment, plan, f"{event.get('status')}: {event.get('message')}"
            )
        fresh = target.current(plan["model_name"]) or deployment
        return self._ready(context, target, fresh, plan)

    def _ready(
        self, context: Context, target: DeployTarget, deployment: Deployment, plan: dict[str, Any]
    ) -> dict[str, Any]:
        records = self._records(plan["verify"])
        canary = plan["phase"] == "deploy" and bool(plan.get("canary")) and "bake" not in plan
        failure = self._check(target, deployment, records, canary=canary)
        if plan["phase"] == "rollback":
            return self._rolled_back(target, deployment, plan, failure)
        if not failure and canary:
            plan = {**plan, "bake": self._bake(target, deployment, records)}
            failure = plan["bake"].get("failure")
            if not failure:
                self.log.info("Canary passed its bake: %s; promoting it to 100%%", plan["bake"])
                try:
                    promoted = target.promote_canary(plan["model_name"], deployment)
                except DeploymentError as err:
                    failure = f"promoting the canary to 100% failed: {err}"
                else:
                    return self._await_ready(context, target, promoted, plan)
        if failure:
            return self._failed(context, target, deployment, plan, failure)
        return self._succeeded(target, deployment, plan, changed=True)

    def _not_ready(
        self,
        context: Context,
        target: DeployTarget,
        deployment: Deployment,
        plan: dict[str, Any],
        message: str,
    ) -> dict[str, Any]:
        if plan["phase"] == "rollback":
            return self._rolled_back(target, deployment, plan, f"not ready: {message}")
        return self._failed(context, target, deployment, plan, f"not ready: {message}")

    def _check(
        self,
        target: DeployTarget,
        deployment: Deployment,
        records: list[dict[str, Any]],
        canary: bool = False,
    ) -> str | None:
        """None if *deployment* passes the health check and the smoke test, else why not."""
        health = target.health(deployment)
        if not health.ok:
            return f"health check failed: {health.message}"
        if records:
            predict = target.predict_canary if canary else target.predict
            try:
                predictions = predict(deployment, records, timeout=self.request_timeout)
            except PredictionError as err:
                details = target.diagnostics(deployment)
                return f"smoke test failed: {err}" + (f"\n{details}" if details else "")
            if len(predictions) != len(records):
                return f"smoke test failed: {len(records)} rows sent, {len(predictions)} predictions received"
        self.log.info(
            "Verified %s: %s; smoke test: %s rows", deployment.endpoint, health.message, len(records)
        )
        return None

    def _bake(
        self, target: DeployTarget, deployment: Deployment, records: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """
        Send one sample row every ``bake_interval`` seconds to the canary for ``bake_seconds`` (at least one
        request) and judge error rate and p95 latency. With ``max_error_rate`` 0 the first error ends it.
        """
        endpoint = target.canary_endpoint(deployment)
        self.log.info(
            "Baking version %s at %s for %ss (one request every %ss)",
            deployment.version, endpoint, self.bake_seconds, self.bake_interval,
        )  # fmt: skip
        deadline = time.monotonic() + self.bake_seconds
        latencies: list[float] = []
        errors, last_error = 0, ""
        while True:
            record = records[len(latencies) % len(records)]
            started = time.perf_counter()
            try:
                predictions = target.predict_canary(deployment, [record], timeout=self.request_timeout)
                if len(predictions) != 1:
                    raise PredictionError(f"1 row sent, {len(predictions)} predictions received")
            except PredictionError as err:
                errors, last_error = errors + 1, str(err)
            latencies.append((time.perf_counter() - started) * 1000)
            if (errors and not self.max_error_rate) or time.monotonic() + self.bake_interval > deadline:
                break
            time.sleep(self.bake_interval)
        requests = len(latencies)
        result: dict[str, Any] = {
            "canary_percent": deployment.details.get("canary_traffic_percent"),
            "endpoint": endpoint,
            "requests": requests,
            "errors": errors,
            "error_rate": round(errors / requests, 4),
            "p95_ms": round(percentile(latencies, 95), 2),
            "max_error_rate": self.max_error_rate,
            "max_latency_ms": self.max_latency_ms,
        }
        if result["error_rate"] > self.max_error_rate:
            result["failure"] = (
                f"canary bake failed: error rate {result['error_rate']} > max_error_rate {self.max_error_rate} "
                f"({errors} of {requests} requests); last error: {last_error[:_ERROR_MAX]}"
            )
            details = target.diagnostics(deployment)
            if details:
                result["failure"] += f"\n{details}"
        elif self.max_latency_ms is not None and result["p95_ms"] > self.max_latency_ms:
            result["failure"] = (
                f"canary bake failed: p95 latency {result['p95_ms']} ms > max_latency_ms {self.max_latency_ms} "
                f"({requests} requests)"
            )
        return result

    def _succeeded(
        self, target: DeployTarget, deployment: Deployment, plan: dict[str, Any], changed: bool
    ) -> dict[str, Any]:
        name, version = plan["model_name"], plan["version"]
        self._move_alias(name, version)
        previous_version = plan["previous"]["version"] if plan["previous"] else None
        self._record(
            plan, version, "succeeded", plan["reason"], deployment, previous_version=previous_version
        )
        self.log.info("Version %s of model %s serves at %s", version, name, deployment.endpoint)
        return {
            "model_name": name,
            "version": version,
            "previous_version": previous_version,
            "target": target.config_kind(),
            "endpoint": deployment.endpoint,
            "action": self.action,
            "outcome": "succeeded",
            "changed": changed,
            **({"bake": plan["bake"]} if plan.get("bake") else {}),
        }

    def _failed(
        self,
        context: Context,
        target: DeployTarget,
        deployment: Deployment,
        plan: dict[str, Any],
        failure: str,
    ) -> dict[str, Any]:
        name, version = plan["model_name"], plan["version"]
        self.log.error("Version %s of model %s failed verification: %s", version, name, failure)
        self._record(plan, version, "failed", failure, deployment)
        client = self.hook.client
        client.set_model_version_tag(
            name, version, T.ROLLBACK_REASON, f"automatic rollback: {failure}"[:5000]
        )
        previous = Deployment.from_dict(plan["previous"]) if plan["previous"] else None
        if previous is None:
            target.stop(name)
            self._restore_alias(plan)
            raise DeploymentVerificationError(
                f"Version {version} of model {name!r} failed verification on target {target.config_kind()}: "
                f"{failure}. Nothing served this model before, so it is no longer served at all."
            )
        self.log.warning("Rolling back model %s to version %s", name, previous.version)
        plan = {**plan, "phase": "rollback", "failure": failure, "failed_version": version}
        try:
            restored = target.rollback(name, previous)
        except DeploymentError as err:
            return self._rolled_back(target, previous, plan, f"rollback refused: {err}")
        return self._await_ready(context, target, restored, plan)

    def _rolled_back(
        self, target: DeployTarget, deployment: Deployment, plan: dict[str, Any], failure: str | None
    ) -> dict[str, Any]:
        """End of an automatic rollback: always raises, saying what serves now."""
        name, failed_version = plan["model_name"], plan["failed_version"]
        previous = plan["previous"]
        rollback_plan = {
            **plan,
            "reason": f"automatic rollback from version {failed_version}: {plan['failure']}",
        }
        if failure:
            self._record(rollback_plan, previous["version"], "failed", f"{rollback_plan['reason']}; {failure}",
                         deployment, action="auto_rollback", previous_version=failed_version)  # fmt: skip
            raise DeploymentError(
                f"Version {failed_version} of model {name!r} failed verification ({plan['failure']}), and rolling "
                f"back to version {previous['version']} failed too: {failure}. The endpoint "
                f"{deployment.endpoint or ''} may not serve; check the target ({target.describe()})."
            )
        self._move_alias(name, previous["version"])
        self._record(rollback_plan, previous["version"], "succeeded", rollback_plan["reason"], deployment,
                     action="auto_rollback", previous_version=failed_version)  # fmt: skip
        raise DeploymentVerificationError(
            f"Version {failed_version} of model {name!r} failed verification on target {target.config_kind()}: "
            f"{plan['failure']}. Rolled back: version {previous['version']} serves again at {deployment.endpoint}"
            + (f" and alias {self.alias!r} points at it." if self.alias else ".")
        )

    # -- registry ------------------------------------------------------------------------------------------

    def _move_alias(self, name: str, version: str) -> None:
        if not self.alias:
            return
        client = self.hook.client
        if get_alias_version(client, name, self.alias) != int(version):
            client.set_registered_model_alias(name, self.alias, str(version))
            self.log.info("Alias %s of model %s now points at version %s", self.alias, name, version)

    def _restore_alias(self, plan: Mapping[str, Any]) -> None:
        """After a failure: the alias goes back to what serves (the previous deployment), if it moved."""
        if not self.alias:
            return
        name, version = plan["model_name"], plan["version"]
        client = self.hook.client
        if get_alias_version(client, name, self.alias) != int(version):
            return
        if plan["previous"]:
            self._move_alias(name, plan["previous"]["version"])
            return
        mv = client.get_model_version(name, str(version))
        earlier = (mv.tags or {}).get(T.PREVIOUS_CHAMPION)
        if earlier and earlier.isdigit():
            self._move_alias(name, earlier)
        else:
            client.delete_registered_model_alias(name, self.alias)
            self.log.info("Removed alias %s of model %s: no version serves", self.alias, name)

    def _record(
        self,
        plan: Mapping[str, Any],
        version: str,
        outcome: str,
        reason: str,
        deployment: Deployment | None,
        *,
        action: str | None = None,
        previous_version: str | None = None,
    ) -> None:
        from airflow_mlops.lineage.deployments import append_entry

        target = plan["target"]
        entry = {
            "time": utc_now(),
            "action": action or self.action,
            "version": str(version),
            "outcome": outcome,
            "target": target.get("kind"),
            "endpoint": deployment.endpoint if deployment else "",
            "actor": plan["actor"],
            "reason": reason or "",
            "previous_version": previous_version,
            "verify": plan["verify"],
            "airflow": plan["airflow"],
        }
        if plan.get("bake") and str(version) == str(plan["version"]):
            entry["bake"] = {k: v for k, v in plan["bake"].items() if k != "failure"}
        append_entry(self.hook.client, plan["model_name"], entry, target if outcome == "succeeded" else None)


class RollbackModelOperator(DeployModelOperator):
    """
    Roll a model back to an earlier version: redeploy it on the same target, verify it, move the alias.

    The version is the one given, or (empty) the previous champion: the last version that served
    successfully before the one serving now, from the registry's deployment history. The target is the one
    the model was last deployed to (``mlops.deployment.target``) unless given. Verification is the same as
    :class:`DeployModelOperator`'s (the smoke-test settings of the last deployment are reused unless
    ``sample_data`` is given), and if the restored version fails it, the target goes back to what served.
    The history records who (the user who triggered the run), why (*reason*) and when; the version rolled
    away from gets ``mlops.rollback.reason``.

    :param model_name: Registered model name (templated).
    :param reason: Why the rollback is done (required, templated).
    :param version: Version to roll back to (templated); None or "" is the previous champion.
    :param target: Deploy target; None uses the one recorded in the registry. (templated)
    :param sample_data: Smoke-test rows (templated); None reuses those of the last deployment.
    :param kwargs: The other arguments of :class:`DeployModelOperator`.
    :raises DeploymentError: if the model has no deployment history, or the version already serves.
    :raises RegistryError: if the version does not exist.
    """

    action = "rollback"
    ui_color = "#ffebee"

    def __init__(
        self,
        *,
        model_name: str,
        reason: str,
        version: int | str | None = None,
        target: DeployTarget | dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(reason, str) or not (reason.strip() or is_templated(reason)):
            raise ValueError(
                "reason is required: say why the model is rolled back (it is recorded in the registry)"
            )
        super().__init__(model_name=model_name, version=version, target=target, reason=reason, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.lineage.deployments import (
            last_target_config,
            previous_serving_version,
            read_history,
        )

        name = validate_model_name(self.model_name)
        reason = str(self.reason or "").strip()
        if not reason:
            raise ValueError(
                f"Rollback of model {name!r}: reason is empty; say why the model is rolled back (it is recorded)"
            )
        client = self.hook.client
        history = read_history(client, name)
        config = self.target or last_target_config(client, name)
        if not history or config is None:
            raise DeploymentError(
                f"Model {name!r} has no deployment history in the registry (tag {T.DEPLOYMENTS}): there is "
                "nothing to roll back. Deploy it with DeployModelOperator first."
            )
        target = self._target(config)
        current = target.current(name)
        serving = current.version if current else None
        if self.version not in (None, ""):
            version = self._version(client, name, self.version)
        else:
            found = previous_serving_version(history, serving)
            if found is None:
                raise DeploymentError(
                    f"Model {name!r} has no earlier version that served before version {serving}: give the "
                    "version to roll back to."
                )
            version = self._version(client, name, found)
        model_uri = target.resolve_model_uri(client, name, version)
        if current is not None and current.version == version and current.model_uri == model_uri:
            aliased = get_alias_version(client, name, self.alias) if self.alias else None
            if current.ready and target.health(current).ok and (not self.alias or aliased == int(version)):
                raise DeploymentError(
                    f"Version {version} of model {name!r} already serves at {current.endpoint}: nothing to roll "
                    "back, nothing changed. Give another version."
                )
        verify = self._verify_settings() if self.sample_data else self._last_verify(client, name, serving)
        self._records(verify)  # bad sample data fails here, before anything changes
        plan = self._plan(context, name, version, model_uri, target, current, verify, reason)
        result = self._switch(context, target, plan)
        if serving and serving != version:
            client.set_model_version_tag(
                name, serving, T.ROLLBACK_REASON, f"rolled back to version {version}: {reason}"[:5000]
            )
        return result

    def _last_verify(self, client: MlflowClient, name: str, serving: str | None) -> dict[str, Any]:
        """The smoke-test settings the serving version was deployed with (none known: health check only)."""
        from airflow_mlops.lineage.deployments import read_version_history

        if serving:
            for entry in reversed(read_version_history(client, name, serving)):
                if entry.get("outcome") == "succeeded" and isinstance(entry.get("verify"), dict):
                    return entry["verify"]
        return self._verify_settings()
