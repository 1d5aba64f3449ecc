"""
Execute-time machinery of :class:`airflow_mlops.runtimes.KubernetesRuntime` (private).

This module imports the kubernetes client and the cncf-kubernetes operators, so it is imported only from the
runtime's methods while a task runs, never when a DAG file is parsed.

It builds plain Kubernetes manifests (dicts, easy to check against the official schemas), then hands a
single-node pod to ``KubernetesPodOperator`` (creation, reattach, deferral, logs, XCom sidecar, cleanup) and
a multi-node Indexed Job to ``KubernetesJobOperator``; the only waiting code of its own is the trigger wrapper
in :mod:`airflow_mlops.triggers.training`. When a pod fails, :func:`explain_pod_failure` turns its status into
one line saying what happened and what to change.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from airflow.sdk.exceptions import TaskDeferred
from kubernetes.client import ApiClient, Configuration  # noqa: TID253 - loaded at execute time only
from kubernetes.client import models as k8s  # noqa: TID253
from kubernetes.client.exceptions import ApiException  # noqa: TID253

from airflow_mlops.data.storage import is_s3
from airflow_mlops.exceptions import TrainingError
from airflow_mlops.operators.training import parse_entrypoint
from airflow_mlops.runtimes import GPU_PRODUCT_LABEL
from airflow_mlops.trainer import contract
from airflow_mlops.trainer.lifecycle import EXIT_PREEMPTED, SYSTEM_METRICS_ENV

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.operators.training import TrainModelOperator
    from airflow_mlops.runtimes import KubernetesRuntime, TrainingLaunch

#: Name of the trainer container (KubernetesPodOperator's base container).
BASE_CONTAINER = KubernetesPodOperator.BASE_CONTAINER_NAME
#: Where a trainer in Kubernetes writes its result (KPO's XCom sidecar reads it from there).
RESULT_PATH = "/airflow/xcom/return.json"
#: Largest result a multi-node trainer can return (the kubelet's limit on a termination message).
MAX_TERMINATION_MESSAGE = 4096
SHM_VOLUME = "dshm"
LABEL_PREFIX = "airflow-mlops/"
DAG_LABEL = LABEL_PREFIX + "dag-id"
TASK_LABEL = LABEL_PREFIX + "task-id"
RUN_LABEL = LABEL_PREFIX + "run-id"
MODEL_LABEL = LABEL_PREFIX + "model"
INSTANCE_LABEL = LABEL_PREFIX + "instance"
MLFLOW_RUN_ANNOTATION = LABEL_PREFIX + "mlflow-run-id"
EXPERIMENT_ANNOTATION = LABEL_PREFIX + "experiment"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

_IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
_DISRUPTIONS = {
    "PreemptionByScheduler": "preempted by a higher-priority pod",
    "PreemptionByKubeScheduler": "preempted by a higher-priority pod",
    "EvictionByEvictionAPI": "evicted through the Eviction API (a node drain or an autoscaler scale-down)",
    "DeletionByTaintManager": "deleted because its node became unreachable or was tainted NoExecute",
    "DeletionByPodGC": "deleted because its node disappeared",
    "TerminationByKubelet": "terminated by the kubelet (node pressure or a node shutdown)",
}


# -- names, labels, environment ------------------------------------------------------------------------


def label_value(value: object) -> str:
    """*value* as a valid label value: invalid characters become ``_``; too long or changed gets a hash."""
    text = str(value)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("_.-")
    if safe == text and len(safe) <= 63:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = safe[: 63 - len(digest) - 1].rstrip("_.-")
    return f"{head}-{digest}" if head else digest


def instance_key(launch: TrainingLaunch) -> str:
    """A label value naming the task instance exactly (dag, run, task, map index), whatever its characters."""
    identity = json.dumps([launch.dag_id, launch.dag_run_id, launch.task_id, launch.map_index])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def object_labels(runtime: KubernetesRuntime, launch: TrainingLaunch) -> dict[str, str]:
    """Labels of every object of a training: the user's, then cost attribution and the instance key."""
    return {
        **{str(k): str(v) for k, v in runtime.labels.items()},
        DAG_LABEL: label_value(launch.dag_id),
        TASK_LABEL: label_value(launch.task_id),
        RUN_LABEL: label_value(launch.dag_run_id),
        MODEL_LABEL: label_value(runtime.model_label or launch.experiment_name),
        INSTANCE_LABEL: instance_key(launch),
    }


def object_annotations(runtime: KubernetesRuntime, launch: TrainingLaunch) -> dict[str, str]:
    """Annotations: the user's, plus the unabridged Airflow ids and the MLflow run."""
    return {
        **{str(k): str(v) for k, v in runtime.annotations.items()},
        DAG_LABEL: launch.dag_id,
        TASK_LABEL: launch.task_id,
        RUN_LABEL: launch.dag_run_id,
        MLFLOW_RUN_ANNOTATION: launch.mlflow_run_id,
        EXPERIMENT_ANNOTATION: launch.experiment_name,
    }


