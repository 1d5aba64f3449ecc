"""
Why a training pod failed: one line saying what happened and what to change, and the exception type for it.

:func:`explain_pod_failure` reads a pod's status (a plain dict, as the API returns it); :meth:`Failure.error`
turns the explanation into the exception of its kind (:mod:`airflow_mlops.exceptions`): an OOMKilled pod or
an image that cannot be pulled fails at once, a preempted pod is retryable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import (
    TrainingError,
    TrainingImageError,
    TrainingPreemptedError,
    TrainingResourceError,
    TrainingTimeoutError,
)
from airflow_mlops.trainer.lifecycle import EXIT_PREEMPTED
from airflow_mlops.training.kubernetes.config import GPU_PRODUCT_LABEL
from airflow_mlops.training.kubernetes.manifests import BASE_CONTAINER

if TYPE_CHECKING:
    from airflow_mlops.training.kubernetes.settings import KubernetesSettings

IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
DISRUPTIONS = {
    "PreemptionByScheduler": "preempted by a higher-priority pod",
    "PreemptionByKubeScheduler": "preempted by a higher-priority pod",
    "EvictionByEvictionAPI": "evicted through the Eviction API (a node drain or an autoscaler scale-down)",
    "DeletionByTaintManager": "deleted because its node became unreachable or was tainted NoExecute",
    "DeletionByPodGC": "deleted because its node disappeared",
    "TerminationByKubelet": "terminated by the kubelet (node pressure or a node shutdown)",
}

#: The exception raised for each kind of failure.
ERRORS: dict[str, type[TrainingError]] = {
    "gone": TrainingPreemptedError,
    "preempted": TrainingPreemptedError,
    "evicted": TrainingPreemptedError,
    "stopped": TrainingPreemptedError,
    "oom": TrainingResourceError,
    "image": TrainingImageError,
    "config": TrainingImageError,
    "deadline": TrainingTimeoutError,
}


@dataclass(frozen=True)
class Failure:
    """
    Why a training pod failed.

    :param kind: ``oom``, ``image``, ``config``, ``preempted``, ``evicted``, ``gone``, ``stopped``,
        ``unschedulable``, ``deadline``, ``exit``, ``pending`` or ``unknown``.
    :param line: One line for the user: what happened and what to change.
    :param retryable: Whether starting the pod again within the same try may help (a disruption).
    :param reason: The Kubernetes reason behind it (``OOMKilled``, ``ImagePullBackOff``...), else *kind*.
    :param pod: Name of the pod.
    """

    kind: str
    line: str
    retryable: bool = False
    reason: str | None = None
    pod: str | None = None

    def error(self, line: str | None = None, **fields: Any) -> TrainingError:
        """The exception of this kind of failure, with *line* (default :attr:`line`) and the pod's fields."""
        error_type = ERRORS.get(self.kind, TrainingError)
        return error_type(line or self.line, pod=self.pod, reason=self.reason or self.kind, **fields)


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The status of container *name* of *pod* (empty when it has none)."""
    status = pod.get("status") or {}
    for item in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if item.get("name") == name:
            return item
    return {}


def _limit(pod: dict[str, Any], resource: str, name: str = BASE_CONTAINER) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == name:
            return ((container.get("resources") or {}).get("limits") or {}).get(resource)
    return None


def _scheduling_advice(message: str, runtime: KubernetesSettings) -> str:
    hints = []
    lowered = message.lower()
    gpus = runtime.gpus
    if f"insufficient {gpus.resource}".lower() in lowered:
        hints.append(
            f"no node has {gpus.count} free {gpus.resource}: ask for fewer gpus, wait for capacity "
            "(raise schedule_timeout) or add GPU nodes (is the device plugin running?)"
        )
    if "insufficient cpu" in lowered or "insufficient memory" in lowered:
        hints.append("lower cpu= / memory= or add bigger nodes")
    if "node affinity/selector" in lowered or "node(s) didn't match" in lowered:
        hints.append(
            "no node has the labels it asks for: check gpu_product / node_selector against "
            f"'kubectl get nodes -L {GPU_PRODUCT_LABEL}'"
        )
    if "untolerated taint" in lowered or "had taint" in lowered:
        hints.append("nodes carry taints it does not tolerate: add tolerations=")
    if not hints:
        hints.append(
            "ask for fewer resources, check node_selector / gpu_product / tolerations, or raise schedule_timeout"
        )
    text = "; ".join(hints)
    return text[0].upper() + text[1:] + "."


def explain_pod_failure(
    pod: dict[str, Any] | None,
    runtime: KubernetesSettings,
    *,
    pod_name: str,
    message: str | None = None,
    what: str | None = None,
    container: str = BASE_CONTAINER,
) -> Failure:
    """
    One line saying why training pod *pod_name* failed and what to change.

    :param pod: The pod as the API returned it (``ApiClient().sanitize_for_serialization(V1Pod)``), or None
        when it no longer exists.
    :param runtime: The runtime that started it (its settings are named in the advice).
    :param pod_name: Name of the pod.
    :param message: What the waiting code reported (used when the status tells nothing more).
    :param what: How to name the pod in the line (default ``Training pod <name>``).
    :param container: Name of the trainer container (``node`` in a Kubeflow Trainer runtime).
    """
    what = what or f"Training pod {pod_name}"
    restart = "it is started again from the last checkpoint"

    def failure(kind: str, line: str, retryable: bool = False, reason: str | None = None) -> Failure:
        return Failure(kind, line, retryable, reason or kind, pod_name)

    if pod is None:
        return failure(
            "gone",
            f"{what} disappeared before it finished: it was deleted (preempted by a higher-priority pod, its "
            f"spot node reclaimed, or deleted by hand); {restart}. To make this rarer, give it a higher "
            "priority_class.",
            retryable=True,
        )
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    base = container_status(pod, container)
    state = base.get("state") or {}
    terminated = state.get("terminated") or (base.get("lastState") or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    reason = status.get("reason") or ""
    status_message = _one_line(status.get("message"))

    disruption = conditions.get("DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        why = DISRUPTIONS.get(disruption.get("reason") or "", f"disrupted ({disruption.get('reason')})")
        detail = _one_line(disruption.get("message")) or status_message
        return failure(
            "preempted",
            f"{what} was {why}" + (f" ({detail})" if detail else "") + f"; {restart}. To make this rarer, "
            "give it a higher priority_class or run it on on-demand (non-spot) nodes.",
            retryable=True,
            reason=disruption.get("reason"),
        )
    if reason == "Evicted":
        return failure(
            "evicted",
            f"{what} was evicted: {status_message or 'the node ran short of resources'}; {restart}. Request "
            "what it really uses (memory= sets requests = limits, so the pod is evicted last) and keep "
            "scratch data off the node's disk.",
            retryable=True,
            reason=reason,
        )
    if (
        reason in ("Shutdown", "NodeShutdown", "Terminated")
        and "shutdown" in (status_message + reason).lower()
    ):
        return failure(
            "preempted", f"{what} was stopped by a node shutdown ({status_message}); {restart}.", True, reason
        )
    if terminated.get("reason") == "OOMKilled":
        limit = _limit(pod, "memory", container)
        return failure(
            "oom",
            f"{what} was OOMKilled: the trainer used more memory than its limit "
            f"({limit or 'none set, so the node ran out'}; /dev/shm counts towards it). Raise memory= (or "
            "memory_limit=) of the KubernetesRuntime's Resources, or lower the batch size or data loader "
            "workers.",
            reason="OOMKilled",
        )
    if waiting.get("reason") in IMAGE_REASONS:
        image = base.get("image") or runtime.image
        return failure(
            "image",
            f"{what} cannot pull image {image!r} ({waiting['reason']}: {_one_line(waiting.get('message'))}). "
            "Check the image name and tag, and give image_pull_secrets= for a private registry.",
            reason=waiting["reason"],
        )
    if waiting.get("reason") in CONFIG_REASONS:
        namespace = (pod.get("metadata") or {}).get("namespace") or "its namespace"
        return failure(
            "config",
            f"{what} cannot start its container ({waiting['reason']}: {_one_line(waiting.get('message'))}). "
            f"Check that every Secret and key named in secret_env / env_from_secrets exists in {namespace}.",
            reason=waiting["reason"],
        )
    scheduled = conditions.get("PodScheduled")
    if status.get("phase") == "Pending" and scheduled and scheduled.get("status") == "False":
        detail = _one_line(scheduled.get("message") or scheduled.get("reason"))
        return failure(
            "unschedulable",
            f"{what} could not be scheduled within {runtime.schedule_timeout} s: {detail}. "
            + _scheduling_advice(detail, runtime),
            reason=scheduled.get("reason") or "Unschedulable",
        )
    if reason == "DeadlineExceeded":
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        return failure(
            "deadline",
            f"{what} ran longer than the task's timeout ({deadline} s) and was stopped. Raise timeout=, or "
            "save checkpoints so that a retry goes on where it stopped.",
            reason=reason,
        )
    if terminated:
        code = terminated.get("exitCode")
        if code == EXIT_PREEMPTED:
            return failure(
                "stopped",
                f"{what}: the trainer stopped on SIGTERM (exit code {code}), the notice Kubernetes gives before "
                f"taking a pod away; {restart}.",
                retryable=True,
            )
        note = _one_line(terminated.get("message"))[-300:]
        return failure(
            "exit",
            f"{what}: the trainer exited with code {code} ({terminated.get('reason') or 'Error'})"
            + (f": {note}" if note else "")
            + ". Its output is in the task log above.",
            reason=terminated.get("reason") or "Error",
        )
    if status.get("phase") == "Pending":
        return failure(
            "pending",
            f"{what} did not start ({_one_line(message) or 'still Pending'}). Check its events "
            f"('kubectl describe pod {pod_name}'); raise startup_timeout for a large image.",
        )
    detail = status_message or reason or _one_line(message) or "no reason given"
    return failure("unknown", f"{what} failed (phase {status.get('phase')}): {detail}.")
