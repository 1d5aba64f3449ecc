"""
Multi-node training as a Kubeflow Trainer v2 ``TrainJob``, on a (Cluster)TrainingRuntime the cluster runs.

The TrainJob (:func:`~airflow_mlops.training.kubernetes.manifests.trainjob_manifest`) is created through
``KubernetesHook``'s custom-objects API; the Trainer controller turns it into a JobSet of ``num_nodes`` pods.
With a Kueue ``queue_name`` it is created suspended and the task first waits, deferred, in
:class:`~airflow_mlops.triggers.training.KueueAdmissionTrigger`; then it waits in
:class:`~airflow_mlops.triggers.training.TrainJobTrigger` on the TrainJob's ``Complete`` / ``Failed``
conditions (or in the worker, not deferrable). Afterwards :class:`TrainJobTraining` copies every pod's log into
the task log, reads rank 0's result from its termination message, explains a failure from the pods' own
status, and deletes the TrainJob (its JobSet and pods with it).

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
    COMPLETION_INDEX_ANNOTATION,
    INSTANCE_LABEL,
    JOBSET_NAME_LABEL,
    TRAINER_CONTAINER,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    instance_key,
    trainjob_manifest,
)
from airflow_mlops.training.kubernetes.pod import api_error_message, serialize

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.training.base import RawResult, TrainingCallbacks
    from airflow_mlops.training.kubernetes.settings import KubernetesSettings
    from airflow_mlops.training.spec import TrainingSpec

#: Largest result a trainer can return (the kubelet's limit on a termination message).
MAX_TERMINATION_MESSAGE = 4096


def trainjob_name(task_id: str) -> str:
    """``tj-<task>-<random>``: short enough for the JobSet's ``<name>-node-0-<rank>`` pod host names."""
    slug = re.sub(r"[^a-z0-9-]+", "-", task_id.lower()).strip("-")[:30].strip("-") or "train"
    return f"tj-{slug}-{secrets.token_hex(4)}"


def _rank(pod: dict[str, Any]) -> int:
    try:
        return int(
            ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0")
        )
    except ValueError:
        return 0


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


