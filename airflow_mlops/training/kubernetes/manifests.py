"""
The Kubernetes objects of a training, as plain dicts (easy to check against the official schemas).

:func:`pod_manifest` is the pod ``KubernetesPodOperator`` receives; :func:`job_manifest` and
:func:`service_manifest` are the Indexed Job and headless Service of a multi-node training;
:func:`trainjob_manifest` is a Kubeflow Trainer ``TrainJob``. :func:`kueue_labels` are the labels that put each
of them on a Kueue queue. No Airflow and no kubernetes client here.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from airflow_mlops.trainer import contract
from airflow_mlops.trainer.lifecycle import SYSTEM_METRICS_ENV
from airflow_mlops.training.entrypoint import parse_entrypoint
from airflow_mlops.training.kubernetes.config import GPU_PRODUCT_LABEL
from airflow_mlops.utils.k8s import label_value

if TYPE_CHECKING:
    from airflow_mlops.training.kubernetes.settings import KubernetesSettings
    from airflow_mlops.training.spec import TrainingSpec

#: Name of the trainer container (``KubernetesPodOperator.BASE_CONTAINER_NAME``).
BASE_CONTAINER = "base"
#: Where a trainer in Kubernetes writes its result (KPO's XCom sidecar reads it from there).
RESULT_PATH = "/airflow/xcom/return.json"
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
#: Kueue: the LocalQueue a workload is submitted to, and its WorkloadPriorityClass.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
QUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
#: The scheduling gate Kueue's pod webhook puts on a queued pod and removes when it admits it.
KUEUE_GATE = "kueue.x-k8s.io/admission"
#: Kubeflow Trainer v2.
TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"
#: The replicated Job and container of a ``torch-distributed``-style runtime that run the trainer.
TRAINER_REPLICATED_JOB = "node"
TRAINER_CONTAINER = "node"
#: Label JobSet puts on every pod of a TrainJob's JobSet (named after the TrainJob).
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
#: Where the trainer of a TrainJob writes its result: the kubelet copies it into the pod status as the
#: container's termination message (the default ``terminationMessagePath``), which the runtime cannot patch.
TERMINATION_LOG = "/dev/termination-log"


def instance_key(spec: TrainingSpec) -> str:
    """A label value naming the task instance exactly (dag, run, task, map index), whatever its characters."""
    identity = json.dumps([spec.dag_id, spec.dag_run_id, spec.task_id, spec.map_index])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def object_labels(runtime: KubernetesSettings, spec: TrainingSpec) -> dict[str, str]:
    """Labels of every object of a training: the user's, then cost attribution and the instance key."""
    return {
        **{str(k): str(v) for k, v in runtime.labels.items()},
        DAG_LABEL: label_value(spec.dag_id),
        TASK_LABEL: label_value(spec.task_id),
        RUN_LABEL: label_value(spec.dag_run_id),
        MODEL_LABEL: label_value(runtime.model_label or spec.experiment_name),
        INSTANCE_LABEL: instance_key(spec),
    }


def kueue_labels(runtime: KubernetesSettings) -> dict[str, str]:
    """The labels that submit a workload to the runtime's Kueue ``queue_name`` (empty without one)."""
    if not runtime.queue_name:
        return {}
    labels = {QUEUE_LABEL: runtime.queue_name}
    if runtime.queue_priority_class:
        labels[QUEUE_PRIORITY_LABEL] = runtime.queue_priority_class
    return labels


def object_annotations(runtime: KubernetesSettings, spec: TrainingSpec) -> dict[str, str]:
    """Annotations: the user's, plus the unabridged Airflow ids and the MLflow run."""
    return {
        **{str(k): str(v) for k, v in runtime.annotations.items()},
        DAG_LABEL: spec.dag_id,
        TASK_LABEL: spec.task_id,
        RUN_LABEL: spec.dag_run_id,
        MLFLOW_RUN_ANNOTATION: spec.mlflow_run_id,
        EXPERIMENT_ANNOTATION: spec.experiment_name,
    }