def container_command(runtime: KubernetesRuntime, operator: TrainModelOperator) -> list[str]:
    """The trainer container's command: the image's ``python`` (or ``torchrun``) for a module entrypoint."""
    module, args = parse_entrypoint(operator.entrypoint)
    if module is None:
        return args
    if runtime.uses_torchrun:
        return ["torchrun", "--module", module, *args]  # torchrun reads its settings from PET_* variables
    return ["python", "-m", module, *args]


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def distributed_env(runtime: KubernetesRuntime, master_addr: str | None) -> list[dict[str, Any]]:
    """torchrun's settings (``PET_*``) and the plain rendezvous variables, for one pod or an Indexed Job."""
    procs = runtime.procs_per_node
    if runtime.num_nodes == 1:
        if procs == 1:
            return []
        return [_env("PET_STANDALONE", "1"), _env("PET_NNODES", "1"), _env("PET_NPROC_PER_NODE", str(procs))]
    if master_addr is None:
        raise ValueError("a multi-node training needs the rendezvous address")
    rank_field = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    port = str(runtime.master_port)
    return [
        _env("MASTER_ADDR", master_addr),
        _env("MASTER_PORT", port),
        _env("NNODES", str(runtime.num_nodes)),
        _env("WORLD_SIZE", str(runtime.num_nodes * procs)),
        _field_env("NODE_RANK", rank_field),
        _env("PET_MASTER_ADDR", master_addr),
        _env("PET_MASTER_PORT", port),
        _env("PET_NNODES", str(runtime.num_nodes)),
        _env("PET_NPROC_PER_NODE", str(procs)),
        _field_env("PET_NODE_RANK", rank_field),
    ]


def trainer_env(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    launch: TrainingLaunch,
    *,
    master_addr: str | None = None,
    distributed: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """
    ``(env, envFrom)`` of the trainer container.

    Plain values: the contract, non-secret connection settings, the operator's ``env``. Credentials only as
    references to the Secrets the runtime names; the operator warns when a connection holds credentials that
    no Secret reference provides.
    """
    public, secret_names = operator.remote_env()
    plain: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if runtime.system_metrics:
        plain[SYSTEM_METRICS_ENV] = "true"
    plain.update(public)
    plain.update({str(k): str(v) for k, v in (operator.env or {}).items()})
    plain.update(launch.contract_env)
    plain[contract.RESULT_PATH] = RESULT_PATH
    refs = runtime.secret_refs()
    missing = [name for name in secret_names if name not in refs]
    if missing and not runtime.env_from_secrets:
        operator.log.warning(
            "The pod gets no %s: the connections hold credentials, which are never copied into a pod spec. "
            "Name a Kubernetes Secret for them (KubernetesRuntime(secret_env=...) or env_from_secrets=...) "
            "unless the pod's service account gives that access.",
            ", ".join(missing),
        )
    env = [_env(name, value) for name, value in plain.items() if name not in refs]
    if distributed:
        env += distributed_env(runtime, master_addr)
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, (secret, key) in refs.items()
    ]
    env_from = [{"secretRef": {"name": name}} for name in runtime.env_from_secrets]
    return env, env_from


