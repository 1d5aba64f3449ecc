"""
Serving operators: infra-validate a candidate, deploy a version, roll back on request.

Deploying verifies the version and rolls back automatically if it fails.

All three work on any :class:`~airflow_mlops.serving.base.DeployTarget` (``"local"``, ``"kserve"``, or a
user's own), given as a target object, a config dict (``{"kind": "local", "port": 5001}``) or a kind name.
The operators check arguments, build the hook and the target, and hand a release plan to
:mod:`airflow_mlops.serving.release` (switch, await readiness, verify, bake, roll back, record). The checks
live in :mod:`airflow_mlops.serving.verification`, the canary policy and its bake in
:mod:`airflow_mlops.serving.canary`, and the deployment history written to the MLflow registry in
:mod:`airflow_mlops.lineage.deployments`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

from airflow.sdk import BaseOperator

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    ConfigurationError,
    DeploymentError,
    InfraValidationError,
    ModelVersionNotFoundError,
)
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.operators.base import ModelOperatorMixin, rendered_arguments
from airflow_mlops.registry import (
    check_release_allowed,
    get_alias_version,
    get_model_version,
    parse_version,
    tag_value,
    validate_model_name,
)
from airflow_mlops.results import model_version, snapshot_uri
from airflow_mlops.serving.base import (
    DEFAULT_SAMPLE_ROWS,
    DEFAULT_SMOKE_ROWS,
    ERROR_MAX,
    DeployTarget,
    canary_percent_for,
    target_from_config,
)
from airflow_mlops.serving.waiting import still_in_progress, wait_seconds
from airflow_mlops.signing import record_keys
from airflow_mlops.utils.clock import utc_now_iso
from airflow_mlops.utils.config import approval_required, release_wait_timeout
from airflow_mlops.utils.results import keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import conf

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger
    from mlflow import MlflowClient

    from airflow_mlops.results import DeploymentResult, InfraValidationSummary
    from airflow_mlops.serving.canary import CanaryPolicy
    from airflow_mlops.serving.record import ReleaseRecord
    from airflow_mlops.serving.release import Release
    from airflow_mlops.serving.status import Deployment
    from airflow_mlops.serving.verification import SmokeTest, percentile, sample_records

__all__ = [
    "CanaryPolicy",
    "DeployModelOperator",
    "InfraValidateOperator",
    "RollbackModelOperator",
    "percentile",
    "sample_records",
]

#: Names re-exported from their modules on first use: the canary and the checks run only in ``execute``.
_LAZY = {
    "CanaryPolicy": "airflow_mlops.serving.canary",
    "percentile": "airflow_mlops.serving.verification",
    "sample_records": "airflow_mlops.serving.verification",
}


def __getattr__(name: str) -> Any:
    """Load the canary policy and the checks when first named."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The loose canary arguments of earlier releases, now fields of ``canary=CanaryPolicy(...)``.
_OLD_CANARY_ARGUMENTS = {
    "canary_percent": "percent",
    "bake_seconds": "bake_seconds",
    "bake_interval": "interval",
    "max_error_rate": "max_error_rate",
    "max_latency_ms": "max_p95_ms",
}


# -- argument checks (parse time) --------------------------------------------------------------------------


def _check_target(target: Any, field: str = "target") -> None:
    """Check a literal ``target`` at DAG-parse time; a template or an XComArg is checked in execute."""
    if target is None or isinstance(target, DeployTarget) or is_templated(target):
        return
    if not isinstance(target, str | Mapping):
        raise ValueError(
            f"{field} must be a DeployTarget, a config dict like {{'kind': 'local', 'port': 5001}}, or a kind "
            f"name ('local', 'kserve'); got {type(target).__name__}"
        )
    target_from_config(target)  # raises ValueError naming the bad setting


def _check_columns(drop_columns: Any) -> list[str] | None:
    """*drop_columns* as a list (None stays None); a template or XComArg is left for execute."""
    if drop_columns is None or is_templated(drop_columns):
        return None
    if (
        isinstance(drop_columns, str | Mapping)
        or not isinstance(drop_columns, Sequence)
        or not all(isinstance(c, str) for c in drop_columns)
    ):
        raise ValueError(f"drop_columns must be a list of column names, got {drop_columns!r}")
    return list(drop_columns)