def container_command(runtime: KubernetesSettings, spec: TrainingSpec) -> list[str]:
    """The trainer container's command: the image's ``python`` (or ``torchrun``) for a module entrypoint."""
    module, args = parse_entrypoint(spec.entrypoint)
    if module is None:
        return args
    if runtime.uses_torchrun:
        return ["torchrun", "--module", module, *args]  # torchrun reads its settings from PET_* variables
    return ["python", "-m", module, *args]


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def distributed_env(runtime: KubernetesSettings, master_addr: str | None) -> list[dict[str, Any]]:
    """Torchrun's settings (``PET_*``) and the plain rendezvous variables, for one pod or an Indexed Job."""
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


def missing_credentials(runtime: KubernetesSettings, spec: TrainingSpec) -> list[str]:
    """Credential variables the connections hold that no Secret reference of the runtime provides."""
    if runtime.env_from_secrets:
        return []  # they may come from those Secrets
    refs = runtime.secret_refs()
    return [name for name in spec.secret_names if name not in refs]


def trainer_env(
    runtime: KubernetesSettings,
    spec: TrainingSpec,
    *,
    master_addr: str | None = None,
    distributed: bool = True,
    result_path: str = RESULT_PATH,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """
    ``(env, envFrom)`` of the trainer container.

    Plain values: the non-secret connection settings, the operator's ``env``, the contract. Credentials only
    as references to the Secrets the runtime names.
    """
    plain: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if runtime.system_metrics:
        plain[SYSTEM_METRICS_ENV] = "true"
    plain.update(spec.connection_env)
    plain.update({str(k): str(v) for k, v in spec.env.items()})
    plain.update(spec.contract_env)
    plain[contract.RESULT_PATH] = result_path
    refs = runtime.secret_refs()
    env = [_env(name, value) for name, value in plain.items() if name not in refs]
    if distributed:
        env += distributed_env(runtime, master_addr)
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, (secret, key) in refs.items()
    ]
    env_from = [{"secretRef": {"name": name}} for name in runtime.env_from_secrets]
    return env, env_from


def pod_spec(
    runtime: KubernetesSettings,
    spec: TrainingSpec,
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
    env, env_from = trainer_env(runtime, spec, master_addr=master_addr, distributed=distributed)
    container: dict[str, Any] = {
        "name": BASE_CONTAINER,
        "image": runtime.image,
        "command": container_command(runtime, spec),
        "env": env,
    }
    if env_from:
        container["envFrom"] = env_from
    if runtime.image_pull_policy:
        container["imagePullPolicy"] = runtime.image_pull_policy
    if requirements := runtime.resources.requirements(runtime.gpus):
        container["resources"] = requirements
    mounts = [dict(m) for m in runtime.volume_mounts]
    volumes = [dict(v) for v in runtime.volumes]
    shm_size = runtime.resources.shm_size
    if shm_size:
        mounts.insert(0, {"name": SHM_VOLUME, "mountPath": "/dev/shm"})
        volumes.insert(0, {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
    if mounts:
        container["volumeMounts"] = mounts
    if runtime.num_nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": runtime.master_port}]
    if termination_message_result:
        # The kubelet copies this file into the pod status when the container ends: rank 0's result.
        container["terminationMessagePath"] = RESULT_PATH
        container["terminationMessagePolicy"] = "File"
    result: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "terminationGracePeriodSeconds": runtime.termination_grace_period,
    }
    if volumes:
        result["volumes"] = volumes
    scheduling, gpus = runtime.scheduling, runtime.gpus
    selector = dict(scheduling.node_selector)
    if gpus.product:
        selector[GPU_PRODUCT_LABEL] = gpus.product
    if selector:
        result["nodeSelector"] = selector
    tolerations = [dict(t) for t in scheduling.tolerations]
    if gpus.count and gpus.tolerate_taint:
        tolerations.insert(0, {"key": gpus.resource, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        result["tolerations"] = tolerations
    if scheduling.affinity:
        result["affinity"] = dict(scheduling.affinity)
    if scheduling.priority_class:
        result["priorityClassName"] = scheduling.priority_class
    if scheduling.service_account:
        result["serviceAccountName"] = scheduling.service_account
    if runtime.image_pull_secrets:
        result["imagePullSecrets"] = [{"name": name} for name in runtime.image_pull_secrets]
    if spec.timeout is not None:
        result["activeDeadlineSeconds"] = max(1, int(spec.timeout))
    if subdomain:
        result["subdomain"] = subdomain
    return result


def pod_manifest(runtime: KubernetesSettings, spec: TrainingSpec) -> dict[str, Any]:
    """The training pod as KubernetesPodOperator receives it (it adds the name, its labels and the sidecar)."""
    metadata: dict[str, Any] = {
        "labels": {**object_labels(runtime, spec), **kueue_labels(runtime)},
        "annotations": object_annotations(runtime, spec),
    }
    if runtime.namespace:
        metadata["namespace"] = runtime.namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec(runtime, spec)}


def job_manifest(
    runtime: KubernetesSettings, spec: TrainingSpec, *, name: str, namespace: str
) -> dict[str, Any]:
    """The Indexed Job of a multi-node training: one pod per node, reachable as ``<name>-<rank>.<name>``."""
    labels = object_labels(runtime, spec)
    annotations = object_annotations(runtime, spec)
    template_spec = pod_spec(
        runtime, spec, subdomain=name, master_addr=f"{name}-0.{name}", termination_message_result=True
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
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": template_spec},
    }
    if runtime.queue_name:
        job_spec["suspend"] = True  # Kueue admits the Job as a whole and then lets it start its pods
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, **kueue_labels(runtime)},
            "annotations": annotations,
        },
        "spec": job_spec,
    }


