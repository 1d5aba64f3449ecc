"""
Single-node training: one pod, created, watched and cleaned up by cncf-kubernetes' ``KubernetesPodOperator``.

KPO does the creation, reattach (``durable``), deferral, logs, XCom sidecar and cleanup; :class:`PodTraining`
adds what a training needs: the pod's last status before KPO deletes it, one line saying why it failed (as an
exception type), and a restart after a preemption with the same checkpoint URI.

The kubernetes client and the cncf-kubernetes provider are imported inside the functions, when a task runs.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import (
    InvalidManifestError,
    TrainingAdmissionTimeoutError,
    TrainingError,
    TrainingPreemptedError,
)
from airflow_mlops.training.kubernetes.admission import defer_for_admission
from airflow_mlops.training.kubernetes.failures import explain_pod_failure
from airflow_mlops.training.kubernetes.images import record_image_digest
from airflow_mlops.training.kubernetes.manifests import BASE_CONTAINER, KUEUE_GATE, pod_manifest
from airflow_mlops.version_compat import TaskDeferred

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import Context
    from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

    from airflow_mlops.training.base import RawResult, TrainingCallbacks
    from airflow_mlops.training.kubernetes.settings import KubernetesSettings
    from airflow_mlops.training.spec import TrainingSpec


@functools.cache
def training_pod_operator_class() -> type[KubernetesPodOperator]:
    """
    KubernetesPodOperator as the engine of one training pod (built at execute time, never put in a DAG).

    Two additions: before KPO deletes a finished pod it keeps the pod's last status (``final_pod``, for
    :func:`~airflow_mlops.training.kubernetes.failures.explain_pod_failure`), and it keeps the XCom result
    KPO returns when it resumes inline (``reentry_result``).
    """
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    assert KubernetesPodOperator.BASE_CONTAINER_NAME == BASE_CONTAINER

    class TrainingPodOperator(KubernetesPodOperator):
        final_pod: Any = None
        reentry_result: Any = None

        def cleanup(self, pod, remote_pod, xcom_result=None, context=None):
            latest = remote_pod
            if pod is not None:
                try:
                    latest = self.pod_manager.read_pod(pod)
                except Exception:  # gone (404) or unreachable: keep what KPO had
                    self.log.debug("Could not read pod %s before cleanup", pod.metadata.name, exc_info=True)
            self.final_pod = latest
            return super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)

        def trigger_reentry(self, context, event):
            self.reentry_result = super().trigger_reentry(context, event)
            return self.reentry_result

    return TrainingPodOperator


def serialize(obj: Any) -> Any:
    """A kubernetes client model as the plain dict the API speaks."""
    from kubernetes.client import ApiClient, Configuration  # type: ignore[import-untyped]  # noqa: TID253

    return ApiClient(configuration=Configuration()).sanitize_for_serialization(obj)


def connection_kwargs(runtime: KubernetesSettings) -> dict[str, Any]:
    """The runtime's connection as the cncf-kubernetes operators take it."""
    kwargs = runtime.connection.hook_kwargs()
    return {"kubernetes_conn_id": kwargs.pop("conn_id"), **kwargs}


def api_error_message(err: ApiException) -> str:
    """The API server's own message of *err* (its ``Status.message``), else its reason."""
    import json

    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except (TypeError, ValueError):
        return str(err.reason)


