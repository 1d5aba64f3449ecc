"""
Multi-node training: an Indexed Job of ``num_nodes`` pods and a headless Service for ``torchrun`` rendezvous.

The Job is built by cncf-kubernetes' ``KubernetesJobOperator`` and created through ``KubernetesHook``; the wait
runs in :class:`~airflow_mlops.triggers.training.KubernetesTrainingJobTrigger` (deferrable) or in the worker.
Afterwards :class:`JobTraining` copies every pod's log into the task log, reads rank 0's result from its
termination message, explains a failure, and deletes the Job, its pods and the Service.

The kubernetes client and the cncf-kubernetes provider are imported inside the functions, when a task runs.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import (
    InvalidManifestError,
    TrainingAdmissionTimeoutError,
    TrainingError,
    TrainingResultError,
)
from airflow_mlops.training.kubernetes.admission import defer_for_admission
from airflow_mlops.training.kubernetes.failures import Failure, container_status, explain_pod_failure
from airflow_mlops.training.kubernetes.images import record_image_digest
from airflow_mlops.training.kubernetes.manifests import (
    BASE_CONTAINER,
    COMPLETION_INDEX_ANNOTATION,
    INSTANCE_LABEL,
    JOB_NAME_LABEL,
    instance_key,
    job_manifest,
    kueue_labels,
    service_manifest,
)
from airflow_mlops.training.kubernetes.pod import api_error_message, connection_kwargs, serialize

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
    from airflow.sdk import Context
    from kubernetes.client import models as k8s  # type: ignore[import-untyped]

    from airflow_mlops.training.base import RawResult, TrainingCallbacks
    from airflow_mlops.training.kubernetes.settings import KubernetesSettings
    from airflow_mlops.training.spec import TrainingSpec

#: Largest result a multi-node trainer can return (the kubelet's limit on a termination message).
MAX_TERMINATION_MESSAGE = 4096


def _deserialize(data: dict[str, Any], model: type) -> Any:
    from kubernetes.client import ApiClient, Configuration  # noqa: TID253

    return ApiClient(configuration=Configuration())._ApiClient__deserialize_model(data, model)


def job_name(task_id: str) -> str:
    """``job-<task>-<random>``, short enough for ``<name>-<rank>`` to be a valid host name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", task_id.lower()).strip("-")[:30].strip("-") or "train"
    return f"job-{slug}-{secrets.token_hex(4)}"