def service_manifest(
    runtime: KubernetesSettings,
    spec: TrainingSpec,
    *,
    name: str,
    namespace: str,
    job_uid: str | None = None,
) -> dict[str, Any]:
    """The headless Service giving each pod of the Job a DNS name; owned by the Job, so deleted with it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": object_labels(runtime, spec)}
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
    runtime: KubernetesSettings, spec: TrainingSpec, *, name: str, namespace: str
) -> dict[str, Any]:
    """
    The training as a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``).

    It references the runtime's ``training_runtime`` (a ``torch-distributed``-style (Cluster)TrainingRuntime
    with a replicated Job and a container named ``node``), which starts ``torchrun`` on every node and sets
    the rendezvous itself: no ``PET_*`` variables are given. Image, command, node count, processes, resources
    and environment go in ``trainer``; scheduling, secrets, volumes, labels and annotations of the pods in a
    runtime patch. With a ``queue_name`` it is created suspended, for Kueue to admit as a whole.
    """
    pod = pod_spec(runtime, spec, distributed=False)
    container = pod["containers"][0]
    env, _ = trainer_env(
        runtime, spec, distributed=False, result_path=TERMINATION_LOG
    )  # no envFrom: settings
    trainer: dict[str, Any] = {
        "image": runtime.image,
        "command": container["command"],
        "numNodes": runtime.num_nodes,
        "numProcPerNode": runtime.procs_per_node,
        "env": env,
    }
    if "resources" in container:
        trainer["resourcesPerNode"] = container["resources"]
    pod_patch: dict[str, Any] = {
        key: pod[key]
        for key in ("nodeSelector", "tolerations", "affinity", "serviceAccountName", "imagePullSecrets",
                    "volumes", "terminationGracePeriodSeconds")
        if key in pod
    }  # fmt: skip
    if container.get("volumeMounts"):
        pod_patch["containers"] = [{"name": TRAINER_CONTAINER, "volumeMounts": container["volumeMounts"]}]
    labels = object_labels(runtime, spec)
    annotations = object_annotations(runtime, spec)
    train_spec: dict[str, Any] = {
        "runtimeRef": {
            "apiGroup": TRAINER_GROUP,
            "kind": runtime.training_runtime_kind,
            "name": runtime.training_runtime,
        },
        "trainer": trainer,
        "runtimePatches": [
            {
                "manager": "airflow-mlops",
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": TRAINER_REPLICATED_JOB,
                                    "template": {
                                        "spec": {
                                            "template": {
                                                "metadata": {"labels": labels, "annotations": annotations},
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
    }
    if spec.timeout is not None:
        train_spec["activeDeadlineSeconds"] = max(
            1, int(spec.timeout)
        )  # counted from the start, not queueing
    if runtime.queue_name:
        train_spec["suspend"] = True
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, **kueue_labels(runtime)},
            "annotations": annotations,
        },
        "spec": train_spec,
    }