def _check_sample_data(sample_data: Any) -> str:
    if not isinstance(sample_data, str) or not sample_data.strip():
        raise ValueError(
            "sample_data must be a snapshot URI to draw requests from, e.g. '<snapshot-uri>#holdout'; "
            f"got {sample_data!r}"
        )
    return sample_data.strip()


def _check_rows(rows: Any, field: str) -> None:
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"{field} must be a positive integer, got {rows!r}")


class _ServingOperator(ModelOperatorMixin, BaseOperator):
    """What the serving operators share: the MLflow hook, the target, the version check."""

    model_name: str
    mlflow_conn_id: str
    aws_conn_id: str | None
    request_timeout: float

    def _target(self, config: Any) -> DeployTarget:
        try:
            return target_from_config(config)
        except ValueError as err:
            raise ConfigurationError(
                f"Task {self.task_id!r}: invalid deploy target {config!r}: {err}"
            ) from err

    def _model_name(self) -> str:
        with rendered_arguments():
            return validate_model_name(self.model_name)

    def _take_whole_results(self) -> None:
        """Other tasks' whole results, rendered: a registration's for the version, an ingest's for the rows."""
        with rendered_arguments(model=str(self.model_name)):
            self.version = model_version(getattr(self, "version", None), "version", self.model_name)
            # The holdout split of an ingest's snapshot; the whole snapshot when it has no splits.
            self.sample_data = snapshot_uri(
                getattr(self, "sample_data", None), "sample_data", "holdout", whole=True
            )

    def _version(self, client: MlflowClient, name: str, version: Any) -> str:
        """*version* as a string after checking the registry has it (else ModelVersionNotFoundError)."""
        with rendered_arguments(model=name):
            number = parse_version(version, name)
        get_model_version(client, name, number)
        self.link_model_version(name, number)
        return str(number)


# -- infra validation --------------------------------------------------------------------------------------


