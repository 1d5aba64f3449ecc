"""
:class:`KubernetesSettings`: everything a Kubernetes training is configured with, and its validation.

:class:`~airflow_mlops.training.kubernetes.runtime.KubernetesRuntime` is these settings plus the execution;
the manifests, the failure explanation, the pod and the Job read only the settings, so they never import the
runtime (imports go one way: runtime -> pod / job -> manifests -> settings -> config).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from airflow_mlops.trainer import contract
from airflow_mlops.training.kubernetes.config import (
    DNS_LABEL,
    Gpus,
    Resources,
    Scheduling,
    label_key_ok,
    label_value_ok,
    object_name_ok,
)
from airflow_mlops.utils.k8s import KubernetesConnection
from airflow_mlops.utils.templating import is_templated

#: Environment names the runtime sets for multi-node training; ``env``/``secret_env`` may not set them.
DISTRIBUTED_VARS = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "NNODES",
    "PET_MASTER_ADDR", "PET_MASTER_PORT", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE", "PET_STANDALONE",
)  # fmt: skip

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
#: Settings shown by ``repr`` when they differ from their defaults, in this order.
_SETTINGS = (
    "image", "resources", "gpus", "scheduling", "connection", "image_pull_policy", "image_pull_secrets",
    "secret_env", "env_from_secrets", "labels", "annotations", "model_label", "volumes", "volume_mounts",
    "num_nodes", "processes_per_node", "master_port", "deferrable", "poll_interval", "schedule_timeout",
    "startup_timeout", "max_preemptions", "termination_grace_period", "system_metrics", "job_ttl_seconds",
    "training_runtime", "training_runtime_kind", "queue_name", "queue_priority_class", "admission_timeout",
)  # fmt: skip

#: Kinds of Kubeflow Trainer runtime a TrainJob may reference.
TRAINING_RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")


def secret_ref(value: str | Sequence[str], env_name: str) -> tuple[str, str]:
    """``(secret, key)`` of a ``secret_env`` value (``"secret/key"`` or ``("secret", "key")``)."""
    if isinstance(value, str):
        name, sep, key = value.partition("/")
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, str) for v in value):
        (name, key), sep = value, "/"
    else:
        name, sep, key = "", "", ""
    if not sep or not name or not key:
        raise ValueError(
            f"secret_env[{env_name!r}] must name a Kubernetes Secret and key as 'secret-name/key' or "
            f"('secret-name', 'key'); got {value!r}"
        )
    return name, key


def _default_deferrable() -> bool:
    from airflow_mlops.version_compat import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


class KubernetesSettings:
    """
    The settings of a Kubernetes training, checked when given and again once templates are rendered.

    :class:`~airflow_mlops.training.kubernetes.runtime.KubernetesRuntime` documents each one.
    """

    template_fields: Sequence[str] = ("image", "namespace", "gpu_product", "labels", "annotations")

    def __init__(
        self,
        *,
        image: str,
        resources: Resources | None = None,
        gpus: Gpus | int = 0,
        scheduling: Scheduling | None = None,
        connection: KubernetesConnection | None = None,
        image_pull_policy: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        secret_env: Mapping[str, str | Sequence[str]] | None = None,
        env_from_secrets: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        model_label: str | None = None,
        volumes: Sequence[Mapping[str, Any]] = (),
        volume_mounts: Sequence[Mapping[str, Any]] = (),
        num_nodes: int = 1,
        processes_per_node: int | None = None,
        master_port: int = 29500,
        deferrable: bool | None = None,
        poll_interval: float = 10.0,
        schedule_timeout: int = 600,
        startup_timeout: int = 600,
        max_preemptions: int = 3,
        termination_grace_period: int = 60,
        system_metrics: bool = True,
        job_ttl_seconds: int = 3600,
        training_runtime: str | None = None,
        training_runtime_kind: str = "ClusterTrainingRuntime",
        queue_name: str | None = None,
        queue_priority_class: str | None = None,
        admission_timeout: int = 3600,
    ) -> None:
        self.image = image
        self.resources = resources if resources is not None else Resources()
        self.gpus = gpus if isinstance(gpus, Gpus) else Gpus(count=gpus)
        self.scheduling = scheduling if scheduling is not None else Scheduling()
        self.connection = connection if connection is not None else KubernetesConnection()
        self.image_pull_policy = image_pull_policy
        self.image_pull_secrets = list(image_pull_secrets)
        self.secret_env = dict(secret_env or {})
        self.env_from_secrets = list(env_from_secrets)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.model_label = model_label
        self.volumes = [dict(v) for v in volumes]
        self.volume_mounts = [dict(m) for m in volume_mounts]
        self.num_nodes = num_nodes
        self.processes_per_node = processes_per_node
        self.master_port = master_port
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.schedule_timeout = schedule_timeout
        self.startup_timeout = startup_timeout
        self.max_preemptions = max_preemptions
        self.termination_grace_period = termination_grace_period
        self.system_metrics = system_metrics
        self.job_ttl_seconds = job_ttl_seconds
        self.training_runtime = training_runtime
        self.training_runtime_kind = training_runtime_kind
        self.queue_name = queue_name
        self.queue_priority_class = queue_priority_class
        self.admission_timeout = admission_timeout
        self.validate(rendered=False)

    # -- configuration -------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        # Deterministic (DAG serialization stores it as the rendered value of the operator's ``runtime``).
        default = type(self)(image="x")
        shown = {
            k: getattr(self, k) for k in _SETTINGS if k == "image" or getattr(default, k) != getattr(self, k)
        }
        args = ", ".join(f"{key}={value!r}" for key, value in sorted(shown.items()))
        return f"{type(self).__name__}({args})"

    def __deepcopy__(self, memo: dict[int, Any]) -> KubernetesSettings:
        clone = object.__new__(type(self))
        for key, value in vars(self).items():
            if not key.startswith("_"):  # settings only, not the state of a running training
                setattr(clone, key, copy.deepcopy(value, memo))
        return clone

    @property
    def namespace(self) -> str | None:
        """Namespace of the pods: the connection's ``namespace`` (None: the cluster connection's). (templated)."""
        return self.connection.namespace

    @namespace.setter
    def namespace(self, value: str | None) -> None:
        self.connection = replace(self.connection, namespace=value)

    @property
    def gpu_product(self) -> str | None:
        """The GPUs' ``product`` (a node label value). (templated)."""
        return self.gpus.product

    @gpu_product.setter
    def gpu_product(self, value: str | None) -> None:
        self.gpus = replace(self.gpus, product=value)

    @property
    def mode(self) -> str:
        """How the training runs: ``"trainjob"`` (a Kubeflow Trainer TrainJob), ``"job"`` or ``"pod"``."""
        if self.training_runtime:
            return "trainjob"
        return "job" if self.num_nodes > 1 else "pod"

    @property
    def procs_per_node(self) -> int:
        """Training processes per pod."""
        return self.processes_per_node or max(self.gpus.count, 1)

    @property
    def uses_torchrun(self) -> bool:
        """Whether a module entrypoint is started with ``torchrun``."""
        return self.num_nodes > 1 or self.procs_per_node > 1

    def secret_refs(self) -> dict[str, tuple[str, str]]:
        """``secret_env`` as ``{ENV: (secret, key)}``."""
        return {name: secret_ref(value, name) for name, value in self.secret_env.items()}

    def validate(self, rendered: bool = True) -> None:
        """
        Check every setting; raise ValueError naming each bad one and what is allowed.

        :param rendered: Whether templates have been rendered; before that, templated values are not checked.
        """
        errors: list[str] = []

        def check(ok: bool, message: str) -> None:
            if not ok:
                errors.append(message)

        def unless_templated(value: Any, ok: bool, message: str) -> None:
            if rendered or not is_templated(value):
                check(ok, message)

        for name, part_type in (
            ("resources", Resources),
            ("gpus", Gpus),
            ("scheduling", Scheduling),
            ("connection", KubernetesConnection),
        ):
            value = getattr(self, name)
            if not isinstance(value, part_type):
                raise ValueError(
                    f"Invalid KubernetesRuntime: {name} must be a {part_type.__name__}, got {value!r}"
                )
        image = self.image
        unless_templated(
            image,
            isinstance(image, str) and bool(image.strip()) and not any(c.isspace() for c in image.strip()),
            f"image must be a container image reference like 'registry/trainer:1.0', got {image!r}",
        )
        errors += self.gpus.problems(rendered=rendered)
        for name in ("num_nodes", "master_port", "max_preemptions", "termination_grace_period"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"{name} must be an integer >= 0, got {value!r}",
            )
        check(
            isinstance(self.num_nodes, int) and self.num_nodes >= 1,
            f"num_nodes must be >= 1, got {self.num_nodes!r}",
        )
        check(
            self.processes_per_node is None
            or (isinstance(self.processes_per_node, int) and self.processes_per_node >= 1),
            f"processes_per_node must be an integer >= 1 or None, got {self.processes_per_node!r}",
        )
        check(
            isinstance(self.master_port, int) and 1 <= self.master_port <= 65535,
            f"master_port must be a port number, got {self.master_port!r}",
        )
        errors += self.resources.problems()
        errors += self.scheduling.problems(rendered=rendered)
        namespace = self.namespace
        if namespace is not None:
            unless_templated(
                namespace,
                isinstance(namespace, str) and len(namespace) <= 63 and bool(DNS_LABEL.match(namespace)),
                f"namespace must be a lower-case DNS label (e.g. 'ml-training') or None, got {namespace!r}",
            )
        check(
            self.image_pull_policy in (None, "Always", "IfNotPresent", "Never"),
            f"image_pull_policy must be 'Always', 'IfNotPresent', 'Never' or None, got {self.image_pull_policy!r}",
        )
        for secret in [*self.image_pull_secrets, *self.env_from_secrets]:
            check(object_name_ok(secret), f"Secret names must be lower-case DNS subdomains, got {secret!r}")
        for env_name, value in self.secret_env.items():
            check(
                bool(_ENV_NAME.match(str(env_name))),
                f"secret_env key {env_name!r} is not a valid variable name",
            )
            check(
                env_name not in contract.CONTRACT_VARS and env_name not in DISTRIBUTED_VARS,
                f"secret_env may not set {env_name}: the runtime sets it",
            )
            try:
                secret, key = secret_ref(value, env_name)
            except ValueError as err:
                errors.append(str(err))
                continue
            check(
                object_name_ok(secret) and bool(_SECRET_KEY.match(key)),
                f"secret_env[{env_name!r}] names Secret {secret!r} key {key!r}: the Secret name must be a "
                "lower-case DNS subdomain and the key may hold only letters, digits, '-', '_' and '.'",
            )
        for key, value in self.labels.items():
            check(label_key_ok(str(key)), f"labels key {key!r} is not a valid label key")
            unless_templated(
                value,
                label_value_ok(value),
                f"labels[{key!r}] = {value!r} is not a valid label value (63 characters at most: "
                "letters, digits, '-', '_', '.', starting and ending with a letter or digit)",
            )
        for key in self.annotations:
            check(label_key_ok(str(key)), f"annotations key {key!r} is not a valid annotation key")
        for volume in self.volumes:
            check(isinstance(volume.get("name"), str), f"volume {volume!r} needs a 'name'")
        for mount in self.volume_mounts:
            check(
                isinstance(mount.get("name"), str) and isinstance(mount.get("mountPath"), str),
                f"volume mount {mount!r} needs 'name' and 'mountPath'",
            )
        check(
            isinstance(self.poll_interval, int | float) and self.poll_interval > 0,
            f"poll_interval must be a positive number, got {self.poll_interval!r}",
        )
        for name in ("training_runtime", "queue_name", "queue_priority_class"):
            value = getattr(self, name)
            check(
                value is None or (object_name_ok(value) and label_value_ok(value)),
                f"{name} must name a Kubernetes object (a lower-case DNS label of at most 63 characters, e.g. "
                f"'torch-distributed', 'team-a-queue') or be None, got {value!r}",
            )
        check(
            self.training_runtime_kind in TRAINING_RUNTIME_KINDS,
            f"training_runtime_kind must be one of {', '.join(TRAINING_RUNTIME_KINDS)}, "
            f"got {self.training_runtime_kind!r}",
        )
        if self.training_runtime:
            check(
                not self.env_from_secrets,
                "env_from_secrets cannot be patched into a TrainJob's runtime container; name each variable "
                "in secret_env instead",
            )
            check(
                self.scheduling.priority_class is None,
                "scheduling.priority_class cannot be patched into a TrainJob's pods; set it in the training "
                "runtime, or give queue_priority_class for Kueue",
            )
        check(
            self.queue_priority_class is None or self.queue_name is not None,
            "queue_priority_class needs queue_name (it is a Kueue WorkloadPriorityClass)",
        )
        for name in ("schedule_timeout", "startup_timeout", "job_ttl_seconds", "admission_timeout"):
            value = getattr(self, name)
            check(
                isinstance(value, int) and value > 0,
                f"{name} must be a positive number of seconds, got {value!r}",
            )
        if errors:
            raise ValueError("Invalid KubernetesRuntime: " + "; ".join(errors))