class TrainJobTraining:
    """
    The TrainJob of one training: start it (or reattach), wait for admission and completion, finish it.

    :param runtime: The runtime's settings (``training_runtime`` names the (Cluster)TrainingRuntime).
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

    # -- the custom objects API ----------------------------------------------------------------------------

    def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]  # noqa: TID253

        try:
            return self.hook.get_custom_object(
                TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL, name, namespace
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _list(self, namespace: str) -> list[dict[str, Any]]:
        selector = f"{INSTANCE_LABEL}={instance_key(self.spec)}"
        listed = self.hook.custom_object_client.list_namespaced_custom_object(
            TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, label_selector=selector
        )
        return sorted(listed.get("items") or [], key=lambda o: o["metadata"].get("creationTimestamp") or "")

    def _delete(self, namespace: str, name: str) -> None:
        """Delete TrainJob *name* with its JobSet and pods (best effort: a cleanup must not hide the outcome)."""
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        try:
            self.hook.delete_custom_object(
                TRAINER_GROUP,
                TRAINER_VERSION,
                TRAINJOB_PLURAL,
                name,
                namespace,
                propagation_policy="Foreground",
            )
            self.callbacks.log.info("Deleted TrainJob %s/%s", namespace, name)
        except ApiException as err:
            if err.status != 404:
                self.callbacks.log.warning("Could not delete TrainJob %s/%s: %s", namespace, name, err.reason)

    # -- the training --------------------------------------------------------------------------------------

    def start(self) -> RawResult:
        """Create the TrainJob (or reattach to the one of an earlier try) and wait for it."""
        from kubernetes.client.exceptions import ApiException  # noqa: TID253

        runtime, spec, hook, log = self.runtime, self.spec, self.hook, self.callbacks.log
        namespace = runtime.namespace or hook.get_namespace() or "default"
        name = None
        for obj in self._list(namespace):
            if name is None and not _condition(obj, "Failed"):
                # A TrainJob of an earlier try (the worker died): wait for it, or read it if it already finished.
                name = obj["metadata"]["name"]
                log.info("Reattaching to TrainJob %s/%s of an earlier try", namespace, name)
            else:
                self._delete(namespace, obj["metadata"]["name"])
        if name is None:
            name = trainjob_name(spec.task_id)
            manifest = trainjob_manifest(runtime, spec, name=name, namespace=namespace)
            try:
                hook.create_custom_object(
                    TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL, manifest, namespace
                )
            except ApiException as err:
                if err.status in (400, 422):
                    raise InvalidManifestError(
                        f"The API server rejected the TrainJob {namespace}/{name} of task {spec.task_id!r}: "
                        f"{api_error_message(err)}",
                        job=name,
                        model=spec.experiment_name,
                        reason=str(err.reason),
                    ) from err
                raise
            log.info(
                "TrainJob %s/%s on %s %s: %d nodes x %d processes (start %d of this try) for MLflow run %s",
                namespace, name, runtime.training_runtime_kind, runtime.training_runtime, runtime.num_nodes,
                runtime.procs_per_node, spec.attempt, spec.mlflow_run_id,
            )  # fmt: skip
        self.namespace, self.name = namespace, name
        current = self._get(name, namespace)
        if runtime.queue_name and current is not None and (current.get("spec") or {}).get("suspend"):
            return self._wait_for_admission(name, namespace)
        return self._wait(name, namespace)

    def _wait_for_admission(self, name: str, namespace: str) -> RawResult:
        """Queued: wait (deferred) until Kueue admits the TrainJob; this wait is not training time."""
        runtime = self.runtime
        state = defer_for_admission(self, "TrainJob", "TrainJob", name, namespace)
        started = time.monotonic()
        while True:
            obj = self._get(name, namespace)
            waited = round(time.monotonic() - started, 1)
            if obj is None:
                return self.resume(
                    {"status": "gone", "message": "deleted while queued", "waited": waited}, state
                )
            if not (obj.get("spec") or {}).get("suspend"):
                return self.resume({"status": "admitted", "waited": waited}, state)
            if waited >= runtime.admission_timeout:
                return self.resume({"status": "timeout", "waited": waited}, state)
            time.sleep(runtime.poll_interval)

    def _wait(self, name: str, namespace: str) -> RawResult:
        """Wait until the TrainJob is Complete or Failed: deferred in the triggerer, else in the worker."""
        runtime = self.runtime
        state = {"mode": "trainjob", "phase": "training", "name": name, "namespace": namespace}
        if runtime.deferrable:
            from airflow_mlops.triggers.training import TrainJobTrigger

            self.callbacks.defer(
                trigger=TrainJobTrigger(
                    name=name, namespace=namespace, connection=runtime.connection.to_dict(),
                    poll_interval=runtime.poll_interval,
                ),
                spec=self.spec,
                state=state,
            )  # fmt: skip
        while True:
            obj = self._get(name, namespace)
            if obj is None:
                return self.resume({"status": "error", "message": "disappeared", "reason": "Deleted"}, state)
            for kind, status in (("Failed", "failed"), ("Complete", "success")):
                if condition := _condition(obj, kind):
                    event = {
                        "status": status,
                        "message": condition.get("message"),
                        "reason": condition.get("reason"),
                    }
                    return self.resume(event, state)
            time.sleep(runtime.poll_interval)

    def resume(self, event: dict[str, Any], state: dict[str, Any]) -> RawResult:
        """Go on after a wait: after admission, wait for the training; after the training, finish it."""
        name, namespace = state["name"], state["namespace"]
        self.namespace, self.name = namespace, name
        if state.get("phase") == "admission":
            return self._admitted(event, name, namespace)
        try:
            return self._finish(event, name, namespace)
        finally:
            self._delete(namespace, name)

    def _admitted(self, event: dict[str, Any], name: str, namespace: str) -> RawResult:
        runtime, spec, log = self.runtime, self.spec, self.callbacks.log
        status = event.get("status")
        if status == "admitted":
            log.info(
                "TrainJob %s/%s was admitted by Kueue queue %r after %s s in the queue; training starts",
                namespace, name, runtime.queue_name, event.get("waited"),
            )  # fmt: skip
            return self._wait(name, namespace)
        self._delete(namespace, name)  # it must not start later and hold GPUs nobody waits for
        if status == "timeout":
            raise TrainingAdmissionTimeoutError(
                f"TrainJob {namespace}/{name} waited {event.get('waited')} s on Kueue queue {runtime.queue_name!r} "
                f"without being admitted (admission_timeout={runtime.admission_timeout}); it was deleted. The "
                "queue's ClusterQueue has no free quota for it: the task's retries queue it again, or raise "
                "admission_timeout, ask for fewer nodes or GPUs, or use a queue with more quota.",
                job=name,
                model=spec.experiment_name,
                reason="AdmissionTimeout",
            )
        raise TrainingError(
            f"TrainJob {namespace}/{name} did not reach admission on Kueue queue {runtime.queue_name!r}: "
            f"{event.get('message')}",
            job=name,
            model=spec.experiment_name,
            reason=str(status),
        )

    def _pods(self, name: str, namespace: str) -> list[dict[str, Any]]:
        listed = self.hook.core_v1_client.list_namespaced_pod(
            namespace, label_selector=f"{JOBSET_NAME_LABEL}={name}"
        )
        return sorted((serialize(pod) for pod in listed.items), key=_rank)

    def _copy_logs(self, pods: list[dict[str, Any]]) -> None:
        log = self.callbacks.log
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            log.info("Output of node %d (pod %s):", _rank(pod), pod_name)
            try:
                response = self.hook.core_v1_client.read_namespaced_pod_log(
                    pod_name, pod["metadata"]["namespace"], container=TRAINER_CONTAINER, _preload_content=False
                )
                text = response.data.decode("utf-8", "replace")
            except Exception as err:
                log.warning("Could not read the output of pod %s: %s", pod_name, err)
                continue
            for line in text.splitlines():
                log.info("[node %d] %s", _rank(pod), line)

    def _finish(self, event: dict[str, Any], name: str, namespace: str) -> RawResult:
        runtime, spec, log = self.runtime, self.spec, self.callbacks.log
        pods = self._pods(name, namespace)
        self._copy_logs(pods)
        if event.get("status") != "success":
            failure = self._failure(pods, name, event)
            if failure.retryable and spec.attempt <= runtime.max_preemptions:
                log.warning("%s (restart %d of %d)", failure.line, spec.attempt, runtime.max_preemptions)
                self._delete(namespace, name)  # before the next TrainJob starts
                self.spec = spec.next_attempt()
                return self.start()
            raise failure.error(job=name, model=spec.experiment_name)
        return self._rank0_result(pods, name)

    def _failure(self, pods: list[dict[str, Any]], name: str, event: dict[str, Any]) -> Failure:
        """The most telling failure among the TrainJob's pods (a real failure over a disruption)."""
        failures = []
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            node = container_status(pod, TRAINER_CONTAINER).get("state") or {}
            exit_code = (node.get("terminated") or {}).get("exitCode")
            if phase == "Succeeded" or (phase == "Running" and not node.get("waiting")) or exit_code == 0:
                continue
            pod_name = pod["metadata"]["name"]
            what = f"Node {_rank(pod)} of {self.runtime.num_nodes} (pod {pod_name}) of TrainJob {name}"
            failures.append(
                explain_pod_failure(
                    pod, self.runtime, pod_name=pod_name, what=what, container=TRAINER_CONTAINER
                )
            )
        if failures:
            failures.sort(key=lambda f: f.retryable)  # a real failure explains more than a disruption
            return failures[0]
        reason = event.get("reason") or "unknown"
        gone = reason == "Deleted"
        return Failure(
            "gone" if gone else "unknown",
            f"TrainJob {name} {'disappeared' if gone else 'failed'} ({reason}: {event.get('message') or 'no message'}) "
            "and none of its pods is left to say why.",
            retryable=gone,
            reason=reason,
        )

    def _rank0_result(self, pods: list[dict[str, Any]], name: str) -> RawResult:
        for pod in pods:
            if _rank(pod) != 0:
                continue
            record_image_digest(self.spec, pod, TRAINER_CONTAINER, self.callbacks.log)
            terminated = (container_status(pod, TRAINER_CONTAINER).get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if not message:
                return None
            if len(message.encode()) >= MAX_TERMINATION_MESSAGE:
                raise TrainingResultError(
                    f"The result of rank 0 of TrainJob {name} reached the {MAX_TERMINATION_MESSAGE}-byte limit of "
                    "a termination message; keep it small (ids, URIs and final metrics; log the rest to MLflow)",
                    job=name,
                    pod=pod["metadata"]["name"],
                    model=self.spec.experiment_name,
                    reason="too-large",
                )
            return str(message)
        return None

    def stop(self) -> None:
        """The task was killed while waiting in the worker: delete the TrainJob."""
        if self.namespace and self.name:
            self._delete(self.namespace, self.name)