def pod_operator(runtime: KubernetesSettings, spec: TrainingSpec) -> Any:
    """The KubernetesPodOperator that runs the training pod of *spec* (see :func:`training_pod_operator_class`)."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    manifest = pod_manifest(runtime, spec)
    execution_timeout = timedelta(seconds=spec.execution_timeout) if spec.execution_timeout else None
    return training_pod_operator_class()(
        task_id=spec.task_id,
        namespace=runtime.namespace,
        full_pod_spec=PodGenerator.deserialize_model_dict(manifest),
        labels=manifest["metadata"]["labels"],
        do_xcom_push=True,
        get_logs=True,
        deferrable=runtime.deferrable,
        poll_interval=runtime.poll_interval,
        startup_check_interval_seconds=min(runtime.poll_interval, 5),  # type: ignore[arg-type]  # a float works
        base_container_status_polling_interval=min(runtime.poll_interval, 1),
        schedule_timeout_seconds=runtime.schedule_timeout,
        startup_timeout_seconds=runtime.startup_timeout,
        termination_grace_period=runtime.termination_grace_period,
        on_finish_action="delete_pod",
        log_events_on_failure=True,
        log_pod_spec_on_failure=False,  # the one-line reason says what matters; the spec is in the API
        execution_timeout=execution_timeout,
        **connection_kwargs(runtime),
    )


def render_pod(runtime: KubernetesSettings, spec: TrainingSpec, context: Context) -> dict[str, Any]:
    """The pod exactly as it would be created (KPO's request, with its labels and XCom sidecar), as a dict."""
    return serialize(pod_operator(runtime, spec).build_pod_request_obj(context, dry_run=True))


class PodTraining:
    """
    One training pod of one try: start it, resume after the trigger fired, stop it.

    :param runtime: The runtime's settings.
    :param spec: What to run.
    :param context: The task's Airflow context (KPO reads it).
    :param callbacks: How to log and defer.
    """

    def __init__(
        self,
        runtime: KubernetesSettings,
        spec: TrainingSpec,
        context: Context,
        callbacks: TrainingCallbacks,
    ) -> None:
        self.runtime = runtime
        self.spec = spec
        self.context = context
        self.callbacks = callbacks
        self.kpo: Any = None

    def start(self) -> RawResult:
        """Create the pod (or reattach to the one of an earlier try) and wait for it."""
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        spec, log = self.spec, self.callbacks.log
        kpo = self.kpo = pod_operator(self.runtime, spec)
        kpo.pod_request_obj = kpo.build_pod_request_obj(self.context)
        # Reattaches to a pod of an earlier try that still runs (durable / reattach_on_restart), else creates one.
        try:
            kpo.pod = kpo.get_or_create_pod(pod_request_obj=kpo.pod_request_obj, context=self.context)
        except ApiException as err:
            if err.status in (400, 422):
                raise InvalidManifestError(
                    f"The API server rejected the training pod of task {spec.task_id!r}: "
                    f"{api_error_message(err)}",
                    model=spec.experiment_name,
                    reason=str(err.reason),
                ) from err
            raise
        pod = kpo.pod
        state = {"mode": "pod", "name": pod.metadata.name, "namespace": pod.metadata.namespace}
        log.info(
            "Training pod %s/%s (start %d of this try) for MLflow run %s",
            pod.metadata.namespace, pod.metadata.name, spec.attempt, spec.mlflow_run_id,
        )  # fmt: skip
        if self.runtime.queue_name:
            # As the API server holds it: Kueue's webhook adds its gate when the pod is created.
            gates = kpo.pod_manager.read_pod(pod).spec.scheduling_gates or []
            if any(gate.name == KUEUE_GATE for gate in gates):
                return self._wait_for_admission(pod.metadata.name, pod.metadata.namespace)
        try:
            if not self.runtime.deferrable:
                return self._succeeded(kpo.execute_sync(self.context))
            kpo.invoke_defer_method(context=self.context)
        except TaskDeferred as deferred:
            self.callbacks.defer(trigger=deferred.trigger, spec=spec, state=state, timeout=deferred.timeout)
        except Exception as err:
            return self._failed(err, pod_name=pod.metadata.name, namespace=pod.metadata.namespace)
        return self._succeeded(kpo.reentry_result)  # the pod had already finished: KPO read it without deferring

    def _wait_for_admission(self, name: str, namespace: str) -> RawResult:
        """
        Queued: Kueue's webhook gated the pod; wait (deferred) until Kueue admits it and removes the gate.

        KPO's schedule and startup timeouts start only after that (they are counted from KPO's own wait).
        """
        runtime = self.runtime
        state = defer_for_admission(self, "Training pod", "Pod", name, namespace)
        import time

        started = time.monotonic()
        while True:
            pod = self.kpo.hook.get_pod(name, namespace)
            waited = round(time.monotonic() - started, 1)
            if not any(g.name == KUEUE_GATE for g in pod.spec.scheduling_gates or []):
                return self._admitted({"status": "admitted", "waited": waited}, state)
            if waited >= runtime.admission_timeout:
                return self._admitted({"status": "timeout", "waited": waited}, state)
            time.sleep(runtime.poll_interval)

    def _admitted(self, event: dict[str, Any], state: dict[str, Any]) -> RawResult:
        runtime, spec = self.runtime, self.spec
        name, namespace = state["name"], state["namespace"]
        if event.get("status") == "admitted":
            self.callbacks.log.info(
                "Training pod %s/%s was admitted by Kueue queue %r after %s s in the queue; training starts",
                namespace, name, runtime.queue_name, event.get("waited"),
            )  # fmt: skip
            return self.start()  # finds the same pod again (KPO's reattach) and waits for it
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        kpo = self.kpo or pod_operator(runtime, spec)
        try:
            kpo.hook.core_v1_client.delete_namespaced_pod(name, namespace)
        except ApiException as err:
            if err.status != 404:
                self.callbacks.log.warning("Could not delete pod %s/%s: %s", namespace, name, err.reason)
        if event.get("status") == "timeout":
            raise TrainingAdmissionTimeoutError(
                f"Training pod {namespace}/{name} waited {event.get('waited')} s on Kueue queue "
                f"{runtime.queue_name!r} without being admitted (admission_timeout={runtime.admission_timeout}); "
                "it was deleted. The queue's ClusterQueue has no free quota for it: the task's retries queue it "
                "again, or raise admission_timeout, ask for fewer GPUs, or use a queue with more quota.",
                pod=name,
                model=spec.experiment_name,
                reason="AdmissionTimeout",
            )
        raise TrainingError(
            f"Training pod {namespace}/{name} did not reach admission on Kueue queue {runtime.queue_name!r}: "
            f"{event.get('message')}",
            pod=name,
            model=spec.experiment_name,
            reason=str(event.get("status")),
        )

    def resume(self, event: dict[str, Any], state: dict[str, Any]) -> RawResult:
        """Read the result (or the failure) of the pod the trigger waited for."""
        if state.get("phase") == "admission":
            self.kpo = pod_operator(self.runtime, self.spec)
            return self._admitted(event, state)
        kpo = self.kpo = pod_operator(self.runtime, self.spec)
        try:
            result = kpo.trigger_reentry(self.context, event)
        except TaskDeferred as deferred:  # KPO re-defers while the pod still runs
            self.callbacks.defer(
                trigger=deferred.trigger, spec=self.spec, state=state, timeout=deferred.timeout
            )
        except Exception as err:
            return self._failed(err, pod_name=state.get("name"), namespace=state.get("namespace"))
        return self._succeeded(result)

    def _succeeded(self, result: RawResult) -> RawResult:
        """The pod's result, once the image it ran (its last status, read before KPO deleted it) is recorded."""
        final = self.kpo.final_pod if self.kpo is not None else None
        record_image_digest(
            self.spec, serialize(final) if final is not None else None, BASE_CONTAINER, self.callbacks.log
        )
        return result

    def stop(self) -> None:
        """The task was killed: delete the pod."""
        if self.kpo is not None:
            self.kpo.on_kill()

    def _failed(self, err: Exception, *, pod_name: str | None, namespace: str | None = None) -> RawResult:
        """Explain why the pod failed; start it again after a preemption (same checkpoint URI), else raise."""
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        runtime, spec, kpo = self.runtime, self.spec, self.kpo
        assert kpo is not None
        model = spec.experiment_name
        if kpo._killed:
            raise TrainingError(
                f"Training pod of task {spec.task_id!r} was deleted because the task was killed",
                pod=pod_name,
                model=model,
                reason="killed",
            )
        name = pod_name or (kpo.pod.metadata.name if kpo.pod is not None else None)
        if name is None:
            raise TrainingError(
                f"Training pod of task {spec.task_id!r} could not be created: {err}", model=model
            ) from err
        final = kpo.final_pod
        if final is None:  # KPO failed before its cleanup: is the pod gone, or still there?
            namespace = namespace or (kpo.pod.metadata.namespace if kpo.pod is not None else None)
            try:
                final = kpo.hook.get_pod(name, namespace or "default")
            except ApiException as api_err:
                if api_err.status != 404:
                    raise TrainingError(
                        f"Training pod {namespace}/{name} failed ({err}) and cannot be read: {api_err.reason}",
                        pod=name,
                        model=model,
                    ) from err
            else:
                kpo.process_pod_deletion(final, reraise=False)
        failure = explain_pod_failure(
            serialize(final) if final is not None else None, runtime, pod_name=name, message=str(err)
        )
        if failure.retryable and spec.attempt <= runtime.max_preemptions:
            self.callbacks.log.warning(
                "%s (restart %d of %d)", failure.line, spec.attempt, runtime.max_preemptions
            )
            self.spec = spec.next_attempt()
            return self.start()
        if failure.retryable:
            raise TrainingPreemptedError(
                f"{failure.line} It was already started {spec.attempt} times in this try "
                f"(max_preemptions={runtime.max_preemptions}); the task's retries start it again.",
                pod=name,
                model=model,
                reason=failure.reason,
            ) from err
        raise failure.error(model=model) from err