class InfraValidateOperator(_ServingOperator):
    """
    Check that a model version can serve before it is promoted (like TFX's InfraValidator).

    Starts the version in a sandbox of the target (a model server on a spare local port for ``local``, a
    separate one-replica ``InferenceService`` for ``kserve``), sends it rows of a snapshot (one request per
    row, then one request with all rows), checks every answer (HTTP 200, one prediction per row) and the p95
    latency, and always removes the sandbox. The outcome is written to the version's tags
    ``mlops.infra_validation.passed`` and ``mlops.infra_validation.summary``. On the ``local`` target a sandbox
    dies with the task process, and one a killed try left is stopped by the next sandbox of the model (each
    is recorded, with its pid and port, before it starts).

    Returns (XCom) an :class:`~airflow_mlops.results.InfraValidationSummary`, ``{"model_name", "version",
    "model_uri", "target", "passed", "requests", "rows", "time", "latency_ms": {"p50", "p95", "max"}}``.

    :param model_name: Registered model name (templated).
    :param version: Version to validate (templated), or a result naming it (``register.output``).
    :param sample_data: Snapshot URI the requests are drawn from (templated), e.g. ``<snapshot>#holdout``,
        or an ingest's whole result (``ingest.output``: its ``holdout`` split, else the whole snapshot).
    :param target: Deploy target (a :class:`DeployTarget`, a config dict, or a kind name); the sandbox runs
        where the model will serve. (templated)
    :param drop_columns: Columns removed before sending (the label). (templated)
    :param sample_rows: How many rows to send.
    :param max_latency_ms: Fail if the p95 latency of the single-row requests exceeds this; None: no limit.
    :param request_timeout: Seconds one request may take.
    :param mlflow_conn_id: MLflow connection.
    :param aws_conn_id: ``aws`` connection for an ``s3://`` sample snapshot.
    :raises InfraValidationError: if the sandbox does not start or an answer is wrong, with the server's
        error (its answer and its log) in the message (not retryable).
    :raises ModelVersionNotFoundError: if the version does not exist (not retryable).
    """

    template_fields: Sequence[str] = (
        "model_name", "version", "sample_data", "target", "drop_columns", "mlflow_conn_id", "aws_conn_id",
    )  # fmt: skip
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
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        if not is_templated(model_name):
            validate_model_name(model_name)
        known_name = None if is_templated(model_name) else model_name
        if not is_templated(version):
            parse_version(model_version(version, "version", known_name), str(model_name))
        if not is_templated(sample_data):
            _check_sample_data(snapshot_uri(sample_data, "sample_data", "holdout", whole=True))
        _check_columns(drop_columns)
        _check_rows(sample_rows, "sample_rows")
        if max_latency_ms is not None and (
            not isinstance(max_latency_ms, int | float) or max_latency_ms <= 0
        ):
            raise ValueError(f"max_latency_ms must be a positive number or None, got {max_latency_ms!r}")
        self.model_name = model_name
        self.version = version
        self.sample_data = sample_data
        _check_target(target)
        self.target = target
        self.drop_columns = drop_columns
        self.sample_rows = sample_rows
        self.max_latency_ms = max_latency_ms
        self.request_timeout = request_timeout
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self._sandbox: tuple[DeployTarget, Deployment] | None = None

    @keep_result
    def execute(self, context: Context) -> InfraValidationSummary:
        name = self._model_name()
        self._take_whole_results()
        target = self._target(self.target)
        with rendered_arguments(model=name):
            sample_data = _check_sample_data(self.sample_data)
            drop_columns = _check_columns(self.drop_columns)
        client = self.hook.client
        version = self._version(client, name, self.version)
        model_uri = target.resolve_model_uri(client, name, version)
        from airflow_mlops.serving.verification import (
            RequestFailedError,
            exercise,
            latency_summary,
            model_columns,
            sample_records,
        )

        # Exactly the columns the model takes (its signature); without one, all but drop_columns.
        columns = model_columns(f"models:/{name}/{version}")
        records = sample_records(sample_data, drop_columns, self.sample_rows, self.aws_conn_id, columns)
        where = f"Version {version} of model {name!r}"
        summary: dict[str, Any] = {
            "model_name": name,
            "version": version,
            "model_uri": model_uri,
            "target": target.config_kind(),
            "rows": len(records),
            "requests": 0,
            "time": utc_now_iso(),
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
                    summary["requests"] = exercise(
                        target, sandbox, records, timeout=self.request_timeout, latencies=latencies
                    )
                except RequestFailedError as err:
                    summary["requests"] = err.requests
                    details = target.diagnostics(sandbox)
                    raise InfraValidationError(
                        f"{where} cannot serve on target {target.config_kind()}: {err}"
                        + (f"\n{details}" if details else ""),
                        model=name,
                        version=version,
                        reason=str(err),
                    ) from err
        except InfraValidationError as err:
            self._record(client, summary, passed=False, error=str(err))
            raise
        except (DeploymentError, NotImplementedError) as err:
            self._record(client, summary, passed=False, error=str(err))
            raise InfraValidationError(
                f"{where} cannot serve on target {target.config_kind()}: {err}",
                model=name,
                version=version,
                reason=str(err),
            ) from err
        finally:
            self._sandbox = None
        summary["latency_ms"] = latency_summary(latencies)
        p95 = summary["latency_ms"]["p95"]
        if self.max_latency_ms is not None and p95 > self.max_latency_ms:
            message = (
                f"{where} answers too slowly on target {target.config_kind()}: "
                f"p95 latency {p95} ms > max_latency_ms {self.max_latency_ms} ({len(latencies)} requests)"
            )
            self._record(client, summary, passed=False, error=message)
            raise InfraValidationError(message, model=name, version=version, reason="too slow")
        self._record(client, summary, passed=True)
        self.log.info("Version %s of model %s served every request: %s", version, name, summary["latency_ms"])
        return cast("InfraValidationSummary", {**summary, "passed": True})

    def on_kill(self) -> None:
        sandbox = self._sandbox
        if sandbox is not None:
            target, deployment = sandbox
            self.log.info("Task killed: stopping the infra-validation sandbox of %s", deployment.endpoint)
            target.stop_sandbox(deployment)

    def _record(self, client: MlflowClient, summary: dict[str, Any], passed: bool, error: str = "") -> None:
        values = {**summary, "passed": passed, **({"error": error[:ERROR_MAX]} if error else {})}
        name, version = summary["model_name"], summary["version"]
        client.set_model_version_tag(name, version, T.INFRA_VALIDATION_PASSED, "true" if passed else "false")
        client.set_model_version_tag(name, version, T.INFRA_VALIDATION_SUMMARY, tag_value(values)[:5000])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The model version served in the sandbox and the rows sent to it, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import infra_validation_lineage
        from airflow_mlops.utils.results import kept_result

        return infra_validation_lineage(kept_result(self), self.hook.registry_uri, self.sample_data)


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
      with :class:`DeploymentVerificationError` (not retryable) giving the reason. With no previous
      deployment the target stops serving the model. If the target refuses the deploy itself (a port in use,
      a URI it cannot read), nothing changed: only the alias is moved back and :class:`DeploymentError` is
      raised (retryable, unless the refusal is final: :class:`DeploymentRejectedError`).

    The steps run in :class:`~airflow_mlops.serving.release.Release`, from a JSON plan that also carries a
    deferred wait through the triggerer; this operator checks the arguments and builds the plan.

    Canary flow (targets with ``supports_canary``: the local target's proxy, KServe's ``canaryTrafficPercent``):
    when the :class:`~airflow_mlops.serving.canary.CanaryPolicy` ``canary`` gives a percent N (else the target's
    own setting) and a previous version serves, the version is deployed at N% of the traffic, verified, then
    **baked**: where its traffic is captured (the target's capture, or ``capture_uri``) the task defers
    (:class:`~airflow_mlops.triggers.canary.CanaryBakeTrigger`) and the canary's live requests are judged
    against the baseline's (:func:`~airflow_mlops.serving.canary.judge_canary`); elsewhere probe requests are
    (:func:`~airflow_mlops.serving.canary.bake`). Passing promotes it to 100% (verified again); failing, or
    an inconclusive bake after its extension, rolls back as above. The bake result is in the history entry.

    Safe to retry: a version that already serves (and answers) is not redeployed, and a task instance never
    writes the same history entry twice.

    Returns (XCom) a :class:`~airflow_mlops.results.DeploymentResult`, ``{"model_name", "version",
    "previous_version", "target", "endpoint", "action", "outcome", "changed"}`` (plus ``"bake"`` after a
    canary rollout).

    :param model_name: Registered model name (templated).
    :param version: Version to deploy (templated), or a result naming it (``register.output``); None deploys
        the version ``alias`` points at.
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
    :param deferrable: Wait for readiness in the triggerer (targets with a trigger, e.g. KServe); default
        ``[operators] default_deferrable``.
    :param canary: The canary policy: a :class:`~airflow_mlops.serving.canary.CanaryPolicy` or a dict of its
        fields (``{"percent": 10, "bake_seconds": 600, "max_error_rate": 0.01}``); None: the defaults (a
        canary only if the target sets a percent). A canary needs ``sample_data`` and a target that supports
        canaries.
    :param capture_uri: Data root whose ``captures/`` hold the target's served requests (templated), for a
        canary judged on live traffic; default the target's own capture root (the local target's
        ``capture``). A KServe target's captures land where its capture receiver writes them: give that root.
    :param mlflow_conn_id: MLflow connection.
    :param aws_conn_id: ``aws`` connection for an ``s3://`` sample snapshot.
    :param wait_for_release: How long to wait, deferred (no worker slot held), when another task instance's
        release of the model is in progress: a ``timedelta`` or seconds; then everything is planned and
        checked again from what serves by then (:mod:`airflow_mlops.serving.waiting`). 0 (the default here)
        does not wait: :class:`~airflow_mlops.exceptions.ReleaseInProgressError` at once, which ``retries``
        repeat; None: ``[mlops] release_wait_timeout``.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "version",
        "target",
        "sample_data",
        "drop_columns",
        "reason",
        "mlflow_conn_id",
        "aws_conn_id",
        "capture_uri",
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
        canary: CanaryPolicy | Mapping[str, Any] | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        wait_for_release: timedelta | float | None = 0,
        capture_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        old = sorted(set(kwargs) & set(_OLD_CANARY_ARGUMENTS))
        if old:
            moved = ", ".join(f"{key}= -> {_OLD_CANARY_ARGUMENTS[key]}=" for key in old)
            raise ValueError(
                f"{', '.join(old)}: the canary settings are one argument now, "
                f"canary=CanaryPolicy(...) (from airflow_mlops.serving.canary) or a dict ({moved})"
            )
        super().__init__(**keyed_results(kwargs))
        if not is_templated(model_name):
            validate_model_name(model_name)
        self.canary: CanaryPolicy | None = None  # None: the default policy (the target's own canary percent)
        if canary is not None:
            from airflow_mlops.serving.canary import CanaryPolicy

            self.canary = CanaryPolicy.coerce(canary)
        known_name = None if is_templated(model_name) else model_name
        if version not in (None, "") and not is_templated(version):
            parse_version(model_version(version, "version", known_name), str(model_name))
        literal_sample = sample_data is not None and not is_templated(sample_data)
        if literal_sample and not isinstance(
            snapshot_uri(sample_data, "sample_data", "holdout", whole=True), str
        ):
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
        _check_target(target)
        self.target = target
        self.sample_data = sample_data
        self.drop_columns = drop_columns
        self.smoke_rows = smoke_rows
        self.alias = alias
        self.reason = reason
        self.ready_timeout = float(ready_timeout)
        self.request_timeout = request_timeout
        self.deferrable = deferrable
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self.wait_for_release = wait_seconds(wait_for_release)
        self.capture_uri = capture_uri
        self._release_deadline: float | None = None  # set when resumed after waiting for another release
        if self.action == "deploy" and self.target is not None and not is_templated(self.target):
            self._canary_of(target_from_config(self.target), sample_data)

    def _canary_of(self, target: DeployTarget | None, sample_data: Any) -> int | None:
        """The canary percent this deployment uses (None: no canary); ValueError if the target cannot do it."""
        if target is None:
            return None
        percent = canary_percent_for(self.canary.percent if self.canary else None, target)
        if percent is None:
            return None
        if not target.supports_canary:
            raise ValueError(
                f"Task {self.task_id!r}: deploy target {target.config_kind()} cannot roll out a canary "
                f"(canary percent {percent}); use a target that supports canaries (e.g. kserve) or leave "
                "the canary percent unset"
            )
        if not sample_data:
            raise ValueError(
                f"Task {self.task_id!r}: a canary rollout ({percent}%) is baked with requests from sample_data; "
                "give sample_data (e.g. '<snapshot-uri>#holdout') or leave the canary percent unset"
            )
        return percent

    # -- planning ------------------------------------------------------------------------------------------

    def _resolve_version(self, client: MlflowClient, name: str) -> str:
        if self.version not in (None, ""):
            return self._version(client, name, self.version)
        if not self.alias:
            raise ConfigurationError(
                f"Task {self.task_id!r}: give version, or an alias to deploy the version it points at",
                model=name,
            )
        aliased = get_alias_version(client, name, self.alias)
        if aliased is None:
            raise ModelVersionNotFoundError(
                f"Model {name!r} has no alias {self.alias!r} to deploy: give the version to deploy, or promote one",
                model=name,
            )
        return self._version(client, name, aliased)

    def _smoke_test(self) -> SmokeTest:
        from airflow_mlops.serving.verification import SmokeTest

        with rendered_arguments():
            if self.sample_data is not None and not isinstance(self.sample_data, str):
                raise ValueError(f"sample_data must be a snapshot URI or None, got {self.sample_data!r}")
            drop_columns = _check_columns(self.drop_columns)
            return SmokeTest.from_dict(
                {"sample_data": self.sample_data, "drop_columns": drop_columns, "rows": self.smoke_rows}
            )

    def _plan(
        self,
        context: Context,
        name: str,
        version: str,
        model_uri: str,
        target: DeployTarget,
        previous: Deployment | None,
        verify: SmokeTest,
        reason: str,
    ) -> dict[str, Any]:
        """The release plan (:func:`~airflow_mlops.serving.release.new_plan`), after checking its canary."""
        from airflow_mlops.lineage.deployments import actor_of
        from airflow_mlops.serving.release import new_plan
        from airflow_mlops.utils.context import airflow_ids

        canary = None
        if previous is not None and self.action == "deploy":  # a canary needs a version beside it
            with rendered_arguments(model=name, version=version):
                canary = self._canary_of(target, verify.sample_data)
        return new_plan(
            model_name=name,
            version=version,
            model_uri=model_uri,
            target=target,
            previous=previous,
            verify=verify,
            reason=reason,
            actor=actor_of(context),
            airflow=airflow_ids(context),
            canary=canary,
        )

    def _release(self, target: DeployTarget, context: Context) -> Release:
        """The release logic on *target*, with this task's settings, logger, deferral and try."""
        from airflow_mlops.serving.release import Release, ReleaseSettings
        from airflow_mlops.utils.context import airflow_ids

        settings = ReleaseSettings(
            action=self.action,
            alias=self.alias,
            ready_timeout=self.ready_timeout,
            request_timeout=self.request_timeout,
            deferrable=self.deferrable,
            canary=self.canary,
            aws_conn_id=self.aws_conn_id,
            capture_uri=str(self.capture_uri) if self.capture_uri else None,
        )
        client = self.hook.client
        keys = record_keys()
        required = approval_required()
        action = "deploy" if self.action == "deploy" else "roll back to"
        return Release(
            target,
            client,
            settings,
            log=self.log,
            defer=self._defer,
            try_number=airflow_ids(context).get("try_number"),
            keys=keys,
            allowed=lambda name, version: check_release_allowed(
                client, name, version, action, required=required, keys=keys
            ),
        )

    def _guarded(self, context: Context, release: Release, name: str, run: Callable[[], Any]) -> Any:
        """
        Run the release; if it fails for good, end its record and point the alias at what serves.

        For good: a not-retryable error, or any error on the task's last try.
        """
        from airflow_mlops.exceptions import ReleaseInProgressError
        from airflow_mlops.version_compat import AirflowFailException

        try:
            return run()
        except ReleaseInProgressError:
            raise  # another task's release: not ours to end
        except Exception as err:
            ti = context.get("ti")
            last_try = ti is None or int(getattr(ti, "try_number", 1) or 1) > int(self.retries or 0)
            if not getattr(err, "retryable", True) or isinstance(err, AirflowFailException) or last_try:
                try:
                    release.abandon(name, err)
                except Exception:
                    self.log.exception("Could not end the release record of model %s after the failure", name)
            raise

    def _resume_or_repeat(self, release: Release, record: ReleaseRecord) -> dict[str, Any]:
        """Finish the release an earlier try of this task instance left, or give its outcome again."""
        if record.done:
            return release.repeat(record)
        return release.resume_record(record)

    def _defer(self, trigger: BaseTrigger, plan: dict[str, Any]) -> None:
        self.defer(trigger=trigger, method_name="execute_complete", kwargs={"plan": plan})

    def _check_free(self, release: Release, last: ReleaseRecord | None, rid: str) -> ReleaseRecord | None:
        """
        Check no other release is live (:meth:`~airflow_mlops.serving.release.Release.check_free`), or wait.

        While another task instance's release is live, defer until it ends, up to ``wait_for_release`` (one
        absolute deadline however often this defers), then plan again (:meth:`execute_after_release`). At
        the deadline, a release still live fails this task (:func:`~airflow_mlops.serving.waiting.still_in_progress`).
        """
        from airflow_mlops.exceptions import ReleaseInProgressError

        try:
            return release.check_free(last, rid)
        except ReleaseInProgressError:
            bound = self.wait_for_release if self.wait_for_release is not None else release_wait_timeout()
            if last is None or bound <= 0:
                raise
            deadline = self._release_deadline or time.time() + bound
            if time.time() >= deadline:
                raise still_in_progress(last, bound, self.action) from None
            self._wait_for_release(last, deadline)

    def _wait_for_release(self, last: ReleaseRecord, deadline: float) -> NoReturn:
        from airflow_mlops.triggers.release import ReleaseFinishedTrigger

        self.log.warning(
            "Model %s is being released by another task (%s): waiting for it to end, deferred, for up to %.0f s",
            last.model_name, last.describe(), deadline - time.time(),
        )  # fmt: skip
        trigger = ReleaseFinishedTrigger(
            model_name=last.model_name,
            release_id=last.id,
            deadline=deadline,
            mlflow_conn_id=self.mlflow_conn_id,
        )
        self.defer(trigger=trigger, method_name="execute_after_release", kwargs={"deadline": deadline})

    @keep_result
    def execute_after_release(
        self, context: Context, event: dict[str, Any] | None = None, deadline: float | None = None
    ) -> DeploymentResult:
        """Resume after another release ended (or its lease or the wait's deadline passed): plan again."""
        if not event:
            raise DeploymentError(f"Task {self.task_id!r} resumed without a trigger event; run it again")
        if event.get("status") == "error":
            from airflow_mlops.exceptions import ServiceUnavailableError

            raise ServiceUnavailableError(f"Task {self.task_id!r}: {event.get('message')}")
        self.log.info("Planning again: %s", event.get("message"))
        self._release_deadline = float(deadline or event["deadline"])
        return self.execute(context)

    @keep_result
    def execute(self, context: Context) -> DeploymentResult:
        from airflow_mlops.serving.record import release_id
        from airflow_mlops.utils.context import airflow_ids

        name = self._model_name()
        self._take_whole_results()
        if self.target is None:
            raise ConfigurationError(f"Task {self.task_id!r}: give the deploy target", model=name)
        target = self._target(self.target)
        release = self._release(target, context)
        rid = release_id(airflow_ids(context))
        last = release.last(name, rid)
        if last is not None and last.id == rid:
            result = self._guarded(context, release, name, lambda: self._resume_or_repeat(release, last))
        else:
            result = self._guarded(
                context, release, name, lambda: self._new_release(context, release, rid, last)
            )
        return cast("DeploymentResult", result)

    def _new_release(
        self, context: Context, release: Release, rid: str, last: ReleaseRecord | None
    ) -> dict[str, Any]:
        name, target, client = self._model_name(), release.target, release.client
        version = self._resolve_version(client, name)
        check_release_allowed(
            client, name, version, "deploy", required=approval_required(), keys=release.keys
        )
        model_uri = target.resolve_model_uri(client, name, version)
        verify = self._smoke_test().for_model(f"models:/{name}/{version}")  # the columns the model takes
        verify.records(self.aws_conn_id)  # bad sample data fails here, before anything changes
        abandoned = self._check_free(release, last, rid)
        previous = _previous(target.current(name), abandoned)
        plan = self._plan(context, name, version, model_uri, target, previous, verify, str(self.reason or ""))
        return release.start(plan, rid)

    @keep_result
    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, plan: dict[str, Any] | None = None
    ) -> DeploymentResult:
        """Resume after the target's trigger: verify (deploy phase) or finish the rollback (rollback phase)."""
        if not event or not plan:
            raise DeploymentError(f"Task {self.task_id!r} resumed without a trigger event; run it again")
        target = self._target(plan["target"])
        release = self._release(target, context)
        result = self._guarded(context, release, plan["model_name"], lambda: release.resume(plan, event))
        return cast("DeploymentResult", result)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The model version put in service and the endpoint serving it, for OpenLineage."""
        from airflow_mlops.lineage.openlineage import deployment_lineage
        from airflow_mlops.utils.results import kept_result

        return deployment_lineage(kept_result(self), self.hook.registry_uri)


class RollbackModelOperator(DeployModelOperator):
    """
    Roll a model back to an earlier version: redeploy it on the target given, verify it, move the alias.

    The version is the one given, or (empty) the previous champion: the last version that served
    successfully before the one serving now, from the registry's deployment history. Only a version that
    served successfully before, passed the gate and carries a recorded approval is restored. The target
    comes from the DAG (the same config the deploy task uses), never from the registry: a registry tag is
    data anyone with registry access can write. Verification is the same as :class:`DeployModelOperator`'s
    (the smoke-test settings of the last deployment are reused unless ``sample_data`` is given), and if the
    restored version fails it, the target goes back to what served. The version is chosen once and
    recorded before anything changes; a retry finishes that same rollback. The history records who (the
    user who triggered the run), why (*reason*) and when; the version rolled away from gets
    ``mlops.rollback.reason`` (``rolled back to version N by <user>: <reason>``). ``deferrable`` defaults
    to ``[operators] default_deferrable``. While another task instance releases the model (a deploy at
    ``verify``, say), the rollback waits for it, deferred, up to ``wait_for_release``; then it chooses and
    checks everything again against what serves by then, or takes over a release whose lease passed.

    :param model_name: Registered model name (templated).
    :param reason: Why the rollback is done (required, templated).
    :param version: Version to roll back to (templated); None or "" is the previous champion.
    :param target: Deploy target, as for :class:`DeployModelOperator` (templated).
    :param sample_data: Smoke-test rows (templated); None reuses those of the last deployment.
    :param wait_for_release: How long to wait (deferred) for another task instance's release of the model to
        end, as for :class:`DeployModelOperator`; None (the default): ``[mlops] release_wait_timeout``.
    :param kwargs: The other arguments of :class:`DeployModelOperator`.
    :raises DeploymentRejectedError: if the model has no deployment history, the version never served, or
        it already serves (not retryable: nothing changed).
    :raises ApprovalRequiredError: if the version has no passed gate or no recorded approval (not retryable).
    :raises ModelVersionNotFoundError: if the version does not exist (not retryable).
    :raises ConfigurationError: if the rendered reason is empty.
    """

    action = "rollback"
    ui_color = "#ffebee"

    def __init__(
        self,
        *,
        model_name: str,
        reason: str,
        version: int | str | None = None,
        target: DeployTarget | dict[str, Any] | str | None = "local",
        wait_for_release: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        if not is_templated(reason) and (not isinstance(reason, str) or not reason.strip()):
            raise ValueError(
                "reason is required: say why the model is rolled back (it is recorded in the registry)"
            )
        super().__init__(
            model_name=model_name,
            version=version,
            target=target,
            reason=reason,
            wait_for_release=wait_for_release,
            **kwargs,
        )

    def _new_release(
        self, context: Context, release: Release, rid: str, last: ReleaseRecord | None
    ) -> dict[str, Any]:
        """Choose the version once (recorded before anything changes), check it may serve, release it."""
        from airflow_mlops.serving.release import (
            check_served_before,
            ensure_rollback_changes,
            rollback_history,
            rollback_smoke_test,
            rollback_version,
        )

        name, target, client = self._model_name(), release.target, release.client
        reason = str(self.reason or "").strip()
        if not reason:
            raise ConfigurationError(
                f"Rollback of model {name!r}: reason is empty; say why the model is rolled back (it is recorded)",
                model=name,
            )
        history = rollback_history(client, name, release.keys, self.log)
        current = target.current(name)
        serving = current.version if current else None
        if self.version not in (None, ""):
            version = self._version(client, name, self.version)
        else:
            version = self._version(client, name, rollback_version(history, name, serving))
        check_served_before(client, name, version, release.keys)
        check_release_allowed(
            client, name, version, "roll back to", required=approval_required(), keys=release.keys
        )
        model_uri = target.resolve_model_uri(client, name, version)
        ensure_rollback_changes(target, client, current, name, version, model_uri, self.alias)
        if self.sample_data:
            verify = self._smoke_test()
        else:  # the smoke test of the last deployment of what serves
            verify = rollback_smoke_test(client, name, serving, release.keys) or self._smoke_test()
        verify = verify.for_model(f"models:/{name}/{version}")  # the columns the restored version takes
        verify.records(self.aws_conn_id)  # bad sample data fails here, before anything changes
        abandoned = self._check_free(release, last, rid)
        previous = _previous(current, abandoned)
        plan = self._plan(context, name, version, model_uri, target, previous, verify, reason)
        return release.start(plan, rid)


def _previous(current: Deployment | None, abandoned: ReleaseRecord | None) -> Deployment | None:
    """
    The verified deployment a new release falls back to.

    What serves now, unless an abandoned release switched the target without verifying it: then the
    deployment that served before that one.
    """
    if abandoned is None or abandoned.step == "planned":
        return current
    from airflow_mlops.serving.status import Deployment

    recorded = abandoned.plan.get("previous")
    return Deployment.from_dict(recorded) if recorded else current