def resources(runtime: KubernetesRuntime) -> dict[str, dict[str, str]]:
    """Requests and limits of the trainer container; GPUs go in the limits."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if runtime.cpu:
        requests["cpu"] = runtime.cpu
    if runtime.memory:
        requests["memory"] = runtime.memory
    if runtime.cpu_limit:
        limits["cpu"] = runtime.cpu_limit
    if runtime.memory_limit or runtime.memory:
        limits["memory"] = runtime.memory_limit or runtime.memory  # type: ignore[assignment]
    if runtime.gpus:
        limits[runtime.gpu_resource] = str(runtime.gpus)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def pod_spec(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    launch: TrainingLaunch,
    *,
    subdomain: str | None = None,
    master_addr: str | None = None,
    termination_message_result: bool = False,
    distributed: bool = True,
) -> dict[str, Any]:
    """
    The pod spec of a training pod (or of each pod of a multi-node Job).

    :param distributed: Whether to set the rendezvous variables (not for a platform that sets its own).
    """
    env, env_from = trainer_env(runtime, operator, launch, master_addr=master_addr, distributed=distributed)
    container: dict[str, Any] = {
        "name": BASE_CONTAINER,
        "image": runtime.image,
        "command": container_command(runtime, operator),
        "env": env,
    }
    if env_from:
        container["envFrom"] = env_from
    if runtime.image_pull_policy:
        container["imagePullPolicy"] = runtime.image_pull_policy
    if res := resources(runtime):
        container["resources"] = res
    mounts = [dict(m) for m in runtime.volume_mounts]
    volumes = [dict(v) for v in runtime.volumes]
    if runtime.shm_size:
        mounts.insert(0, {"name": SHM_VOLUME, "mountPath": "/dev/shm"})
        volumes.insert(
            0, {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": runtime.shm_size}}
        )
    if mounts:
        container["volumeMounts"] = mounts
    if runtime.num_nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": runtime.master_port}]
    if termination_message_result:
        # The kubelet copies this file into the pod status when the container ends: rank 0's result.
        container["terminationMessagePath"] = RESULT_PATH
        container["terminationMessagePolicy"] = "File"
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "terminationGracePeriodSeconds": runtime.termination_grace_period,
    }
    if volumes:
        spec["volumes"] = volumes
    selector = dict(runtime.node_selector)
    if runtime.gpu_product:
        selector[GPU_PRODUCT_LABEL] = runtime.gpu_product
    if selector:
        spec["nodeSelector"] = selector
    tolerations = [dict(t) for t in runtime.tolerations]
    if runtime.gpus and runtime.gpu_tolerations:
        tolerations.insert(0, {"key": runtime.gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        spec["tolerations"] = tolerations
    if runtime.priority_class:
        spec["priorityClassName"] = runtime.priority_class
    if runtime.service_account:
        spec["serviceAccountName"] = runtime.service_account
    if runtime.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in runtime.image_pull_secrets]
    if operator.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, int(operator.timeout))
    if subdomain:
        spec["subdomain"] = subdomain
    return spec


def pod_manifest(runtime: KubernetesRuntime, operator: TrainModelOperator, launch: TrainingLaunch) -> dict:
    """The training pod as KubernetesPodOperator receives it (it adds the name, its labels and the sidecar)."""
    metadata: dict[str, Any] = {
        "labels": object_labels(runtime, launch),
        "annotations": object_annotations(runtime, launch),
    }
    if runtime.namespace:
        metadata["namespace"] = runtime.namespace
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": pod_spec(runtime, operator, launch),
    }


def job_manifest(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    launch: TrainingLaunch,
    *,
    name: str,
    namespace: str,
) -> dict[str, Any]:
    """The Indexed Job of a multi-node training: one pod per node, reachable as ``<name>-<rank>.<name>``."""
    labels = object_labels(runtime, launch)
    annotations = object_annotations(runtime, launch)
    spec = pod_spec(
        runtime,
        operator,
        launch,
        subdomain=name,
        master_addr=f"{name}-0.{name}",
        termination_message_result=True,
    )
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": runtime.num_nodes,
        "parallelism": runtime.num_nodes,
        "backoffLimit": 0,
        # A pod lost to preemption, eviction or node shutdown is replaced and does not fail the Job.
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]
        },
        "ttlSecondsAfterFinished": runtime.job_ttl_seconds,
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }


def service_manifest(
    runtime: KubernetesRuntime,
    launch: TrainingLaunch,
    *,
    name: str,
    namespace: str,
    job_uid: str | None = None,
) -> dict[str, Any]:
    """The headless Service giving each pod of the Job a DNS name; owned by the Job, so deleted with it."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": object_labels(runtime, launch),
    }
    if job_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": job_uid,
                "blockOwnerDeletion": False,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_NAME_LABEL: name},
            "publishNotReadyAddresses": True,  # resolvable before the trainers are Ready
            "ports": [{"name": "rendezvous", "port": runtime.master_port, "targetPort": runtime.master_port}],
        },
    }


def trainjob_manifest(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    launch: TrainingLaunch,
    *,
    name: str,
    namespace: str,
    training_runtime: str = "torch-distributed",
) -> dict[str, Any]:
    """
    The same training as a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``).

    For clusters running Kubeflow Trainer v2 (with JobSet): the ``torch-distributed`` ClusterTrainingRuntime
    starts ``torchrun`` on every node and sets the rendezvous itself, so no ``PET_*`` variables are given.
    The operator does not submit it; it is a manifest to apply (``kubectl apply``) or to build on.
    """
    spec = pod_spec(runtime, operator, launch, distributed=False)
    container = spec["containers"][0]
    module, args = parse_entrypoint(operator.entrypoint)
    command = ["torchrun", "--module", module, *args] if module else container["command"]
    env = container["env"]
    trainer: dict[str, Any] = {
        "image": runtime.image,
        "command": command,
        "numNodes": runtime.num_nodes,
        "numProcPerNode": runtime.procs_per_node,
        "env": env,
    }
    if "resources" in container:
        trainer["resourcesPerNode"] = container["resources"]
    pod_patch: dict[str, Any] = {
        key: spec[key]
        for key in ("nodeSelector", "tolerations", "serviceAccountName", "imagePullSecrets", "volumes",
                    "terminationGracePeriodSeconds")
        if key in spec
    }  # fmt: skip
    if container.get("volumeMounts"):
        pod_patch["containers"] = [{"name": "node", "volumeMounts": container["volumeMounts"]}]
    labels = object_labels(runtime, launch)
    annotations = object_annotations(runtime, launch)
    manifest: dict[str, Any] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "runtimeRef": {"name": training_runtime},
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": "airflow-mlops",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "metadata": {
                                                        "labels": labels,
                                                        "annotations": annotations,
                                                    },
                                                    "spec": pod_patch,
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }
    if operator.timeout is not None:
        manifest["spec"]["activeDeadlineSeconds"] = max(1, int(operator.timeout))
    return manifest