def job_operator(
    runtime: KubernetesSettings, spec: TrainingSpec, *, name: str, namespace: str
) -> KubernetesJobOperator:
    """The KubernetesJobOperator that builds and watches the Job *name*."""
    from datetime import timedelta

    from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import models as k8s  # noqa: TID253

    manifest = job_manifest(runtime, spec, name=name, namespace=namespace)
    template = manifest["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
    job_spec = {k: v for k, v in manifest["spec"].items() if k != "template"}
    return KubernetesJobOperator(
        task_id=spec.task_id,
        name=name.removeprefix("job-"),  # KubernetesJobOperator adds the prefix back
        random_name_suffix=False,
        namespace=namespace,
        labels=template["metadata"]["labels"],  # the Kueue labels go on the Job only (build_job)
        annotations=manifest["metadata"]["annotations"],
        full_pod_spec=PodGenerator.deserialize_model_dict(pod),
        full_job_spec=_deserialize({**manifest, "spec": {**job_spec, "template": {}}}, k8s.V1Job),
        completion_mode="Indexed",
        completions=runtime.num_nodes,
        parallelism=runtime.num_nodes,
        backoff_limit=0,
        suspend=True if runtime.queue_name else None,
        ttl_seconds_after_finished=runtime.job_ttl_seconds,
        wait_until_job_complete=True,
        deferrable=runtime.deferrable,
        job_poll_interval=runtime.poll_interval,
        do_xcom_push=False,  # rank 0's result comes back as its termination message
        get_logs=True,
        execution_timeout=timedelta(seconds=spec.execution_timeout) if spec.execution_timeout else None,
        **connection_kwargs(runtime),
    )


def build_job(kjo: KubernetesJobOperator, runtime: KubernetesSettings, context: Context) -> k8s.V1Job:
    """KubernetesJobOperator's Job request, with the Kueue labels on the Job (not on its pods)."""
    job = kjo.build_job_request_obj(context)
    job.metadata.labels = {**(job.metadata.labels or {}), **kueue_labels(runtime)}
    return job


def render_job(
    runtime: KubernetesSettings,
    spec: TrainingSpec,
    context: Context,
    *,
    name: str = "job-train-0000",
    namespace: str = "default",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job and Service exactly as they would be created, as dicts."""
    kjo = job_operator(runtime, spec, name=name, namespace=namespace)
    job = serialize(build_job(kjo, runtime, context))
    return job, service_manifest(runtime, spec, name=name, namespace=namespace, job_uid="00000000-0000")


def _rank(pod: k8s.V1Pod) -> int:
    annotations = pod.metadata.annotations or {}
    try:
        return int(annotations.get(COMPLETION_INDEX_ANNOTATION, "0"))
    except ValueError:
        return 0


class JobTraining:
    """
    The Indexed Job of one multi-node training: start it, finish it after the wait, stop it.

    :param runtime: The runtime's settings.
    :param spec: What to run.
    :param context: The task's Airflow context.
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
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        self.hook = KubernetesHook(**runtime.connection.hook_kwargs())
        self.namespace: str | None = None
        self.name: str | None = None

    def start(self) -> RawResult:
        """Create the Job and its Service (or reattach to the Job of an earlier try) and wait for it."""
        from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]  # noqa: TID253

        runtime, spec, hook, log = self.runtime, self.spec, self.hook, self.callbacks.log
        namespace = runtime.namespace or hook.get_namespace() or "default"
        selector = f"{INSTANCE_LABEL}={instance_key(spec)}"
        name = None
        for job in hook.batch_v1_client.list_namespaced_job(namespace, label_selector=selector).items:
            if name is None and (not hook.is_job_complete(job) or hook.is_job_successful(job)):
                # A Job of an earlier try (the worker died): wait for it, or read it if it already succeeded.
                name = job.metadata.name
                log.info("Reattaching to Job %s/%s of an earlier try", namespace, name)
            else:
                self._delete(namespace, job.metadata.name)
        if name is None:
            name = job_name(spec.task_id)
            kjo = job_operator(runtime, spec, name=name, namespace=namespace)
            try:
                created = hook.create_job(job=build_job(kjo, runtime, self.context))
                service = service_manifest(
                    runtime, spec, name=name, namespace=namespace, job_uid=created.metadata.uid
                )
                hook.core_v1_client.create_namespaced_service(namespace, service)
            except ApiException as err:
                if err.status in (400, 422):
                    self._delete(namespace, name)
                    raise InvalidManifestError(
                        f"The API server rejected the training Job {namespace}/{name} of task {spec.task_id!r}: "
                        f"{api_error_message(err)}",
                        job=name,
                        model=spec.experiment_name,
                        reason=str(err.reason),
                    ) from err
                raise
            log.info(
                "Training Job %s/%s: %d nodes x %d processes, rendezvous %s-0.%s:%d (start %d of this try)",
                namespace, name, runtime.num_nodes, runtime.procs_per_node, name, name, runtime.master_port,
                spec.attempt,
            )  # fmt: skip
        self.namespace, self.name = namespace, name
        if runtime.queue_name and hook.get_job_status(job_name=name, namespace=namespace).spec.suspend:
            return self._wait_for_admission(name, namespace)
        return self._wait(name, namespace)

    def _wait_for_admission(self, name: str, namespace: str) -> RawResult:
        """Queued: wait (deferred) until Kueue admits the Job as a whole; this wait is not training time."""
        runtime, hook = self.runtime, self.hook
        state = defer_for_admission(self, "Job", "Job", name, namespace)
        started = time.monotonic()
        while hook.get_job_status(job_name=name, namespace=namespace).spec.suspend:
            waited = round(time.monotonic() - started, 1)
            if waited >= runtime.admission_timeout:
                return self.resume({"status": "timeout", "waited": waited}, state)
            time.sleep(runtime.poll_interval)
        return self.resume({"status": "admitted", "waited": round(time.monotonic() - started, 1)}, state)

    def _admitted(self, event: dict[str, Any], name: str, namespace: str) -> RawResult:
        runtime, spec = self.runtime, self.spec
        if event.get("status") == "admitted":
            self.callbacks.log.info(
                "Job %s/%s was admitted by Kueue queue %r after %s s in the queue; training starts",
                namespace, name, runtime.queue_name, event.get("waited"),
            )  # fmt: skip
            return self._wait(name, namespace)
        self._delete(namespace, name)  # it must not start later and hold GPUs nobody waits for
        if event.get("status") == "timeout":
            raise TrainingAdmissionTimeoutError(
                f"Job {namespace}/{name} waited {event.get('waited')} s on Kueue queue {runtime.queue_name!r} "
                f"without being admitted (admission_timeout={runtime.admission_timeout}); it was deleted. The "
                "queue's ClusterQueue has no free quota for it: the task's retries queue it again, or raise "
                "admission_timeout, ask for fewer nodes or GPUs, or use a queue with more quota.",
                job=name,
                model=spec.experiment_name,
                reason="AdmissionTimeout",
            )
        raise TrainingError(
            f"Job {namespace}/{name} did not reach admission on Kueue queue {runtime.queue_name!r}: "
            f"{event.get('message')}",
            job=name,
            model=spec.experiment_name,
            reason=str(event.get("status")),
        )

    def _wait(self, name: str, namespace: str) -> RawResult:
        """Wait until the Job completes or fails: deferred in the triggerer, else in the worker."""
        runtime, spec, hook = self.runtime, self.spec, self.hook
        state = {"mode": "job", "name": name, "namespace": namespace}
        if runtime.deferrable:
            from airflow_mlops.triggers.training import KubernetesTrainingJobTrigger

            self.callbacks.defer(
                trigger=KubernetesTrainingJobTrigger(
                    job_name=name,
                    namespace=namespace,
                    connection=runtime.connection.to_dict(),
                    poll_interval=runtime.poll_interval,
                ),
                spec=spec,
                state=state,
            )
        hook.wait_until_job_complete(
            job_name=name, namespace=namespace, job_poll_interval=runtime.poll_interval
        )
        return self.resume({"status": "success"}, state)

    def resume(self, event: dict[str, Any], state: dict[str, Any]) -> RawResult:
        """Read logs, result and failure of the finished Job; then delete it and its Service."""
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        runtime, spec, hook, log = self.runtime, self.spec, self.hook, self.callbacks.log
        name, namespace = state["name"], state["namespace"]
        self.namespace, self.name = namespace, name
        if state.get("phase") == "admission":
            return self._admitted(event, name, namespace)
        kjo = job_operator(runtime, spec, name=name, namespace=namespace)
        try:
            try:
                job = hook.get_job_status(job_name=name, namespace=namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
                job = None
            pods = sorted(
                hook.core_v1_client.list_namespaced_pod(
                    namespace, label_selector=f"{JOB_NAME_LABEL}={name}"
                ).items,
                key=_rank,
            )
            for pod in pods:
                log.info("Output of node %d (pod %s):", _rank(pod), pod.metadata.name)
                try:
                    kjo._write_logs(pod)
                except Exception as err:
                    log.warning("Could not read the output of pod %s: %s", pod.metadata.name, err)
            failed_reason = hook.is_job_failed(job) if job is not None else "the Job disappeared"
            if event.get("status") != "success" or failed_reason:
                failure = self._failure(pods, name, failed_reason or event.get("message"))
                if failure.retryable and spec.attempt <= runtime.max_preemptions:
                    log.warning("%s (restart %d of %d)", failure.line, spec.attempt, runtime.max_preemptions)
                    self._delete(namespace, name)  # before the next Job starts (and again below)
                    self.spec = spec.next_attempt()
                    return self.start()
                raise failure.error(job=name, model=spec.experiment_name)
            return self._rank0_result(pods, name)
        finally:
            self._delete(namespace, name)

    def stop(self) -> None:
        """The task was killed while waiting in the worker: delete the Job, its pods and its Service."""
        if self.namespace and self.name:
            self._delete(self.namespace, self.name)

    def _delete(self, namespace: str, name: str) -> None:
        """Delete Job *name* with its pods, and its Service (best effort: a cleanup must not hide the outcome)."""
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        hook, log = self.hook, self.callbacks.log
        for what, call in (
            ("Job", lambda: hook.batch_v1_client.delete_namespaced_job(
                name, namespace, propagation_policy="Background")),
            ("Service", lambda: hook.core_v1_client.delete_namespaced_service(name, namespace)),
        ):  # fmt: skip
            try:
                call()
                log.info("Deleted %s %s/%s", what, namespace, name)
            except ApiException as err:
                if err.status != 404:
                    log.warning("Could not delete %s %s/%s: %s", what, namespace, name, err.reason)

    def _failure(self, pods: list[k8s.V1Pod], name: str, reason: Any) -> Failure:
        """The most telling failure among the Job's pods (a real failure over a disruption)."""
        failures = []
        for pod in pods:
            data = serialize(pod)
            phase = (data.get("status") or {}).get("phase")
            base = container_status(data, BASE_CONTAINER).get("state") or {}
            exit_code = (base.get("terminated") or {}).get("exitCode")
            if phase == "Succeeded" or (phase == "Running" and not base.get("waiting")) or exit_code == 0:
                continue
            what = f"Node {_rank(pod)} of {self.runtime.num_nodes} (pod {pod.metadata.name}) of Job {name}"
            failures.append(explain_pod_failure(data, self.runtime, pod_name=pod.metadata.name, what=what))
        if not failures:
            gone = reason == "the Job disappeared"
            return Failure(
                "gone" if gone else "unknown",
                f"Training Job {name} failed ({reason or 'no reason given'}) and none of its pods is left to say "
                "why.",
                retryable=gone,
            )
        failures.sort(key=lambda f: f.retryable)  # a real failure explains more than a disruption
        return failures[0]

    def _rank0_result(self, pods: list[k8s.V1Pod], name: str) -> RawResult:
        for pod in pods:
            if _rank(pod) != 0:
                continue
            data = serialize(pod)
            record_image_digest(self.spec, data, BASE_CONTAINER, self.callbacks.log)
            terminated = (container_status(data, BASE_CONTAINER).get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if not message:
                return None
            if len(message.encode()) >= MAX_TERMINATION_MESSAGE:
                raise TrainingResultError(
                    f"The result of rank 0 of Job {name} reached the {MAX_TERMINATION_MESSAGE}-byte limit of a "
                    "termination message; keep it small (ids, URIs and final metrics; log the rest to MLflow)",
                    job=name,
                    pod=pod.metadata.name,
                    model=self.spec.experiment_name,
                    reason="too-large",
                )
            return str(message)
        return None
