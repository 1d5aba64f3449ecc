"""
Replay captured production traffic against a candidate before it is approved.

:class:`ReplayTrafficOperator` sends a sample of the requests the champion answered to the candidate in the
target's sandbox (as infra validation starts it) and compares the answers; the figures and a Markdown summary
are its result, optional limits make it a gate. The comparison lives in :mod:`airflow_mlops.serving.replay`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops import tags as T
from airflow_mlops.exceptions import (
    ConfigurationError,
    DatasetError,
    DeploymentError,
    InfraValidationError,
    ModelGateFailedError,
)
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.hooks.storage import StorageHook
from airflow_mlops.operators.base import ModelOperatorMixin, rendered_arguments
from airflow_mlops.registry import get_alias_version, get_model_version, parse_version, validate_model_name
from airflow_mlops.serving.base import DeployTarget, target_from_config
from airflow_mlops.utils.clock import aware_time
from airflow_mlops.utils.results import json_safe, keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_mlops.serving.replay import ReplayLimits
    from airflow_mlops.serving.status import Deployment

__all__ = ["DEFAULT_REPLAY_WINDOW", "DEFAULT_SAMPLE_SIZE", "ReplayTrafficOperator"]

#: Default ``window``: the last day of traffic.
DEFAULT_REPLAY_WINDOW = timedelta(days=1)
#: Default ``sample_size``: requests replayed.
DEFAULT_SAMPLE_SIZE = 500
_PREDICTION_KINDS = ("auto", "classification", "regression")




def _duration(value: Any, field: str) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise ValueError(f"{field} must be a timedelta or a number of seconds, got {value!r}")
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta <= timedelta(0):
        raise ValueError(f"{field} must be positive, got {value!r}")
    return delta


class ReplayTrafficOperator(ModelOperatorMixin, BaseOperator):
    """
    Replay recent production requests against a candidate and compare with the champion's recorded answers.

    Reads the production traffic the champion answered in the window from the captures
    (:mod:`airflow_mlops.serving.capture`), draws ``sample_size`` requests (seeded by the task instance, so a
    retry replays the same sample), starts the candidate in the target's sandbox (as
    :class:`~airflow_mlops.operators.deployment.InfraValidateOperator` does; never seen by clients), sends each
    sampled request again with its rows, and compares the answers row by row
    (:mod:`airflow_mlops.serving.replay`): disagreement rate for class labels, or the absolute difference's
    median and p95 for numbers; per segment with ``segment_column``; the candidate's failed requests and
    latency. The captures hold no latency of the champion: that figure is reported as not captured.

    With limits set, a figure beyond its limit fails the task with
    :class:`~airflow_mlops.exceptions.ModelGateFailedError` (not retryable) naming the figure and the limit;
    the result is pushed to XCom before the task fails. Without limits, the figures are for the reviewer (pass
    ``output["markdown"]`` to the approval's ``report``).

    No production request in the window (a first model, no capture, a quiet window) is no failure and no skip:
    the task succeeds with ``outcome`` ``nothing_to_replay`` and says why, and starts no sandbox. (A skip would
    skip the approval after it, too.)

    Returns (XCom, JSON-safe) ``{"model_name", "version", "champion_version", "target", "outcome", "reason",
    "window": {"start", "end"}, "captured": {"requests", "rows", "bad_rows"}, "sample": {"requests", "rows",
    "seed"}, "comparison": {"kind", "overall", "segments"}, "errors": {"requests", "rate", "examples"},
    "latency_ms": {"candidate", "champion"}, "limits", "failures", "markdown"}``; ``outcome`` is ``passed`` or
    ``nothing_to_replay`` (``failed`` in the result pushed before a gate failure).

    :param model_name: Registered model (templated).
    :param version: The candidate version (templated), e.g. ``register.output["version"]``.
    :param target: Deploy target whose sandbox serves the candidate (a :class:`DeployTarget`, a config dict, or
        a kind name). (templated)
    :param capture_uri: Data root the captures are under (default: the data root). (templated)
    :param since: Start of the window, ISO 8601 with a time zone, e.g. ``"{{ data_interval_start }}"``
        (templated); default ``until - window``.
    :param until: End of the window (templated); default the DAG run's ``run_after`` (when it was triggered or
        due), so every try reads the same window.
    :param window: Length of the window when ``since`` is not given (timedelta or seconds; default one day).
    :param sample_size: Most requests replayed (all of them when the window holds fewer).
    :param segment_column: A captured column whose values are segments (e.g. ``region``), reported apart.
    :param prediction_kind: ``classification``, ``regression`` or ``auto`` (class labels when the champion's
        answers are text or at most 20 whole numbers).
    :param max_disagreement: Gate: most share (0-1) of rows answered differently (classification).
    :param max_median_abs_diff: Gate: most median absolute difference (regression).
    :param max_p95_abs_diff: Gate: most 95th percentile of the absolute difference (regression).
    :param max_error_rate: Gate: most share (0-1) of replayed requests the candidate fails.
    :param max_p95_latency_ms: Gate: most p95 latency of the candidate per request, in milliseconds.
    :param request_timeout: Seconds one replayed request may take.
    :param mlflow_conn_id: Airflow ``mlflow`` connection. (templated)
    :param aws_conn_id: Airflow ``aws`` connection for ``s3://`` captures. (templated)
    :raises ModelGateFailedError: a figure beyond its limit (not retryable).
    :raises InfraValidationError: the candidate's sandbox does not start (not retryable).
    :raises DatasetError: the captures lack a column the candidate takes (not retryable).
    """

    template_fields: Sequence[str] = (
        "model_name", "version", "target", "capture_uri", "since", "until", "segment_column", "mlflow_conn_id",
        "aws_conn_id",
    )  # fmt: skip
    template_fields_renderers = {"target": "json"}
    ui_color = "#e8f5e9"

    def __init__(
        self,
        *,
        model_name: str,
        version: int | str,
        target: DeployTarget | dict[str, Any] | str = "local",
        capture_uri: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        window: timedelta | float = DEFAULT_REPLAY_WINDOW,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        segment_column: str | None = None,
        prediction_kind: str = "auto",
        max_disagreement: float | None = None,
        max_median_abs_diff: float | None = None,
        max_p95_abs_diff: float | None = None,
        max_error_rate: float | None = None,
        max_p95_latency_ms: float | None = None,
        request_timeout: float = 30.0,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        aws_conn_id: str | None = StorageHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**keyed_results(kwargs))
        if not is_templated(model_name):
            validate_model_name(model_name)
        if not is_templated(version):
            parse_version(version, str(model_name))
        if target is not None and not isinstance(target, DeployTarget) and not is_templated(target):
            target_from_config(target)  # raises ValueError naming the bad setting
        for field, value in (("since", since), ("until", until)):
            if not is_templated(value):
                aware_time(value, field)
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
            raise ValueError(f"sample_size must be a positive integer, got {sample_size!r}")
        if prediction_kind not in _PREDICTION_KINDS:
            raise ValueError(
                f"prediction_kind must be one of {', '.join(_PREDICTION_KINDS)}, got {prediction_kind!r}"
            )
        if (
            isinstance(request_timeout, bool)
            or not isinstance(request_timeout, int | float)
            or request_timeout <= 0
        ):
            raise ValueError(f"request_timeout must be a positive number of seconds, got {request_timeout!r}")
        self.limit_values = {
            "max_disagreement": max_disagreement,
            "max_median_abs_diff": max_median_abs_diff,
            "max_p95_abs_diff": max_p95_abs_diff,
            "max_error_rate": max_error_rate,
            "max_p95_latency_ms": max_p95_latency_ms,
        }
        self.prediction_kind = prediction_kind
        if any(value is not None for value in self.limit_values.values()):
            self.limits  # noqa: B018 - checks the limits now (the comparison module loads only for a gate)
        self.model_name = model_name
        self.version = version
        self.target = target
        self.capture_uri = capture_uri
        self.since = since
        self.until = until
        self.window = _duration(window, "window")
        self.sample_size = sample_size
        self.segment_column = segment_column
        self.request_timeout = float(request_timeout)
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self._sandbox: tuple[DeployTarget, Deployment] | None = None

    @cached_property
    def limits(self) -> ReplayLimits:
        """The gate's limits, checked (``ValueError`` naming the bad one) and matched to ``prediction_kind``."""
        from airflow_mlops.serving.replay import ReplayLimits

        limits = ReplayLimits(**self.limit_values)
        if self.prediction_kind != "auto":
            limits.check_kind(self.prediction_kind)
        return limits

    @cached_property
    def storage_hook(self) -> StorageHook:
        """The storage hook of ``aws_conn_id`` (for ``s3://`` captures)."""
        return StorageHook(aws_conn_id=self.aws_conn_id)

    # -- arguments, once rendered --------------------------------------------------------------------------

    def _window(self, context: Context) -> tuple[datetime, datetime]:
        from airflow_mlops.utils.clock import utc_now

        with rendered_arguments(model=self.model_name):
            end = aware_time(self.until, "until")
            start = aware_time(self.since, "since")
        if end is None:
            run_after = getattr(context.get("dag_run"), "run_after", None)
            end = run_after if isinstance(run_after, datetime) and run_after.tzinfo else utc_now()
        start = start or end - self.window
        if start >= end:
            raise ConfigurationError(
                f"The replay window of model {self.model_name!r} is empty: since {start.isoformat()} is not "
                f"before until {end.isoformat()}",
                model=self.model_name,
            )
        return start, end

    def _seed(self, context: Context) -> int:
        from airflow_mlops.serving.replay import replay_seed
        from airflow_mlops.utils.context import airflow_ids, instance_key

        try:
            key = instance_key(airflow_ids(context))
        except ValueError:  # called without a task instance: a fixed seed
            key = self.task_id
        return replay_seed(key)

    # -- execute -------------------------------------------------------------------------------------------

    @keep_result
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.data.snapshots import resolve_data_root
        from airflow_mlops.serving import replay
        from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID, read_captures

        with rendered_arguments():
            name = validate_model_name(self.model_name)
        with rendered_arguments(model=name):
            number = parse_version(self.version, name)
            try:
                target = target_from_config(self.target)
            except ValueError as err:
                raise ConfigurationError(
                    f"Task {self.task_id!r}: invalid deploy target {self.target!r}: {err}"
                ) from err
            segment = (str(self.segment_column).strip() or None) if self.segment_column is not None else None
        start, end = self._window(context)
        client = self.hook.client
        get_model_version(client, name, number)
        self.link_model_version(name, number)
        version = str(number)
        champion = get_alias_version(client, name, T.CHAMPION)
        result: dict[str, Any] = {
            "model_name": name,
            "version": version,
            "champion_version": None if champion is None else str(champion),
            "target": target.config_kind(),
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "limits": self.limits.to_dict(),
            "failures": [],
        }
        if champion is None:
            return self._nothing(
                result, f"model {name!r} has no {T.CHAMPION}: no recorded answers to compare with"
            )

        columns, types = self._columns(name, version, str(champion))
        read = (
            None
            if columns is None
            else [*columns, *([segment] if segment and segment not in columns else [])]
        )
        root = resolve_data_root((self.capture_uri or "").strip() or None)
        captured = read_captures(
            root, name, start, end, columns=read, storage=self.storage_hook.storage_for(root),
            version=str(champion), types=types,
        )  # fmt: skip
        requests = int(captured[REQUEST_ID].nunique()) if len(captured) else 0
        result["captured"] = {
            "requests": requests,
            "rows": len(captured),
            "bad_rows": int(captured.attrs.get("bad_rows", 0)),
        }
        if captured.empty:
            self.log.info("No captures of %s v%s under %s in the window", name, champion, root)
            # The reason reaches the reviewer's page: no folder of the worker in it.
            return self._nothing(
                result,
                f"no production request answered by v{champion} was captured between {start.isoformat()} and "
                f"{end.isoformat()}",
            )
        from airflow_mlops.serving.monitor import feature_columns

        inputs = (
            list(columns) if columns is not None else [c for c in feature_columns(captured) if c != segment]
        )
        missing = [c for c in inputs if c not in captured.columns]
        if missing:
            raise DatasetError(
                f"The captures of model {name!r} hold no column(s) {missing} that v{version} takes: its traffic "
                f"cannot be replayed (captured: {feature_columns(captured)})",
                model=name,
                version=version,
            )
        if segment is not None and segment not in captured.columns:
            raise ConfigurationError(
                f"segment_column {segment!r} is not captured for model {name!r}; the captures hold "
                f"{feature_columns(captured)} (with a signature, only its columns are captured)",
                model=name,
            )
        seed = self._seed(context)
        sample = replay.sample_requests(captured, self.sample_size, seed)
        del captured
        kind = (
            replay.prediction_kind(sample[PREDICTION].tolist())
            if self.prediction_kind == "auto"
            else self.prediction_kind
        )
        with rendered_arguments(model=name, version=version):
            self.limits.check_kind(kind)
        result["sample"] = {"requests": int(sample[REQUEST_ID].nunique()), "rows": len(sample), "seed": seed}
        self.log.info(
            "Replaying %d of %d requests (%d rows) that %s v%s answered in %s - %s against v%s on a %s sandbox",
            result["sample"]["requests"], requests, len(sample), name, champion, start.isoformat(),
            end.isoformat(), version, target.config_kind(),
        )  # fmt: skip
        run = self._replay(target, name, version, sample, inputs)
        result["comparison"] = replay.compare(sample, run.answers, kind, segment)
        result["errors"] = {
            "requests": run.failed_requests,
            "rate": round(run.failed_requests / run.requests, 6) if run.requests else None,
            "examples": run.errors,
        }
        result["latency_ms"] = replay.latency(run.latencies_ms, replay.captured_latencies(sample))
        result["failures"] = replay.gate_failures(
            self.limits, result["comparison"], result["errors"], result["latency_ms"]
        )
        result["outcome"] = replay.FAILED if result["failures"] else replay.PASSED
        result["reason"] = "; ".join(result["failures"]) or None
        result["markdown"] = replay.render_markdown(result)
        result = json_safe(result)
        self.log.info("%s", result["markdown"])
        if result["failures"]:
            ti = context.get("ti")
            if ti is not None:  # the figures stay readable (XCom) when the task fails on them
                ti.xcom_push(key="return_value", value=result)
            raise ModelGateFailedError(
                f"Version {version} of model {name!r} failed the replay of production traffic against "
                f"v{champion}: " + "; ".join(result["failures"]),
                model=name,
                version=version,
                reason="; ".join(result["failures"]),
            )
        return result

    def _nothing(self, result: dict[str, Any], reason: str) -> dict[str, Any]:
        from airflow_mlops.serving import replay

        result.update({"outcome": replay.NOTHING_TO_REPLAY, "reason": reason})
        result["markdown"] = replay.render_markdown(result)
        self.log.info("Nothing to replay: %s", reason)
        return json_safe(result)

    def _columns(
        self, name: str, version: str, champion: str
    ) -> tuple[list[str] | None, dict[str, str] | None]:
        """The candidate's input columns (None: no signature) and the types the captures are read in."""
        from airflow_mlops.serving.capture import signature_of
        from airflow_mlops.serving.verification import model_columns

        columns = model_columns(f"models:/{name}/{version}")
        try:
            types = signature_of(f"models:/{name}/{champion}")
        except Exception as err:  # no signature to read with is not a reason to stop
            self.log.info("No signature of %s v%s (%s): captures read as stored", name, champion, err)
            types = None
        return columns, types

    def _replay(self, target: DeployTarget, name: str, version: str, sample: Any, inputs: list[str]) -> Any:
        from airflow_mlops.serving import replay

        model_uri = target.resolve_model_uri(self.hook.client, name, version)
        try:
            with target.sandbox(name, version, model_uri) as sandbox:
                self._sandbox = (target, sandbox)
                return replay.replay_requests(
                    sample,
                    inputs,
                    lambda records: target.predict(sandbox, records, timeout=self.request_timeout),
                )
        except (DeploymentError, NotImplementedError) as err:
            raise InfraValidationError(
                f"Version {version} of model {name!r} cannot serve the replay on target "
                f"{target.config_kind()}: {err}",
                model=name,
                version=version,
                reason=str(err),
            ) from err
        finally:
            self._sandbox = None

    def on_kill(self) -> None:
        sandbox = self._sandbox
        if sandbox is not None:
            target, deployment = sandbox
            self.log.info("Task killed: stopping the replay sandbox of %s", deployment.endpoint)
            target.stop_sandbox(deployment)