# -- failure reasons -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Why a training pod failed: a kind, one line for the user, and whether starting it again may help."""

    kind: str
    line: str
    retryable: bool = False


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def _container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for item in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if item.get("name") == name:
            return item
    return {}


def _limit(pod: dict[str, Any], resource: str) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == BASE_CONTAINER:
            return ((container.get("resources") or {}).get("limits") or {}).get(resource)
    return None


def _scheduling_advice(message: str, runtime: KubernetesRuntime) -> str:
    hints = []
    lowered = message.lower()
    if f"insufficient {runtime.gpu_resource}".lower() in lowered:
        hints.append(
            f"no node has {runtime.gpus} free {runtime.gpu_resource}: ask for fewer gpus, wait for capacity "
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
    runtime: KubernetesRuntime,
    *,
    pod_name: str,
    message: str | None = None,
    what: str | None = None,
) -> Failure:
    """
    One line saying why training pod *pod_name* failed and what to change.

    :param pod: The pod as the API returned it (``ApiClient().sanitize_for_serialization(V1Pod)``), or None
        when it no longer exists.
    :param message: What the waiting code reported (used when the status tells nothing more).
    :param what: How to name the pod in the line (default ``Training pod <name>``).
    """
    what = what or f"Training pod {pod_name}"
    restart = "it is started again from the last checkpoint"
    if pod is None:
        return Failure(
            "gone",
            f"{what} disappeared before it finished: it was deleted (preempted by a higher-priority pod, its "
            f"spot node reclaimed, or deleted by hand); {restart}. To make this rarer, give it a higher "
            "priority_class.",
            retryable=True,
        )
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    base = _container_status(pod, BASE_CONTAINER)
    state = base.get("state") or {}
    terminated = state.get("terminated") or (base.get("lastState") or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    reason = status.get("reason") or ""
    status_message = _one_line(status.get("message"))

    disruption = conditions.get("DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        why = _DISRUPTIONS.get(disruption.get("reason") or "", f"disrupted ({disruption.get('reason')})")
        detail = _one_line(disruption.get("message")) or status_message
        return Failure(
            "preempted",
            f"{what} was {why}" + (f" ({detail})" if detail else "") + f"; {restart}. To make this rarer, "
            "give it a higher priority_class or run it on on-demand (non-spot) nodes.",
            retryable=True,
        )
    if reason == "Evicted":
        return Failure(
            "evicted",
            f"{what} was evicted: {status_message or 'the node ran short of resources'}; {restart}. Request "
            "what it really uses (memory= sets requests = limits, so the pod is evicted last) and keep "
            "scratch data off the node's disk.",
            retryable=True,
        )
    if (
        reason in ("Shutdown", "NodeShutdown", "Terminated")
        and "shutdown" in (status_message + reason).lower()
    ):
        return Failure(
            "preempted", f"{what} was stopped by a node shutdown ({status_message}); {restart}.", True
        )
    if terminated.get("reason") == "OOMKilled":
        limit = _limit(pod, "memory")
        return Failure(
            "oom",
            f"{what} was OOMKilled: the trainer used more memory than its limit "
            f"({limit or 'none set, so the node ran out'}; /dev/shm counts towards it). Raise memory= (or "
            "memory_limit=) of the KubernetesRuntime, or lower the batch size or data loader workers.",
        )
    if waiting.get("reason") in _IMAGE_REASONS:
        image = base.get("image") or runtime.image
        return Failure(
            "image",
            f"{what} cannot pull image {image!r} ({waiting['reason']}: {_one_line(waiting.get('message'))}). "
            "Check the image name and tag, and give image_pull_secrets= for a private registry.",
        )
    if waiting.get("reason") in _CONFIG_REASONS:
        namespace = (pod.get("metadata") or {}).get("namespace") or "its namespace"
        return Failure(
            "config",
            f"{what} cannot start its container ({waiting['reason']}: {_one_line(waiting.get('message'))}). "
            f"Check that every Secret and key named in secret_env / env_from_secrets exists in {namespace}.",
        )
    scheduled = conditions.get("PodScheduled")
    if status.get("phase") == "Pending" and scheduled and scheduled.get("status") == "False":
        detail = _one_line(scheduled.get("message") or scheduled.get("reason"))
        return Failure(
            "unschedulable",
            f"{what} could not be scheduled within {runtime.schedule_timeout} s: {detail}. "
            + _scheduling_advice(detail, runtime),
        )
    if reason == "DeadlineExceeded":
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        return Failure(
            "deadline",
            f"{what} ran longer than the task's timeout ({deadline} s) and was stopped. Raise timeout=, or "
            "save checkpoints so that a retry goes on where it stopped.",
        )
    if terminated:
        code = terminated.get("exitCode")
        if code == EXIT_PREEMPTED:
            return Failure(
                "stopped",
                f"{what}: the trainer stopped on SIGTERM (exit code {code}), the notice Kubernetes gives before "
                f"taking a pod away; {restart}.",
                retryable=True,
            )
        note = _one_line(terminated.get("message"))[-300:]
        return Failure(
            "exit",
            f"{what}: the trainer exited with code {code} ({terminated.get('reason') or 'Error'})"
            + (f": {note}" if note else "")
            + ". Its output is in the task log above.",
        )
    if status.get("phase") == "Pending":
        return Failure(
            "pending",
            f"{what} did not start ({_one_line(message) or 'still Pending'}). Check its events "
            f"('kubectl describe pod {pod_name}'); raise startup_timeout for a large image.",
        )
    detail = status_message or reason or _one_line(message) or "no reason given"
    return Failure("unknown", f"{what} failed (phase {status.get('phase')}): {detail}.")


# -- single node: KubernetesPodOperator ------------------------------------------------------------------


class _TrainingPodOperator(KubernetesPodOperator):
    """
    KubernetesPodOperator as the engine of one training pod (built at execute time, never put in a DAG).

    Two additions: before KPO deletes a finished pod it keeps the pod's last status (for
    :func:`explain_pod_failure`), and it keeps the XCom result KPO returns when it resumes inline.
    """

    final_pod: k8s.V1Pod | None = None
    reentry_result: Any = None

    def cleanup(self, pod, remote_pod, xcom_result=None, context=None):  # type: ignore[no-untyped-def]
        latest = remote_pod
        if pod is not None:
            try:
                latest = self.pod_manager.read_pod(pod)
            except Exception:  # gone (404) or unreachable: keep what KPO had
                self.log.debug("Could not read pod %s before cleanup", pod.metadata.name, exc_info=True)
        self.final_pod = latest
        return super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)

    def trigger_reentry(self, context, event):  # type: ignore[no-untyped-def]
        self.reentry_result = super().trigger_reentry(context, event)
        return self.reentry_result


def _serialize(obj: Any) -> Any:
    return ApiClient(configuration=Configuration()).sanitize_for_serialization(obj)


def _deserialize(data: dict[str, Any], model: type) -> Any:
    return ApiClient(configuration=Configuration())._ApiClient__deserialize_model(data, model)  # type: ignore[attr-defined]


def _connection_kwargs(runtime: KubernetesRuntime) -> dict[str, Any]:
    return {
        "kubernetes_conn_id": runtime.kubernetes_conn_id,
        "config_file": runtime.config_file,
        "cluster_context": runtime.cluster_context,
        "in_cluster": runtime.in_cluster,
    }


def pod_operator(
    runtime: KubernetesRuntime, operator: TrainModelOperator, launch: TrainingLaunch
) -> _TrainingPodOperator:
    """The KubernetesPodOperator that runs the training pod of *launch*."""
    manifest = pod_manifest(runtime, operator, launch)
    return _TrainingPodOperator(
        task_id=operator.task_id,
        namespace=runtime.namespace,
        full_pod_spec=PodGenerator.deserialize_model_dict(manifest),
        labels=manifest["metadata"]["labels"],
        do_xcom_push=True,
        get_logs=True,
        deferrable=runtime.deferrable,
        poll_interval=runtime.poll_interval,
        startup_check_interval_seconds=min(runtime.poll_interval, 5),
        base_container_status_polling_interval=min(runtime.poll_interval, 1),
        schedule_timeout_seconds=runtime.schedule_timeout,
        startup_timeout_seconds=runtime.startup_timeout,
        termination_grace_period=runtime.termination_grace_period,
        on_finish_action="delete_pod",
        log_events_on_failure=True,
        log_pod_spec_on_failure=False,  # the one-line reason says what matters; the spec is in the API
        execution_timeout=operator.execution_timeout,
        **_connection_kwargs(runtime),
    )


def render_pod(
    runtime: KubernetesRuntime, operator: TrainModelOperator, launch: TrainingLaunch, context: Context
) -> dict[str, Any]:
    """The pod exactly as it would be created (KPO's request, with its labels and XCom sidecar), as a dict."""
    return _serialize(pod_operator(runtime, operator, launch).build_pod_request_obj(context, dry_run=True))


def start(
    runtime: KubernetesRuntime, operator: TrainModelOperator, context: Context, launch: TrainingLaunch
) -> Any:
    runtime.validate(rendered=True)
    places = {
        "train_data": launch.contract_env.get(contract.TRAIN_DATA),
        "valid_data": launch.contract_env.get(contract.VALID_DATA),
        "output_root (outputs, checkpoints)": launch.instance_uri,
    }
    for what, uri in places.items():
        if uri and not is_s3(uri):
            operator.log.warning(
                "%s of task %s is a local path (%s): the pod must see it at the same path (a mounted volume); "
                "an s3:// URI needs none",
                what, operator.task_id, uri,
            )  # fmt: skip
    if runtime.num_nodes > 1:
        return _start_job(runtime, operator, context, launch)
    return _start_pod(runtime, operator, context, launch)


def resume(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    context: Context,
    launch: TrainingLaunch,
    event: dict[str, Any],
    state: dict[str, Any],
) -> Any:
    if state.get("mode") == "job":
        return _finish_job(runtime, operator, context, launch, state, event)
    kpo = pod_operator(runtime, operator, launch)
    operator._k8s_engine = kpo  # type: ignore[attr-defined]
    try:
        return kpo.trigger_reentry(context, event)
    except TaskDeferred as deferred:  # KPO re-defers while the pod still runs
        operator.defer_training(
            trigger=deferred.trigger, launch=launch, state=state, timeout=deferred.timeout
        )
    except Exception as err:
        return _pod_failed(
            runtime,
            operator,
            context,
            launch,
            kpo,
            err,
            pod_name=state.get("name"),
            namespace=state.get("namespace"),
        )


def _start_pod(
    runtime: KubernetesRuntime, operator: TrainModelOperator, context: Context, launch: TrainingLaunch
) -> Any:
    kpo = pod_operator(runtime, operator, launch)
    kpo.pod_request_obj = kpo.build_pod_request_obj(context)
    # Reattaches to a pod of an earlier try that still runs (durable / reattach_on_restart), else creates one.
    kpo.pod = kpo.get_or_create_pod(pod_request_obj=kpo.pod_request_obj, context=context)
    operator._k8s_engine = kpo  # type: ignore[attr-defined]  # for on_kill
    pod = kpo.pod
    state = {"mode": "pod", "name": pod.metadata.name, "namespace": pod.metadata.namespace}
    operator.log.info(
        "Training pod %s/%s (start %d of this try) for MLflow run %s",
        pod.metadata.namespace, pod.metadata.name, launch.attempt, launch.mlflow_run_id,
    )  # fmt: skip
    try:
        if not runtime.deferrable:
            return kpo.execute_sync(context)
        kpo.invoke_defer_method(context=context)
    except TaskDeferred as deferred:
        operator.defer_training(
            trigger=deferred.trigger, launch=launch, state=state, timeout=deferred.timeout
        )
    except Exception as err:
        return _pod_failed(
            runtime,
            operator,
            context,
            launch,
            kpo,
            err,
            pod_name=pod.metadata.name,
            namespace=pod.metadata.namespace,
        )
    return kpo.reentry_result  # the pod had already finished: KPO read it without deferring


def _pod_failed(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    context: Context,
    launch: TrainingLaunch,
    kpo: _TrainingPodOperator,
    err: Exception,
    *,
    pod_name: str | None,
    namespace: str | None = None,
) -> Any:
    """Explain why the pod failed; start it again after a preemption (same checkpoint URI), else fail."""
    if kpo._killed:
        raise TrainingError(
            f"Training pod of task {operator.task_id!r} was deleted because the task was killed"
        )
    name = pod_name or (kpo.pod.metadata.name if kpo.pod is not None else None)
    if name is None:
        raise TrainingError(f"Training pod of task {operator.task_id!r} could not be created: {err}") from err
    final = kpo.final_pod
    if final is None:  # KPO failed before its cleanup: is the pod gone, or still there?
        namespace = namespace or (kpo.pod.metadata.namespace if kpo.pod is not None else None)
        try:
            final = kpo.hook.get_pod(name, namespace)
        except ApiException as api_err:
            if api_err.status != 404:
                raise TrainingError(
                    f"Training pod {namespace}/{name} failed ({err}) and cannot be read: {api_err.reason}"
                ) from err
        else:
            kpo.process_pod_deletion(final, reraise=False)
    failure = explain_pod_failure(
        _serialize(final) if final is not None else None, runtime, pod_name=name, message=str(err)
    )
    if failure.retryable and launch.attempt <= runtime.max_preemptions:
        operator.log.warning("%s (restart %d of %d)", failure.line, launch.attempt, runtime.max_preemptions)
        return _start_pod(runtime, operator, context, launch.next_attempt())
    if failure.retryable:
        raise TrainingError(
            f"{failure.line} It was already started {launch.attempt} times in this try "
            f"(max_preemptions={runtime.max_preemptions}); the task's retries start it again."
        ) from err
    raise TrainingError(failure.line) from err


# -- multi node: Indexed Job + headless Service ------------------------------------------------------------


def _job_name(task_id: str) -> str:
    """``job-<task>-<random>``, short enough for ``<name>-<rank>`` to be a valid host name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", task_id.lower()).strip("-")[:30].strip("-") or "train"
    return f"job-{slug}-{secrets.token_hex(4)}"


def job_operator(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    launch: TrainingLaunch,
    *,
    name: str,
    namespace: str,
) -> KubernetesJobOperator:
    """The KubernetesJobOperator that builds and watches the Job *name*."""
    manifest = job_manifest(runtime, operator, launch, name=name, namespace=namespace)
    template = manifest["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}
    job_spec = {k: v for k, v in manifest["spec"].items() if k != "template"}
    return KubernetesJobOperator(
        task_id=operator.task_id,
        name=name.removeprefix("job-"),  # KubernetesJobOperator adds the prefix back
        random_name_suffix=False,
        namespace=namespace,
        labels=manifest["metadata"]["labels"],
        annotations=manifest["metadata"]["annotations"],
        full_pod_spec=PodGenerator.deserialize_model_dict(pod),
        full_job_spec=_deserialize({**manifest, "spec": {**job_spec, "template": {}}}, k8s.V1Job),
        completion_mode="Indexed",
        completions=runtime.num_nodes,
        parallelism=runtime.num_nodes,
        backoff_limit=0,
        ttl_seconds_after_finished=runtime.job_ttl_seconds,
        wait_until_job_complete=True,
        deferrable=runtime.deferrable,
        job_poll_interval=runtime.poll_interval,
        do_xcom_push=False,  # rank 0's result comes back as its termination message
        get_logs=True,
        execution_timeout=operator.execution_timeout,
        **_connection_kwargs(runtime),
    )


def render_job(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    launch: TrainingLaunch,
    context: Context,
    *,
    name: str = "job-train-0000",
    namespace: str = "default",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job and Service exactly as they would be created, as dicts."""
    kjo = job_operator(runtime, operator, launch, name=name, namespace=namespace)
    job = _serialize(kjo.build_job_request_obj(context))
    return job, service_manifest(runtime, launch, name=name, namespace=namespace, job_uid="00000000-0000")


def _namespace(runtime: KubernetesRuntime, hook: KubernetesHook) -> str:
    return runtime.namespace or hook.get_namespace() or "default"


def _start_job(
    runtime: KubernetesRuntime, operator: TrainModelOperator, context: Context, launch: TrainingLaunch
) -> Any:
    hook = KubernetesHook(conn_id=runtime.kubernetes_conn_id, **{
        k: v for k, v in _connection_kwargs(runtime).items() if k != "kubernetes_conn_id"
    })  # fmt: skip
    namespace = _namespace(runtime, hook)
    selector = f"{INSTANCE_LABEL}={instance_key(launch)}"
    name = None
    for job in hook.batch_v1_client.list_namespaced_job(namespace, label_selector=selector).items:
        if name is None and (not hook.is_job_complete(job) or hook.is_job_successful(job)):
            # A Job of an earlier try (the worker died): wait for it, or read it if it already succeeded.
            name = job.metadata.name
            operator.log.info("Reattaching to Job %s/%s of an earlier try", namespace, name)
        else:
            _delete_job(hook, namespace, job.metadata.name, operator)
    if name is None:
        name = _job_name(launch.task_id)
        kjo = job_operator(runtime, operator, launch, name=name, namespace=namespace)
        created = hook.create_job(job=kjo.build_job_request_obj(context))
        service = service_manifest(
            runtime, launch, name=name, namespace=namespace, job_uid=created.metadata.uid
        )
        hook.core_v1_client.create_namespaced_service(namespace, service)
        operator.log.info(
            "Training Job %s/%s: %d nodes x %d processes, rendezvous %s-0.%s:%d (start %d of this try)",
            namespace, name, runtime.num_nodes, runtime.procs_per_node, name, name, runtime.master_port,
            launch.attempt,
        )  # fmt: skip
    state = {"mode": "job", "name": name, "namespace": namespace}
    operator._k8s_engine = ("job", hook, namespace, name)  # type: ignore[attr-defined]
    if runtime.deferrable:
        from airflow_mlops.triggers.training import KubernetesTrainingJobTrigger

        operator.defer_training(
            trigger=KubernetesTrainingJobTrigger(
                job_name=name,
                namespace=namespace,
                poll_interval=runtime.poll_interval,
                **_connection_kwargs(runtime),
            ),
            launch=launch,
            state=state,
        )
    hook.wait_until_job_complete(job_name=name, namespace=namespace, job_poll_interval=runtime.poll_interval)
    return _finish_job(runtime, operator, context, launch, state, {"status": "success"})


def _delete_job(hook: KubernetesHook, namespace: str, name: str, operator: TrainModelOperator) -> None:
    """Delete Job *name* with its pods, and its Service (best effort: a cleanup must not hide the outcome)."""
    for what, call in (
        ("Job", lambda: hook.batch_v1_client.delete_namespaced_job(
            name, namespace, propagation_policy="Background")),
        ("Service", lambda: hook.core_v1_client.delete_namespaced_service(name, namespace)),
    ):  # fmt: skip
        try:
            call()
            operator.log.info("Deleted %s %s/%s", what, namespace, name)
        except ApiException as err:
            if err.status != 404:
                operator.log.warning("Could not delete %s %s/%s: %s", what, namespace, name, err.reason)


def _rank(pod: k8s.V1Pod) -> int:
    annotations = pod.metadata.annotations or {}
    try:
        return int(annotations.get(COMPLETION_INDEX_ANNOTATION, "0"))
    except ValueError:
        return 0


def _finish_job(
    runtime: KubernetesRuntime,
    operator: TrainModelOperator,
    context: Context,
    launch: TrainingLaunch,
    state: dict[str, Any],
    event: dict[str, Any],
) -> Any:
    """Read logs, result and failure of a finished Job; then delete it and its Service."""
    hook = KubernetesHook(conn_id=runtime.kubernetes_conn_id, **{
        k: v for k, v in _connection_kwargs(runtime).items() if k != "kubernetes_conn_id"
    })  # fmt: skip
    name, namespace = state["name"], state["namespace"]
    operator._k8s_engine = ("job", hook, namespace, name)  # type: ignore[attr-defined]
    kjo = job_operator(runtime, operator, launch, name=name, namespace=namespace)
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
            operator.log.info("Output of node %d (pod %s):", _rank(pod), pod.metadata.name)
            try:
                kjo._write_logs(pod)
            except Exception as err:
                operator.log.warning("Could not read the output of pod %s: %s", pod.metadata.name, err)
        failed_reason = hook.is_job_failed(job) if job is not None else "the Job disappeared"
        if event.get("status") != "success" or failed_reason:
            failure = _job_failure(runtime, pods, name, failed_reason or event.get("message"))
            if failure.retryable and launch.attempt <= runtime.max_preemptions:
                operator.log.warning(
                    "%s (restart %d of %d)", failure.line, launch.attempt, runtime.max_preemptions
                )
                _delete_job(hook, namespace, name, operator)  # before the next Job starts (and again below)
                return _start_job(runtime, operator, context, launch.next_attempt())
            raise TrainingError(failure.line)
        return _rank0_result(pods, name)
    finally:
        _delete_job(hook, namespace, name, operator)


def _job_failure(runtime: KubernetesRuntime, pods: list[k8s.V1Pod], name: str, reason: Any) -> Failure:
    """The most telling failure among the Job's pods (a real failure over a disruption)."""
    failures = []
    for pod in pods:
        data = _serialize(pod)
        phase = (data.get("status") or {}).get("phase")
        base = _container_status(data, BASE_CONTAINER).get("state") or {}
        exit_code = (base.get("terminated") or {}).get("exitCode")
        if phase == "Succeeded" or (phase == "Running" and not base.get("waiting")) or exit_code == 0:
            continue
        what = f"Node {_rank(pod)} of {runtime.num_nodes} (pod {pod.metadata.name}) of Job {name}"
        failures.append(explain_pod_failure(data, runtime, pod_name=pod.metadata.name, what=what))
    if not failures:
        return Failure(
            "unknown",
            f"Training Job {name} failed ({reason or 'no reason given'}) and none of its pods is left to say why.",
            retryable=reason == "the Job disappeared",
        )
    failures.sort(key=lambda f: f.retryable)  # a real failure explains more than a disruption
    return failures[0]


def _rank0_result(pods: list[k8s.V1Pod], name: str) -> Any:
    for pod in pods:
        if _rank(pod) != 0:
            continue
        data = _serialize(pod)
        terminated = (_container_status(data, BASE_CONTAINER).get("state") or {}).get("terminated") or {}
        message = terminated.get("message")
        if not message:
            return None
        if len(message.encode()) >= MAX_TERMINATION_MESSAGE:
            raise TrainingError(
                f"The result of rank 0 of Job {name} reached the {MAX_TERMINATION_MESSAGE}-byte limit of a "
                "termination message; keep it small (ids, URIs and final metrics; log the rest to MLflow)"
            )
        return message
    return None


def stop(runtime: KubernetesRuntime, operator: TrainModelOperator) -> None:
    """The task was killed while waiting in the worker: delete what it started."""
    engine = getattr(operator, "_k8s_engine", None)
    if isinstance(engine, KubernetesPodOperator):
        engine.on_kill()
    elif isinstance(engine, tuple) and engine[0] == "job":
        _, hook, namespace, name = engine
        _delete_job(hook, namespace, name, operator)
